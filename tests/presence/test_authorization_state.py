"""force_active = 0: pres-rules decide each watcher's state, and changes move it."""

from __future__ import annotations

import pytest

import presencex.presence.state
from presencex.bodies.pidf import DATA_MODEL_NS, PIDF_NS, RPID_NS, tuple_statuses
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
from tests.presence.rules_docs import HEAD, rule, ruleset
from tests.sipmsg import pidf, request

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
CAROL = "sip:carol@example.com"
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


def test_rules_still_owed_release_every_later_watcher_within_its_own_wait() -> None:
    """Regression: only the first SUBSCRIBE started a rules_wait timer, so
    while the fetch stayed owed (XCAP server down) a watcher subscribing
    after that timer fired was held with no NOTIFY until it expired."""
    state = make_state()
    wait = state.config.rules_wait
    # The document source never answers: no RulesChanged ever comes.
    first = subscribe(state)
    assert [e for e in first if isinstance(e, FetchDocument)] == [FetchDocument("pres-rules")]
    (n1,) = notifies(handle(state, Expire(), T0 + wait))
    assert sub_state(n1).startswith("pending")

    later = T0 + 5 * wait
    req = request("SUBSCRIBE", ALICE, from_uri=CAROL, to_uri=ALICE, expires=600)
    second = handle(state, Subscribe(req, PEER, "presence"), later)
    assert not [e for e in second if isinstance(e, FetchDocument)]  # the one fetch is owed
    assert not notifies(second)
    deadline = state.next_deadline()
    assert deadline is not None
    assert deadline <= later + wait
    (n2,) = notifies(handle(state, Expire(), deadline))
    assert n2.request.to.uri == CAROL
    assert sub_state(n2).startswith("pending")
    assert n2.request.body == b""


def test_each_held_watcher_waits_its_own_rules_wait() -> None:
    state = make_state()
    wait = state.config.rules_wait
    subscribe(state)
    req = request("SUBSCRIBE", ALICE, from_uri=CAROL, to_uri=ALICE, expires=600)
    handle(state, Subscribe(req, PEER, "presence"), T0 + wait / 2)
    (n1,) = notifies(handle(state, Expire(), T0 + wait))
    assert n1.request.to.uri == BOB
    (n2,) = notifies(handle(state, Expire(), T0 + wait / 2 + wait))
    assert n2.request.to.uri == CAROL


def _sphere_pidf(sphere: str) -> bytes:
    return (
        f'<presence xmlns="{PIDF_NS}" xmlns:dm="{DATA_MODEL_NS}" xmlns:rpid="{RPID_NS}" '
        f'entity="{ALICE}"><tuple id="phone"><status><basic>open</basic></status></tuple>'
        f'<dm:person id="p"><rpid:sphere>{sphere}</rpid:sphere></dm:person></presence>'
    ).encode()


def test_sphere_is_read_once_per_aggregate_not_per_watcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []
    real = presencex.presence.state.pidf_sphere

    def counting(body: bytes) -> str | None:
        calls.append(body)
        return real(body)

    monkeypatch.setattr(presencex.presence.state, "pidf_sphere", counting)
    config = StateConfig(
        registry=Registry([PresencePackage(), WatcherInfoPackage()]),
        force_active=False,
        enable_sphere_check=True,
    )
    state = PresentityState(ALICE, config)

    def publish_sphere(sphere: str, if_match: str | None = None) -> list[object]:
        req = request(
            "PUBLISH",
            ALICE,
            from_uri=ALICE,
            to_uri=ALICE,
            body=_sphere_pidf(sphere),
            content_type="application/pidf+xml",
            expires=3600,
            extra=[("SIP-If-Match", if_match)] if if_match else None,
        )
        return handle(state, Publish(req, PEER, "presence"))

    (reply,) = [e for e in publish_sphere("work") if isinstance(e, Reply)]
    etag = dict(reply.headers)["SIP-ETag"]
    watchers = [f"sip:w{i}@example.com" for i in range(3)]
    for watcher in watchers:
        subscribe(state, watcher)
    at_work = HEAD + (
        '<cr:rule id="w"><cr:conditions><cr:sphere value="work"/></cr:conditions>'
        "<cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions></cr:rule>"
        "</cr:ruleset>"
    )
    allowed = rules_changed(state, at_work.encode())
    assert sorted(n.request.to.uri for n in notifies(allowed)) == watchers
    assert all(sub_state(n).startswith("active") for n in notifies(allowed))
    assert len(calls) == 1
    answer(state, allowed)

    # A new aggregate is a new sphere: read again, once, and it revokes all.
    revoked = publish_sphere("home", etag)
    assert [sub_state(n) for n in notifies(revoked)] == ["terminated;reason=probation"] * 3
    assert len(calls) == 2


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
