"""The root nursery: the only place that wires the tasks together.

Start order matters: the store first (schema), then saved state is loaded
into actors, then the listeners open, so no request meets an empty server
that is still loading.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from functools import partial
from typing import Protocol, runtime_checkable

import trio

from presencex.config import Config
from presencex.control.server import ControlServer
from presencex.events.base import EventPackage
from presencex.events.dialog import DialogPackage
from presencex.events.presence import PresencePackage
from presencex.events.registry import Registry
from presencex.events.winfo import WatcherInfoPackage
from presencex.metrics import serve_metrics
from presencex.presence.actor import ActorEnv, DocumentSource, NoDocuments
from presencex.presence.state import PresentityState, StateConfig
from presencex.router import RequestPolicy, Router
from presencex.store.load import load_publications, load_state
from presencex.store.records import Publication, Subscription
from presencex.store.writer import PurgeExpired, StoreError, StoreOp, StoreWriter
from presencex.transport.hub import Hub
from presencex.transport.tcp import serve_tcp
from presencex.transport.udp import serve_udp
from presencex.xcap.fetcher import fetcher_from_config
from presencex.xcap.table import table_from_config

log = logging.getLogger(__name__)


class WallClock:
    """Wall-clock epoch seconds read off trio's clock, so a MockClock moves
    expiry times too; ``to_trio`` maps a deadline back for ``move_on_at``."""

    def __init__(self) -> None:
        self.offset = time.time() - trio.current_time()

    def now(self) -> float:
        return trio.current_time() + self.offset

    def to_trio(self, when: float) -> float:
        return when - self.offset


@runtime_checkable
class SourceStatistics(Protocol):
    def statistics(self) -> dict[str, int | float]: ...


class StoreAdapter:
    """The actors' view of the store: ``commit`` waits, ``submit_nowait``
    hands bookkeeping writes to a task so the actor never waits for them."""

    def __init__(self, writer: StoreWriter, nursery: trio.Nursery) -> None:
        self.writer = writer
        self.nursery = nursery

    async def commit(self, ops: tuple[StoreOp, ...]) -> None:
        await self.writer.commit(ops)

    def submit_nowait(self, ops: tuple[StoreOp, ...]) -> None:
        self.nursery.start_soon(self._commit_quietly, ops)

    async def _commit_quietly(self, ops: tuple[StoreOp, ...]) -> None:
        try:
            await self.writer.commit(ops)
        except StoreError as exc:
            log.error("background store write failed: %s", exc)


def build_registry(config: Config) -> Registry:
    """The events presence_xml "constructs and adds": presence, presence.winfo,
    dialog;sla (with dialog;ma), plus dialog for busy-lamp fields."""
    packages: list[EventPackage] = []
    if not config.disable_presence:
        packages.append(PresencePackage(force_dummy_presence=config.force_dummy_presence))
    if not config.disable_winfo:
        packages.append(WatcherInfoPackage())
    if not config.disable_bla:
        packages += [DialogPackage(name="dialog;sla"), DialogPackage(name="dialog;ma")]
    if not config.disable_dialog:
        packages.append(DialogPackage(name="dialog"))
    return Registry(packages)


@dataclass(slots=True)
class Server:
    config: Config
    listening: list[str]
    router: Router
    hub: Hub
    writer: StoreWriter
    clock: WallClock
    documents: DocumentSource

    def statistics(self) -> dict[str, object]:
        """What ``presencex ctl stats`` prints: plain data, read at one instant."""
        subscriptions: Counter[str] = Counter()
        publications: Counter[str] = Counter()
        # Reading sizes only: the actors own their state, this is a snapshot
        # taken between two of their steps (one trio thread).
        for state in self.router.states.values():
            for watch in state.watches.values():
                subscriptions[f"{watch.record.event}:{watch.record.status}"] += 1
            for event, pubs in state.publications.items():
                publications[event] += len(pubs)
        documents = self.documents
        return {
            "documents": documents.statistics() if isinstance(documents, SourceStatistics) else {},
            "transport": asdict(self.hub.statistics()),
            "router": asdict(self.router.statistics()),
            "store": asdict(self.writer.statistics()),
            "subscriptions": dict(subscriptions),
            "publications": dict(publications),
        }


def state_config_from(config: Config, registry: Registry) -> StateConfig:
    """What every presentity actor needs to know of the configuration."""
    return StateConfig(
        registry=registry,
        force_active=config.force_active,
        min_expires=config.min_expires,
        max_expires=config.max_expires,
        default_expires=config.default_expires,
        server_header=config.server_header,
        xcapauth_userdel_reason=config.xcapauth_userdel_reason,
        enable_sphere_check=config.enable_sphere_check,
        pidf_manipulation=config.pidf_manipulation,
        max_subscriptions=config.max_subscriptions_per_presentity,
        max_publications=config.max_publications_per_presentity,
    )


def policy_from(config: Config) -> RequestPolicy:
    """The checks the router makes before a request reaches an actor."""
    return RequestPolicy(
        max_body_size=config.max_body_size,
        trusted_proxies=frozenset(config.trusted_proxies),
        domains=frozenset(config.domains),
        max_in_flight=config.max_in_flight,
    )


async def serve(
    config: Config, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
) -> None:
    registry = build_registry(config)
    clock = WallClock()
    writer = StoreWriter(
        config.db_path,
        synchronous=config.db_synchronous.upper(),
        gather=config.db_group_commit,
        busy_timeout=config.db_busy_timeout,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.serve)
        hub = Hub(
            t1=config.t1,
            t2=config.t2,
            max_message_size=config.max_message_size,
            max_headers=config.max_headers,
        )
        hub.server_header = config.server_header
        await nursery.start(hub.serve_timers)
        env = ActorEnv(
            sender=hub,
            store=StoreAdapter(writer, nursery),
            clock=clock,
            notify_answered=lambda uri, effect, status: None,
        )
        state_config = state_config_from(config, registry)
        policy = policy_from(config)
        router = Router(
            state_config,
            env,
            inbox_size=config.inbox_size,
            retry_after=config.retry_after,
            policy=policy,
        )
        await nursery.start(router.serve)
        env.documents = await _start_documents(config, router, nursery)
        env.reload = partial(_reload, config.db_path, clock)
        hub.on_request = router.on_request
        listening: list[str] = []
        for address in config.listen:
            serve_fn = serve_udp if address.transport == "udp" else serve_tcp
            listening.append(await nursery.start(serve_fn, hub, address.host, address.port))
        await _resume(config, router, state_config, clock)
        server = Server(config, listening, router, hub, writer, clock, env.documents)
        control = ControlServer(
            config.control_socket,
            deliver=router.deliver_nowait,
            presentities=lambda: list(router.inboxes),
            stats=server.statistics,
            cleanup=lambda: _cleanup(writer, clock),
        )
        await nursery.start(control.serve)
        if config.metrics_listen:
            host, _, port = config.metrics_listen.rpartition(":")
            await nursery.start(serve_metrics, host.strip("[]"), int(port), server.statistics)
        task_status.started(server)


async def _start_documents(config: Config, router: Router, nursery: trio.Nursery) -> DocumentSource:
    """Where pres-rules and pidf-manipulation documents come from: the xcap
    table (integrated_xcap_server = 1) or the XCAP fetcher task."""
    if config.force_active and not config.pidf_manipulation:
        return NoDocuments()
    if config.integrated_xcap_server:
        table = table_from_config(config, router.deliver_nowait)
        await nursery.start(table.serve)
        return table
    fetcher = fetcher_from_config(config, router.deliver_nowait)
    await nursery.start(fetcher.serve)
    return fetcher


async def _reload(path: str, clock: WallClock, uri: str, event: str) -> tuple[Publication, ...]:
    return await trio.to_thread.run_sync(load_publications, path, uri, event, clock.now())


async def _cleanup(writer: StoreWriter, clock: WallClock) -> object:
    await writer.commit((PurgeExpired(clock.now()),))
    return "expired rows removed"


async def _resume(
    config: Config, router: Router, state_config: StateConfig, clock: WallClock
) -> None:
    """Reinstall saved state: each presentity's actor starts with it and
    NOTIFYs its watchers of the current state."""
    loaded = await trio.to_thread.run_sync(load_state, config.db_path, clock.now())
    pubs: defaultdict[str, list[Publication]] = defaultdict(list)
    subs: defaultdict[str, list[Subscription]] = defaultdict(list)
    for pub in loaded.publications:
        if state_config.registry.get(pub.event) is not None:
            pubs[pub.presentity].append(pub)
    for sub in loaded.subscriptions:
        if state_config.registry.get(sub.event) is not None:
            subs[sub.presentity].append(sub)
    now = clock.now()
    for uri in pubs.keys() | subs.keys():
        state = PresentityState(uri, state_config)
        initial = state.load(pubs[uri], subs[uri], now)
        router.start_actor(state, initial)
    log.info(
        "resumed %d publications and %d subscriptions of %d presentities",
        len(loaded.publications),
        len(loaded.subscriptions),
        len(pubs.keys() | subs.keys()),
    )
