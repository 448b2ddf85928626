"""Who may do what, and how much: checks made before and inside the actor."""

from __future__ import annotations

import trio
import trio.testing

from presencex.events.presence import PresencePackage
from presencex.events.registry import Registry
from presencex.events.winfo import WatcherInfoPackage
from presencex.presence.actor import ActorEnv
from presencex.presence.state import StateConfig
from presencex.router import RequestPolicy, Router
from presencex.sip.message import Request
from presencex.transport.peer import Peer
from tests.presence.test_actor import FakeClock, FakeSender, FakeStore, settle
from tests.sipmsg import pidf, request

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
PROXY = Peer("udp", "10.0.0.1", 5060, "udp:127.0.0.1:5060")
DIRECT = Peer("udp", "127.0.0.1", 5070, "udp:127.0.0.1:5060")


def make_router(**policy: object) -> tuple[Router, FakeSender]:
    sender = FakeSender()
    env = ActorEnv(sender, FakeStore(), FakeClock(), notify_answered=lambda *a: None)
    config = StateConfig(
        registry=Registry([PresencePackage(), WatcherInfoPackage()]),
        force_active=True,
        max_subscriptions=2,
        max_publications=1,
    )
    router = Router(
        config,
        env,
        inbox_size=16,
        retry_after=9,
        policy=RequestPolicy(**policy),  # type: ignore[arg-type]
    )
    return router, sender


def publish(
    from_uri: str, *, extra: list[tuple[str, str]] | None = None, body: bytes | None = None
) -> Request:
    return request(
        "PUBLISH",
        ALICE,
        from_uri=from_uri,
        to_uri=ALICE,
        body=pidf(ALICE, "t") if body is None else body,
        content_type="application/pidf+xml",
        expires=600,
        extra=extra or [],
    )


async def statuses_of(
    router: Router, sender: FakeSender, *calls: tuple[Request, Peer]
) -> list[int]:
    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        for req, peer in calls:
            router.on_request(req, peer)
            await settle()
        nursery.cancel_scope.cancel()
    return [r.status for r in sender.responses]


async def test_only_the_presentity_publishes(autojump_clock: trio.testing.MockClock) -> None:
    router, sender = make_router()
    statuses = await statuses_of(router, sender, (publish(BOB), DIRECT), (publish(ALICE), DIRECT))
    assert statuses == [403, 200]
    assert "only the presentity" in sender.responses[0].reason


async def test_asserted_identity_counts_only_from_trusted_proxies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    router, sender = make_router(trusted_proxies=frozenset({"10.0.0.1"}))
    pai = [("P-Asserted-Identity", f"<{ALICE}>")]
    statuses = await statuses_of(
        router,
        sender,
        (publish("sip:gw@example.com", extra=pai), DIRECT),  # untrusted: From counts
        (publish("sip:gw@example.com", extra=pai), PROXY),  # trusted: PAI counts
    )
    assert statuses == [403, 200]


async def test_domains_not_served_are_404(autojump_clock: trio.testing.MockClock) -> None:
    router, sender = make_router(domains=frozenset({"other.org"}))
    statuses = await statuses_of(router, sender, (publish(ALICE), DIRECT))
    assert statuses == [404]


async def test_body_too_large_is_413(autojump_clock: trio.testing.MockClock) -> None:
    router, sender = make_router(max_body_size=100)
    statuses = await statuses_of(router, sender, (publish(ALICE), DIRECT))
    assert statuses == [413]


async def test_caps_per_presentity(autojump_clock: trio.testing.MockClock) -> None:
    router, sender = make_router()
    subs = [
        (request("SUBSCRIBE", ALICE, from_uri=BOB, to_uri=ALICE, expires=600), DIRECT)
        for _ in range(3)
    ]
    statuses = await statuses_of(
        router, sender, *subs, (publish(ALICE), DIRECT), (publish(ALICE), DIRECT)
    )
    assert statuses == [200, 200, 403, 200, 403]


async def test_in_flight_limit_sheds_with_503(autojump_clock: trio.testing.MockClock) -> None:
    router, sender = make_router(max_in_flight=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        # No checkpoint between them: none is handled before the third arrives.
        for user in ("a", "b", "c"):
            uri = f"sip:{user}@example.com"
            router.on_request(
                request("SUBSCRIBE", uri, from_uri=BOB, to_uri=uri, expires=600), DIRECT
            )
        await settle()
        assert sorted(r.status for r in sender.responses) == [200, 200, 503]
        assert router.in_flight == 0
        nursery.cancel_scope.cancel()


async def test_winfo_of_asserted_presentity_is_allowed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    router, sender = make_router(trusted_proxies=frozenset({"10.0.0.1"}))
    req = request(
        "SUBSCRIBE",
        ALICE,
        from_uri="sip:anonymous@anonymous.invalid",
        to_uri=ALICE,
        event="presence.winfo",
        expires=600,
        extra=[("P-Asserted-Identity", f"<{ALICE}>")],
    )
    statuses = await statuses_of(router, sender, (req, PROXY))
    assert statuses == [200]
