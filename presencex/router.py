"""Requests to presentity actors: classify, route, start actors, shed load.

Facts:
- One actor per presentity URI with state; the router holds the only map
  from URI to inbox.  A send that finds no actor starts one.
- The router never awaits an actor: ``send_nowait`` on a bounded inbox, and
  ``trio.WouldBlock`` means ``503`` with ``Retry-After`` (DESIGN: a full inbox
  is an answer, not a stalled socket).
- NOTIFY answers are the exception: they bypass the inbox bound, because a
  dropped answer would leave its subscription marked in flight for good.
  An answer for a presentity without an actor is dropped: it has no
  subscription left to wait for it.
- In-dialog requests reach the actor through the Request-URI, which is our
  Contact and carries the presentity (see ``state.local_contact``); a client
  that sends them elsewhere is routed by its To URI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import unquote

import trio

from presencex.events.registry import Registry
from presencex.presence.actor import ActorEnv, run_actor
from presencex.presence.inbox import Inbox
from presencex.presence.messages import (
    Effect,
    Message,
    NotifyAnswered,
    Publish,
    SendNotify,
    Subscribe,
)
from presencex.presence.state import PresentityState, StateConfig
from presencex.sip.build import make_response
from presencex.sip.errors import SipError
from presencex.sip.message import Request
from presencex.sip.uri import parse_name_addr, parse_uri
from presencex.transport.peer import Peer

log = logging.getLogger(__name__)

ALLOW = "SUBSCRIBE, PUBLISH, OPTIONS"


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    """Who may ask what, and how much, checked before a request reaches an actor."""

    max_body_size: int = 65535
    trusted_proxies: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()  # empty: every domain is served
    max_in_flight: int = 2000


@dataclass(slots=True)
class RouterStatistics:
    actors: int
    actors_started: int
    inbox_high_water: int
    rejected_503: int
    errors_500: int
    in_flight: int


class Router:
    def __init__(
        self,
        config: StateConfig,
        env: ActorEnv,
        *,
        inbox_size: int,
        retry_after: int,
        policy: RequestPolicy | None = None,
    ) -> None:
        self.config = config
        self.env = env
        self.inbox_size = inbox_size
        self.retry_after = retry_after
        self.policy = policy or RequestPolicy()
        # Requests handed to actors and not yet handled (RequestPolicy.max_in_flight).
        self.in_flight = 0
        self.registry: Registry = config.registry
        self.inboxes: dict[str, Inbox[Message]] = {}
        # Read-only view for statistics; each state is owned by its actor.
        self.states: dict[str, PresentityState] = {}
        self._nursery: trio.Nursery | None = None
        self.actors_started = 0
        self.inbox_high_water = 0
        self.rejected_503 = 0
        self.errors_500 = 0
        env.notify_answered = self._notify_answered
        env.on_error = self._count_error
        env.request_done = self._request_done

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- delivery -------------------------------------------------------------

    def deliver_nowait(self, uri: str, msg: Message) -> None:
        """Raise trio.WouldBlock when the actor's inbox is full."""
        inbox = self.inboxes.get(uri)
        if inbox is None:
            inbox = self.start_actor(PresentityState(uri, self.config))
        inbox.send_nowait(msg)
        self._note_queued(inbox)

    def _note_queued(self, inbox: Inbox[Message]) -> None:
        queued = len(inbox)
        if queued > self.inbox_high_water:
            self.inbox_high_water = queued

    def start_actor(
        self, state: PresentityState, initial: list[Effect] | None = None
    ) -> Inbox[Message]:
        assert self._nursery is not None, "Router.serve must be started first"
        inbox = Inbox[Message](self.inbox_size)
        self.inboxes[state.uri] = inbox
        self.states[state.uri] = state
        self.actors_started += 1
        self._nursery.start_soon(self._run, state, inbox, initial)
        return inbox

    async def _run(
        self,
        state: PresentityState,
        inbox: Inbox[Message],
        initial: list[Effect] | None,
    ) -> None:
        try:
            await run_actor(state, inbox, self.env, self._idle, initial)
        finally:
            if self.inboxes.get(state.uri) is not None and state.empty():
                self._idle(state.uri)

    def _idle(self, uri: str) -> bool:
        """Unregister an actor that holds nothing, unless messages wait for it."""
        inbox = self.inboxes.get(uri)
        if inbox is None:
            return True
        if len(inbox):
            return False
        del self.inboxes[uri]
        self.states.pop(uri, None)
        return True

    def _notify_answered(self, uri: str, effect: SendNotify, status: int) -> None:
        inbox = self.inboxes.get(uri)
        if inbox is None:
            # The actor ended because its presentity holds nothing, so no
            # subscription waits for this answer; starting a fresh, empty
            # actor (as deliver_nowait would) only to ignore it is waste.
            log.debug("NOTIFY answer %d for %s: no actor, dropped", status, uri)
            return
        # Forced past the bound: a dropped answer would leave the subscription
        # marked in flight forever (later changes only mark it dirty), so the
        # watcher would get nothing more.  Bounded all the same: a subscription
        # has at most one NOTIFY in flight (plus its final one), each answered
        # once.
        inbox.send_nowait(NotifyAnswered(effect.key, effect.cseq, status), force=True)
        self._note_queued(inbox)

    def _count_error(self) -> None:
        self.errors_500 += 1

    def _request_done(self) -> None:
        self.in_flight -= 1

    def statistics(self) -> RouterStatistics:
        return RouterStatistics(
            len(self.inboxes),
            self.actors_started,
            self.inbox_high_water,
            self.rejected_503,
            self.errors_500,
            self.in_flight,
        )

    # -- requests from the transport -------------------------------------

    def on_request(self, request: Request, peer: Peer) -> None:
        """Classify and route one new request; answer errors at once."""
        try:
            self._route(request, peer)
        except SipError as exc:
            self._respond(request, peer, exc.status, exc.reason, exc.headers)

    def _respond(
        self,
        request: Request,
        peer: Peer,
        status: int,
        reason: str,
        headers: tuple[tuple[str, str], ...],
    ) -> None:
        response = make_response(request, status, reason, headers=headers)
        self.env.sender.send_response(request, response, peer)

    def _route(self, request: Request, peer: Peer) -> None:
        method = request.method
        if method == "ACK":
            return
        if method == "OPTIONS":
            self._respond(request, peer, 200, "OK", (("Allow", ALLOW), *self._allow_events()))
            return
        if method not in ("SUBSCRIBE", "PUBLISH"):
            raise SipError(405, "Method Not Allowed", (("Allow", ALLOW),))
        event = request.event
        if event is None:
            raise SipError(489, "Bad Event: missing Event header", self._allow_events())
        package = self.registry.lookup(event)
        if package is None:
            raise SipError(489, "Bad Event", self._allow_events())
        # The package's own name: one string object shared by every record.
        name = package.name
        policy = self.policy
        if len(request.body) > policy.max_body_size:
            raise SipError(413, "Request Entity Too Large")
        uri = self._presentity(request)
        identity = self._identity(request, peer)
        msg: Message
        if method == "SUBSCRIBE":
            msg = Subscribe(request, peer, name, identity)
        else:
            # Only the presentity publishes its own state (RFC 3903 §6 leaves
            # authorization to the ESC; a trusted proxy asserts who is sending).
            if identity != uri:
                raise SipError(403, "Forbidden: only the presentity may publish its state")
            msg = Publish(request, peer, name, identity)
        if self.in_flight >= policy.max_in_flight:
            self.rejected_503 += 1
            raise SipError(503, "Service Unavailable: overloaded", self._retry_after())
        try:
            self.deliver_nowait(uri, msg)
        except trio.WouldBlock:
            self.rejected_503 += 1
            raise SipError(503, "Service Unavailable", self._retry_after()) from None
        self.in_flight += 1

    def _retry_after(self) -> tuple[tuple[str, str], ...]:
        return (("Retry-After", str(self.retry_after)),)

    def _identity(self, request: Request, peer: Peer) -> str:
        """The sender's AOR: P-Asserted-Identity from a trusted proxy (RFC 3325
        §9.1), else the From header, which is all a direct client offers."""
        if peer.host in self.policy.trusted_proxies:
            for value in request.headers.get_all("P-Asserted-Identity"):
                asserted = parse_name_addr(value, "P-Asserted-Identity").uri
                if asserted.startswith(("sip:", "sips:")):
                    return parse_uri(asserted).aor
        return parse_uri(request.from_.uri, "From URI").aor

    def _allow_events(self) -> tuple[tuple[str, str], ...]:
        return (("Allow-Events", self.registry.allow_events),)

    def _presentity(self, request: Request) -> str:
        ruri = request.ruri
        if request.to.tag is not None and ruri.user and ruri.user.startswith("sip"):
            # Our own Contact: the user part is the escaped presentity AOR.
            target = unquote(ruri.user)
            if target.startswith(("sip:", "sips:")):
                return parse_uri(target).aor
        if request.to.tag is not None:
            return parse_uri(request.to.uri).aor
        if not ruri.user:
            raise SipError(404, "Not Found: no user in Request-URI")
        domains = self.policy.domains
        if domains and ruri.host.lower() not in domains:
            # RFC 3261 §8.2.2.1: a Request-URI we do not accept is 404.
            raise SipError(404, "Not Found: domain not served here")
        return ruri.aor
