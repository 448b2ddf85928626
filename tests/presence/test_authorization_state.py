"""force_active = 0: pres-rules decide each watcher's state, and changes move it."""

from __future__ import annotations

from presencex.bodies.pidf import tuple_statuses
from presencex.bodies.watcherinfo import parse_watcherinfo
from presencex.events.presence import PresencePackage
from presencex.events.registry import Registry
from presencex.events.winfo import WatcherInfoPackage
from presencex.presence.messages import (
    Expire,
    FetchDocument,
    NotifyAnswered,
    Publish,
    Refresh,
    Reply,
    RulesChanged,
    SendNotify,
    Subscribe,
)
from presencex.presence.state import PresentityState, StateConfig
from presencex.transport.peer import Peer
from tests.presence.rules_docs import rule, ruleset
from tests.sipmsg import pidf, request

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
PEER = Peer("udp", "127.0.0.1", 5070, "udp:127.0.0.1:5060")
T0 = 1_700_000_000.0


def make_state(reason: str = "probation") -> PresentityState:
    config = StateConfig(
        registry=Registry([PresencePackage(), WatcherInfoPackage()]),
        force_active=False,
        xcapauth_userdel_reason=reason,
    )
    return PresentityState(ALICE, config)


def handle(state: PresentityState, msg: object, now: float = T0) -> list[object]:
    return list(state.handle(msg, now))  # type: ignore[arg-type]


def subscribe(state: PresentityState, watcher: str = BOB, event: str = "presence") -> list[object]:
    req = request("SUBSCRIBE", ALICE, from_uri=watcher, to_uri=ALICE, event=event, expires=600)
    return handle(state, Subscribe(req, PEER, event))


def notifies(effects: list[object]) -> list[SendNotify]:
    return [e for e in effects if isinstance(e, SendNotify)]


def answer(state: PresentityState, effects: list[object]) -> None:
    for n in notifies(effects):
        state.handle(NotifyAnswered(n.key, n.cseq, 200), T0)


def sub_state(n: SendNotify) -> str:
    return n.request.headers.get("Subscription-State") or ""


def rules_changed(state: PresentityState, document: bytes | None) -> list[object]:
    return handle(state, RulesChanged("pres-rules", document, "e1"))


def publish(state: PresentityState) -> None:
    req = request(
        "PUBLISH",
        ALICE,
        from_uri=ALICE,
        to_uri=ALICE,
        body=pidf(ALICE, "phone"),
        content_type="application/pidf+xml",
        expires=3600,
    )
    handle(state, Publish(req, PEER, "presence"))


def test_first_notify_waits_for_rules_then_goes_out_active() -> None:
    state = make_state()
    publish(state)
    effects = subscribe(state)
    assert next(e for e in effects if isinstance(e, Reply)).status == 200
    assert FetchDocument("pres-rules") in effects
    assert not notifies(effects)  # held until the rules arrive
    (n,) = notifies(rules_changed(state, ruleset(rule("r", BOB, "allow"))))
    assert sub_state(n).startswith("active")
    assert tuple_statuses(n.request.body) == {"phone": "open"}


def test_rules_that_never_come_release_a_pending_notify() -> None:
    state = make_state()
    subscribe(state)
    (n,) = notifies(handle(state, Expire(), T0 + 2.0))
    assert sub_state(n).startswith("pending")
    assert n.request.body == b""


def test_no_rule_is_pending_without_body_then_allow_activates_with_body() -> None:
    state = make_state()
    publish(state)
    rules_changed(state, None)  # 404: no document
    first = subscribe(state)
    (n0,) = notifies(first)
    assert sub_state(n0).startswith("pending")
    assert n0.request.body == b""
    answer(state, first)
    (n1,) = notifies(rules_changed(state, ruleset(rule("r", BOB, "allow"))))
    assert sub_state(n1).startswith("active")
    assert tuple_statuses(n1.request.body) == {"phone": "open"}


def test_confirm_stays_pending() -> None:
    state = make_state()
    rules_changed(state, ruleset(rule("r", BOB, "confirm")))
    (n,) = notifies(subscribe(state))
    assert sub_state(n).startswith("pending")


def test_block_terminates_with_rejected() -> None:
    state = make_state()
    rules_changed(state, ruleset(rule("r", BOB, "block")))
    (n,) = notifies(subscribe(state))
    assert sub_state(n) == "terminated;reason=rejected"
    assert not state.watches


def test_polite_block_is_active_with_a_neutral_closed_document() -> None:
    state = make_state()
    publish(state)
    rules_changed(state, ruleset(rule("r", BOB, "polite-block")))
    (n,) = notifies(subscribe(state))
    assert sub_state(n).startswith("active")
    statuses = tuple_statuses(n.request.body)
    assert "phone" not in statuses
    assert set(statuses.values()) == {"closed"}


def test_rules_deleted_revoke_active_watcher_with_configured_reason() -> None:
    state = make_state(reason="probation;retry-after=30")
    rules_changed(state, ruleset(rule("r", BOB, "allow")))
    answer(state, subscribe(state))
    (n,) = notifies(rules_changed(state, None))
    assert sub_state(n) == "terminated;reason=probation;retry-after=30"
    assert not state.watches


def test_winfo_sees_pending_then_approved_then_probation() -> None:
    state = make_state()
    rules_changed(state, None)
    answer(state, subscribe(state, ALICE, "presence.winfo"))
    sub = subscribe(state)
    (w1,) = [n for n in notifies(sub) if n.request.headers.get("Event") == "presence.winfo"]
    answer(state, sub)
    entries = parse_watcherinfo(w1.request.body).watcher_lists[0].watchers
    assert [(e.uri, e.status, e.event) for e in entries] == [(BOB, "pending", "subscribe")]

    approved = rules_changed(state, ruleset(rule("r", BOB, "allow")))
    (w2,) = [n for n in notifies(approved) if n.request.headers.get("Event") == "presence.winfo"]
    answer(state, approved)
    entries = parse_watcherinfo(w2.request.body).watcher_lists[0].watchers
    assert [(e.status, e.event) for e in entries] == [("active", "approved")]

    revoked = rules_changed(state, None)
    (w3,) = [n for n in notifies(revoked) if n.request.headers.get("Event") == "presence.winfo"]
    entries = parse_watcherinfo(w3.request.body).watcher_lists[0].watchers
    assert [(e.status, e.event) for e in entries] == [("terminated", "probation")]


def test_refresh_type_0_asks_for_rules_again() -> None:
    state = make_state()
    rules_changed(state, None)
    subscribe(state)
    effects = handle(state, Refresh("presence", 0))
    assert FetchDocument("pres-rules", True) in effects


def test_unchanged_rules_notify_nobody() -> None:
    state = make_state()
    doc = ruleset(rule("r", BOB, "allow"))
    rules_changed(state, doc)
    answer(state, subscribe(state))
    assert notifies(rules_changed(state, doc)) == []
