"""PresentityState on its own: messages in, effects out, no event loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from presencex.bodies.pidf import tuple_statuses
from presencex.events.presence import PresencePackage
from presencex.events.registry import Registry
from presencex.presence.messages import (
    Expire,
    NotifyAnswered,
    Persist,
    PersistLater,
    Publish,
    Reply,
    RulesChanged,
    SendNotify,
    Subscribe,
)
from presencex.presence.state import PresentityState, StateConfig
from presencex.store.writer import (
    DropPublication,
    DropSubscription,
    PutPublication,
    PutSubscription,
)
from presencex.transport.peer import Peer
from tests.sipmsg import pidf, request

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
PEER = Peer("udp", "127.0.0.1", 5070, "udp:127.0.0.1:5060")
T0 = 1_700_000_000.0


def make_state(force_active: bool = True, **kwargs: object) -> PresentityState:
    config = StateConfig(
        registry=Registry([PresencePackage()]),
        force_active=force_active,
        min_expires=30,
        max_expires=3600,
        **kwargs,  # type: ignore[arg-type]
    )
    return PresentityState(ALICE, config)


def publish(state: PresentityState, now: float = T0, **kwargs: object) -> list[object]:
    kwargs.setdefault("from_uri", ALICE)
    kwargs.setdefault("to_uri", ALICE)
    kwargs.setdefault("content_type", "application/pidf+xml")
    req = request("PUBLISH", ALICE, **kwargs)
    return list(state.handle(Publish(req, PEER, "presence"), now))


def subscribe(state: PresentityState, now: float = T0, **kwargs: object) -> list[object]:
    kwargs.setdefault("from_uri", BOB)
    kwargs.setdefault("to_uri", ALICE)
    req = request("SUBSCRIBE", kwargs.pop("ruri", ALICE), **kwargs)  # type: ignore[arg-type]
    return list(state.handle(Subscribe(req, PEER, "presence"), now))


def replies(effects: list[object]) -> list[Reply]:
    return [e for e in effects if isinstance(e, Reply)]


def notifies(effects: list[object]) -> list[SendNotify]:
    return [e for e in effects if isinstance(e, SendNotify)]


def etag_of(effects: list[object]) -> str:
    (reply,) = replies(effects)
    return dict(reply.headers)["SIP-ETag"]


def answer_all(state: PresentityState, effects: list[object], status: int = 200) -> list[object]:
    out: list[object] = []
    for n in notifies(effects):
        out += state.handle(NotifyAnswered(n.key, n.cseq, status), T0)
    return out


# -- PUBLISH --------------------------------------------------------------


def test_initial_publish_commits_then_answers_200_with_etag_and_expires() -> None:
    state = make_state()
    effects = publish(state, body=pidf(ALICE, "t1"), expires=600)
    assert isinstance(effects[0], Persist)
    assert isinstance(effects[0].ops[0], PutPublication)
    (reply,) = replies(effects)
    headers = dict(reply.headers)
    assert reply.status == 200
    assert headers["Expires"] == "600"
    assert headers["SIP-ETag"]
    assert effects.index(effects[0]) < effects.index(reply)


def test_publish_expires_over_max_is_lowered_and_said() -> None:
    state = make_state()
    (reply,) = replies(publish(state, body=pidf(ALICE, "t1"), expires=99999))
    assert dict(reply.headers)["Expires"] == "3600"


def test_publish_expires_too_brief_is_423_with_min_expires() -> None:
    state = make_state()
    (reply,) = replies(publish(state, body=pidf(ALICE, "t1"), expires=5))
    assert reply.status == 423
    assert dict(reply.headers)["Min-Expires"] == "30"


def test_initial_publish_without_body_is_400() -> None:
    state = make_state()
    (reply,) = replies(publish(state, expires=600, content_type=None))
    assert reply.status == 400
    assert reply.reason
    assert "body" in reply.reason


def test_unknown_etag_is_412() -> None:
    state = make_state()
    (reply,) = replies(publish(state, expires=600, extra=[("SIP-If-Match", "nope")]))
    assert reply.status == 412


def test_wrong_content_type_is_415_with_accept() -> None:
    state = make_state()
    (reply,) = replies(publish(state, body=b"hello", content_type="text/plain"))
    assert reply.status == 415
    assert dict(reply.headers)["Accept"] == "application/pidf+xml"


def test_malformed_pidf_is_400_with_reason() -> None:
    state = make_state()
    (reply,) = replies(publish(state, body=b"<presence><tuple>"))
    assert reply.status == 400
    assert reply.reason
    assert reply.reason.startswith("Bad body")
    assert state.empty()


def test_refresh_modify_remove_cycle() -> None:
    state = make_state()
    etag1 = etag_of(publish(state, body=pidf(ALICE, "t1"), expires=600))
    refreshed = publish(state, expires=600, content_type=None, extra=[("SIP-If-Match", etag1)])
    etag2 = etag_of(refreshed)
    assert etag2 != etag1  # RFC 3903 §4.3: every refresh gets a new entity-tag
    assert not notifies(refreshed)
    etag3 = etag_of(
        publish(state, body=pidf(ALICE, "t1", "closed"), extra=[("SIP-If-Match", etag2)])
    )
    (pub,) = state.publications["presence"].values()
    assert tuple_statuses(pub.body) == {"t1": "closed"}
    removed = publish(state, expires=0, content_type=None, extra=[("SIP-If-Match", etag3)])
    assert replies(removed)[0].status == 200
    assert any(isinstance(e, Persist) and isinstance(e.ops[0], DropPublication) for e in removed)
    assert state.empty()


# -- SUBSCRIBE / NOTIFY ----------------------------------------------------


def test_subscribe_gets_200_with_tag_then_notify_with_both_devices() -> None:
    state = make_state()
    publish(state, body=pidf(ALICE, "phone"), expires=600)
    publish(state, body=pidf(ALICE, "laptop"), expires=600)
    effects = subscribe(state, expires=600)
    assert isinstance(effects[0], Persist)
    assert isinstance(effects[0].ops[0], PutSubscription)
    (reply,) = replies(effects)
    assert reply.status == 200
    assert reply.to_tag
    (notify,) = notifies(effects)
    req = notify.request
    assert req.method == "NOTIFY"
    assert req.headers.get("Subscription-State") == "active;expires=600"
    assert req.headers.get("Event") == "presence"
    assert req.headers.get("Content-Type") == "application/pidf+xml"
    assert req.from_.tag == reply.to_tag
    assert req.to.tag == "ft1"
    assert tuple_statuses(req.body) == {"phone": "open", "laptop": "open"}


def test_force_active_0_keeps_watcher_pending_without_body() -> None:
    state = make_state(force_active=False)
    publish(state, body=pidf(ALICE, "phone"), expires=600)
    state.handle(RulesChanged("pres-rules", None, None), T0)  # no rules document
    (notify,) = notifies(subscribe(state, expires=600))
    assert notify.request.headers.get("Subscription-State") == "pending;expires=600"
    assert notify.request.body == b""
    assert notify.request.headers.get("Content-Type") is None


def test_accept_without_pidf_is_406() -> None:
    state = make_state()
    effects = subscribe(state, expires=600, extra=[("Accept", "application/xpidf+xml")])
    assert replies(effects)[0].status == 406
    assert state.empty()


def test_subscribe_with_route_set_sends_to_first_route() -> None:
    state = make_state()
    effects = subscribe(
        state,
        expires=600,
        extra=[("Record-Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>")],
    )
    (notify,) = notifies(effects)
    assert notify.target == "sip:p1.example.com;lr"
    assert notify.request.headers.get_all("Route") == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr>",
    ]
    assert notify.request.uri == "sip:watcher@127.0.0.1:5070"


def _subscribed(state: PresentityState) -> tuple[str, str]:
    effects = subscribe(state, expires=600, call_id="dlg-1")
    answer_all(state, effects)
    return replies(effects)[0].to_tag or "", "dlg-1"


def test_refresh_and_unsubscribe_in_dialog() -> None:
    state = make_state()
    to_tag, call_id = _subscribed(state)
    refresh = subscribe(state, T0 + 100, expires=600, to_tag=to_tag, call_id=call_id, cseq=2)
    assert replies(refresh)[0].status == 200
    (notify,) = notifies(refresh)
    assert notify.request.headers.get("Subscription-State") == "active;expires=600"
    answer_all(state, refresh)
    bye = subscribe(state, T0 + 200, expires=0, to_tag=to_tag, call_id=call_id, cseq=3)
    assert isinstance(bye[0], Persist)
    assert isinstance(bye[0].ops[0], DropSubscription)
    assert replies(bye)[0].status == 200
    (final,) = notifies(bye)
    assert final.request.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert state.empty()


def test_unknown_dialog_is_481_and_old_cseq_is_500() -> None:
    state = make_state()
    assert replies(subscribe(state, expires=600, to_tag="nope"))[0].status == 481
    to_tag, call_id = _subscribed(state)
    stale = subscribe(state, expires=600, to_tag=to_tag, call_id=call_id, cseq=1)
    assert replies(stale)[0].status == 500


def test_subscription_expiry_sends_terminated_timeout() -> None:
    state = make_state()
    _subscribed(state)
    assert state.next_deadline() == T0 + 600
    effects = state.handle(Expire(), T0 + 600)
    (final,) = notifies(effects)
    assert final.request.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert any(isinstance(e, PersistLater) for e in effects)
    assert state.empty()


def test_expired_publication_is_shown_closed_then_forgotten() -> None:
    state = make_state()
    _subscribed(state)
    effects = publish(state, body=pidf(ALICE, "phone"), expires=60)
    answer_all(state, effects)
    expired = state.handle(Expire(), T0 + 60)
    (notify,) = notifies(expired)
    assert tuple_statuses(notify.request.body) == {"phone": "closed"}
    assert "presence" not in state.publications


@dataclass(slots=True)
class CountingPresencePackage(PresencePackage):
    """Counts aggregations: each parses every publication of the presentity."""

    aggregated: int = 0

    def aggregate(self, bodies: Sequence[bytes], presentity: str) -> bytes | None:
        self.aggregated += 1
        return PresencePackage.aggregate(self, bodies, presentity)


def test_removal_aggregates_once_for_all_watchers() -> None:
    package = CountingPresencePackage()
    state = PresentityState(ALICE, StateConfig(registry=Registry([package]), force_active=True))
    answer_all(state, publish(state, body=pidf(ALICE, "laptop"), expires=600))
    effects = publish(state, body=pidf(ALICE, "phone"), expires=60)
    for i in range(4):
        answer_all(state, subscribe(state, expires=600, call_id=f"dlg-{i}"))
    answer_all(state, effects)
    package.aggregated = 0
    expired = state.handle(Expire(), T0 + 60)
    sent = notifies(expired)
    assert len(sent) == 4
    assert package.aggregated == 1
    bodies = {n.request.body for n in sent}
    assert len(bodies) == 1
    assert tuple_statuses(bodies.pop()) == {"phone": "closed", "laptop": "open"}


def test_notify_answered_481_removes_subscription() -> None:
    state = make_state()
    effects = subscribe(state, expires=600)
    out = answer_all(state, effects, status=481)
    assert any(isinstance(e, PersistLater) for e in out)
    assert state.empty()


def test_changes_while_notify_in_flight_coalesce_into_current_state() -> None:
    state = make_state()
    first = subscribe(state, expires=600)
    etag = etag_of(publish(state, body=pidf(ALICE, "phone", "open"), expires=600))
    publish(state, body=pidf(ALICE, "phone", "closed"), extra=[("SIP-If-Match", etag)])
    # Both changes arrived while the first NOTIFY was outstanding: one NOTIFY
    # with the newest state follows its answer.
    (after,) = notifies(answer_all(state, first))
    assert tuple_statuses(after.request.body) == {"phone": "closed"}


def test_publications_apply_in_arrival_order() -> None:
    """Out-of-order BLF/presence updates are the incumbents' most reported bug:
    each modify lands in the order it arrived, the last one wins."""
    state = make_state()
    etag = etag_of(publish(state, body=pidf(ALICE, "phone", "open"), expires=600))
    for i in range(20):
        basic = "open" if i % 2 else "closed"
        etag = etag_of(
            publish(state, body=pidf(ALICE, "phone", basic), extra=[("SIP-If-Match", etag)])
        )
    (notify,) = notifies(subscribe(state, expires=600))
    assert tuple_statuses(notify.request.body) == {"phone": "open"}


def test_newest_publication_wins_a_shared_tuple_id() -> None:
    state = make_state()
    publish(state, body=pidf(ALICE, "same", "open"), expires=600)
    publish(state, body=pidf(ALICE, "same", "closed"), expires=600)
    (notify,) = notifies(subscribe(state, expires=600))
    assert tuple_statuses(notify.request.body) == {"same": "closed"}


def test_fetch_subscribe_with_expires_0_keeps_nothing() -> None:
    state = make_state()
    effects = subscribe(state, expires=0)
    assert replies(effects)[0].status == 200
    (notify,) = notifies(effects)
    assert notify.request.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert state.empty()
