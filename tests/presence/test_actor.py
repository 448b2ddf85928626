"""Actors and the router under trio, with a mock clock and fake edges."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from presencex.events.presence import PresencePackage
from presencex.events.registry import Registry
from presencex.presence.actor import ActorEnv
from presencex.presence.messages import SendNotify
from presencex.presence.state import StateConfig
from presencex.router import Router
from presencex.sip.message import Request, Response
from presencex.store.writer import StoreError, StoreOp
from presencex.transport.peer import Peer
from tests.sipmsg import pidf, request

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
PEER = Peer("udp", "127.0.0.1", 5070, "udp:127.0.0.1:5060")


class FakeSender:
    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.notifies: list[tuple[SendNotify, Callable[[int], None]]] = []

    def send_response(self, request: Request, response: Response, peer: Peer) -> None:
        self.responses.append(response)

    def send_notify(self, effect: SendNotify, on_final: Callable[[int], None]) -> None:
        self.notifies.append((effect, on_final))


class FakeStore:
    def __init__(self) -> None:
        self.committed: list[StoreOp] = []

    async def commit(self, ops: tuple[StoreOp, ...]) -> None:
        await trio.sleep(0.001)  # a commit takes time; actors must wait for it
        self.committed.extend(ops)

    def submit_nowait(self, ops: tuple[StoreOp, ...]) -> None:
        self.committed.extend(ops)


class FakeClock:
    def now(self) -> float:
        return trio.current_time()

    def to_trio(self, when: float) -> float:
        return when


async def settle() -> None:
    """Let actors run, commits included (virtual time: costs nothing)."""
    await trio.sleep(0.1)


def make_router(inbox_size: int = 16) -> tuple[Router, FakeSender, FakeStore]:
    sender, store = FakeSender(), FakeStore()
    env = ActorEnv(sender, store, FakeClock(), notify_answered=lambda *a: None)
    config = StateConfig(registry=Registry([PresencePackage()]), force_active=True)
    return Router(config, env, inbox_size=inbox_size, retry_after=7), sender, store


def subscribe_request(expires: int = 600) -> Request:
    return request("SUBSCRIBE", ALICE, from_uri=BOB, to_uri=ALICE, expires=expires)


async def test_subscription_expires_on_the_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    router, sender, _ = make_router()
    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        router.on_request(subscribe_request(3600), PEER)
        await settle()
        assert [r.status for r in sender.responses] == [200]
        _effect, answer = sender.notifies[0]
        answer(200)
        assert ALICE in router.inboxes
        await trio.sleep(3599)
        assert len(sender.notifies) == 1
        await trio.sleep(2)
        assert len(sender.notifies) == 2
        final = sender.notifies[1][0].request
        assert final.headers.get("Subscription-State") == "terminated;reason=timeout"
        # The actor holds nothing now and has ended.
        await settle()
        assert ALICE not in router.inboxes
        nursery.cancel_scope.cancel()


async def test_full_inbox_answers_503_with_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    router, sender, _ = make_router(inbox_size=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        # No checkpoint between the sends: the actor cannot drain its inbox.
        for _ in range(5):
            router.on_request(subscribe_request(), PEER)
        rejected = [r for r in sender.responses if r.status == 503]
        assert len(rejected) >= 2
        assert rejected[0].headers.get("Retry-After") == "7"
        await settle()
        assert sum(r.status == 200 for r in sender.responses) == 5 - len(rejected)
        nursery.cancel_scope.cancel()


async def test_exception_in_handler_answers_500_and_actor_goes_on(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    router, sender, _ = make_router()
    calls = {"n": 0}
    original = PresencePackage.render

    def flaky(self: PresencePackage, *args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(PresencePackage, "render", flaky)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        router.on_request(subscribe_request(), PEER)
        await settle()
        router.on_request(subscribe_request(), PEER)
        await settle()
        statuses = [r.status for r in sender.responses]
        assert statuses == [500, 200]
        assert router.statistics().errors_500 == 1
        nursery.cancel_scope.cancel()


async def test_publish_commits_before_reply(autojump_clock: trio.testing.MockClock) -> None:
    router, sender, store = make_router()
    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        req = request(
            "PUBLISH",
            ALICE,
            from_uri=ALICE,
            to_uri=ALICE,
            expires=60,
            body=pidf(ALICE, "t"),
            content_type="application/pidf+xml",
        )
        router.on_request(req, PEER)
        await settle()
        assert len(store.committed) == 1
        assert [r.status for r in sender.responses] == [200]
        # The publication expires after 60 s and is dropped from the store.
        await trio.sleep(61)
        assert len(store.committed) == 2
        nursery.cancel_scope.cancel()


def publish_request(tuple_id: str) -> Request:
    return request(
        "PUBLISH",
        ALICE,
        from_uri=ALICE,
        to_uri=ALICE,
        expires=60,
        body=pidf(ALICE, tuple_id),
        content_type="application/pidf+xml",
    )


async def test_notify_answer_reaches_a_full_inbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A NOTIFY answer arriving while the inbox is full still clears the
    subscription's in-flight mark: the pending change goes out, and later
    changes keep going out."""
    router, sender, _ = make_router(inbox_size=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        router.on_request(subscribe_request(), PEER)
        await settle()
        assert len(sender.notifies) == 1
        # Fill the inbox while the first NOTIFY is unanswered; no checkpoint,
        # so the actor cannot drain it.
        router.on_request(publish_request("t1"), PEER)
        router.on_request(publish_request("t2"), PEER)
        router.on_request(publish_request("t3"), PEER)
        assert sender.responses[-1].status == 503  # the inbox is full
        _effect, answer = sender.notifies[0]
        answer(200)
        await settle()
        assert [r.status for r in sender.responses] == [200, 503, 200, 200]
        # The publications changed the state while the NOTIFY was in flight;
        # its answer sends the current state.
        assert len(sender.notifies) == 2
        sender.notifies[1][1](200)
        router.on_request(publish_request("t4"), PEER)
        await settle()
        assert len(sender.notifies) == 3
        nursery.cancel_scope.cancel()


class FailingStore(FakeStore):
    """Fails the next ``fail`` commits."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = 0

    async def commit(self, ops: tuple[StoreOp, ...]) -> None:
        if self.fail:
            await trio.sleep(0.001)
            self.fail -= 1
            raise StoreError("disk full")
        await super().commit(ops)


async def test_unsent_notify_after_failed_commit_with_full_inbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A NOTIFY not sent because its commit failed is answered inside the
    actor, so a full inbox cannot leave the subscription stuck in flight."""
    sender, store = FakeSender(), FailingStore()
    env = ActorEnv(sender, store, FakeClock(), notify_answered=lambda *a: None)
    config = StateConfig(registry=Registry([PresencePackage()]), force_active=True)
    router = Router(config, env, inbox_size=2, retry_after=7)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        router.on_request(subscribe_request(), PEER)
        await settle()
        sender.notifies[0][1](200)
        store.fail = 1
        router.on_request(publish_request("t1"), PEER)
        # The actor now waits for the failing commit; fill its inbox meanwhile.
        await trio.sleep(0.0005)
        router.on_request(publish_request("t2"), PEER)
        router.on_request(publish_request("t3"), PEER)
        router.on_request(publish_request("t4"), PEER)
        await settle()
        assert [r.status for r in sender.responses] == [200, 503, 500, 200, 200]
        # The failed PUBLISH's NOTIFY never went out; the next one did.
        assert len(sender.notifies) == 2
        nursery.cancel_scope.cancel()
