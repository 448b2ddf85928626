"""presence.winfo and dialog packages through PresentityState: no event loop."""

from __future__ import annotations

from presencex.bodies.dialoginfo import dialog_states
from presencex.bodies.watcherinfo import parse_watcherinfo
from presencex.events.dialog import DialogPackage
from presencex.events.presence import PresencePackage
from presencex.events.registry import Registry
from presencex.events.winfo import WatcherInfoPackage
from presencex.presence.messages import (
    NotifyAnswered,
    Persist,
    Publish,
    Reply,
    SendNotify,
    Subscribe,
)
from presencex.presence.state import PresentityState, StateConfig
from presencex.sip.message import Request
from presencex.store.writer import PutWatcher
from presencex.transport.peer import Peer
from tests.sipmsg import request

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
CAROL = "sip:carol@example.com"
PEER = Peer("udp", "127.0.0.1", 5070, "udp:127.0.0.1:5060")
T0 = 1_700_000_000.0
DIALOG_TYPE = "application/dialog-info+xml"


def make_state(force_active: bool = True) -> PresentityState:
    registry = Registry(
        [
            PresencePackage(),
            WatcherInfoPackage(),
            DialogPackage(name="dialog"),
            DialogPackage(name="dialog;sla"),
        ]
    )
    return PresentityState(ALICE, StateConfig(registry=registry, force_active=force_active))


def subscribe(state: PresentityState, watcher: str, event: str, **kw: object) -> list[object]:
    req = request("SUBSCRIBE", ALICE, from_uri=watcher, to_uri=ALICE, event=event, **kw)  # type: ignore[arg-type]
    name = event.split(";id=")[0]
    return list(state.handle(Subscribe(req, PEER, name), T0))


def notifies(effects: list[object]) -> list[Request]:
    return [e.request for e in effects if isinstance(e, SendNotify)]


def answer(state: PresentityState, effects: list[object]) -> list[object]:
    out: list[object] = []
    for e in effects:
        if isinstance(e, SendNotify):
            out += state.handle(NotifyAnswered(e.key, e.cseq, 200), T0)
    return out


def status(effects: list[object]) -> int:
    return next(e.status for e in effects if isinstance(e, Reply))


def test_winfo_full_then_partial_with_versions_0_1_2() -> None:
    state = make_state()
    answer(state, subscribe(state, BOB, "presence", expires=600))
    first = subscribe(state, ALICE, "presence.winfo", expires=600)
    assert status(first) == 200
    (n0,) = notifies(first)
    assert n0.headers.get("Content-Type") == "application/watcherinfo+xml"
    doc = parse_watcherinfo(n0.body)
    assert (doc.version, doc.state) == (0, "full")
    (wlist,) = doc.watcher_lists
    assert wlist.package == "presence"
    assert wlist.resource == ALICE
    assert [(w.uri, w.status, w.event) for w in wlist.watchers] == [(BOB, "active", "subscribe")]
    answer(state, first)

    carol = subscribe(state, CAROL, "presence", expires=600, call_id="carol-1")
    (n1,) = [n for n in notifies(carol) if n.headers.get("Event") == "presence.winfo"]
    doc1 = parse_watcherinfo(n1.body)
    assert (doc1.version, doc1.state) == (1, "partial")
    assert [(w.uri, w.status) for w in doc1.watcher_lists[0].watchers] == [(CAROL, "active")]
    answer(state, carol)

    to_tag = next(e.to_tag for e in carol if isinstance(e, Reply))
    bye = subscribe(state, CAROL, "presence", expires=0, call_id="carol-1", to_tag=to_tag, cseq=2)
    (n2,) = [n for n in notifies(bye) if n.headers.get("Event") == "presence.winfo"]
    doc2 = parse_watcherinfo(n2.body)
    assert (doc2.version, doc2.state) == (2, "partial")
    ((uri, st, ev),) = [(w.uri, w.status, w.event) for w in doc2.watcher_lists[0].watchers]
    assert (uri, st, ev) == (CAROL, "terminated", "timeout")


def test_winfo_lists_watchers_of_the_other_events_in_lists_of_their_own() -> None:
    """Who watches the busy lamp is a watcher too: each event in its own
    watcher-list (RFC 3858 §4.2), presence first; winfo subscriptions are not listed."""
    state = make_state()
    answer(state, subscribe(state, BOB, "presence", expires=600))
    answer(state, subscribe(state, CAROL, "dialog", expires=600, call_id="carol-blf"))
    first = subscribe(state, ALICE, "presence.winfo", expires=600)
    (n0,) = notifies(first)
    doc = parse_watcherinfo(n0.body)
    assert (doc.version, doc.state) == (0, "full")
    assert [(wl.package, wl.resource) for wl in doc.watcher_lists] == [
        ("presence", ALICE),
        ("dialog", ALICE),
    ]
    assert [w.uri for w in doc.watcher_lists[0].watchers] == [BOB]
    assert [(w.uri, w.status) for w in doc.watcher_lists[1].watchers] == [(CAROL, "active")]
    answer(state, first)

    sla = subscribe(state, BOB, "dialog;sla", expires=600, call_id="bob-sla")
    (n1,) = [n for n in notifies(sla) if n.headers.get("Event") == "presence.winfo"]
    doc1 = parse_watcherinfo(n1.body)
    assert (doc1.version, doc1.state) == (1, "partial")
    # A partial document holds only the list that changed, beside the
    # (empty) list of the watched event itself.
    assert [(wl.package, [w.uri for w in wl.watchers]) for wl in doc1.watcher_lists] == [
        ("presence", []),
        ("dialog;sla", [BOB]),
    ]


def test_winfo_of_someone_else_is_403() -> None:
    state = make_state()
    effects = subscribe(state, BOB, "presence.winfo", expires=600)
    assert status(effects) == 403
    assert not notifies(effects)


def test_pending_watcher_is_remembered_in_watchers_table() -> None:
    state = make_state(force_active=False)
    effects = subscribe(state, BOB, "presence", expires=600)
    persisted = [op for e in effects if isinstance(e, Persist) for op in e.ops]
    assert any(isinstance(op, PutWatcher) and op.status == "pending" for op in persisted)


def dialog_body(entity: str, dialogs: list[tuple[str, str]], version: int = 0) -> bytes:
    items = "".join(
        f'<dialog id="{d}" direction="initiator"><state>{s}</state></dialog>' for d, s in dialogs
    )
    return (
        '<?xml version="1.0"?><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
        f'version="{version}" state="full" entity="{entity}">{items}</dialog-info>'
    ).encode()


def publish_dialog(state: PresentityState, event: str, body: bytes, **kw: object) -> list[object]:
    req = request(
        "PUBLISH",
        ALICE,
        from_uri=ALICE,
        to_uri=ALICE,
        event=event,
        body=body,
        content_type=DIALOG_TYPE,
        expires=600,
        **kw,  # type: ignore[arg-type]
    )
    return list(state.handle(Publish(req, PEER, event), T0))


def test_sla_two_phones_publish_third_sees_both_dialogs_with_rising_versions() -> None:
    state = make_state()
    sub = subscribe(state, BOB, "dialog;sla", expires=600)
    (n0,) = notifies(sub)
    assert n0.headers.get("Event") == "dialog;sla"
    assert dialog_states(n0.body) == {}  # idle line: an empty full document
    answer(state, sub)
    answer(state, publish_dialog(state, "dialog;sla", dialog_body(ALICE, [("d1", "confirmed")])))
    effects = publish_dialog(state, "dialog;sla", dialog_body(ALICE, [("d2", "early")]))
    (n2,) = notifies(effects)
    assert dialog_states(n2.body) == {"d1": "confirmed", "d2": "early"}
    from presencex.bodies.xmlparse import parse_xml

    root = parse_xml(n2.body)
    assert root.get("version") == "2"
    assert root.get("state") == "full"
    assert root.get("entity") == ALICE


def test_dialog_busy_then_idle_for_blf() -> None:
    state = make_state()
    answer(state, subscribe(state, BOB, "dialog", expires=600))
    busy = publish_dialog(state, "dialog", dialog_body(ALICE, [("call", "confirmed")]))
    (n1,) = notifies(busy)
    assert dialog_states(n1.body) == {"call": "confirmed"}
    answer(state, busy)
    etag = next(dict(e.headers)["SIP-ETag"] for e in busy if isinstance(e, Reply))
    idle = publish_dialog(
        state,
        "dialog",
        dialog_body(ALICE, [("call", "terminated")]),
        extra=[("SIP-If-Match", etag)],
    )
    (n2,) = notifies(idle)
    assert dialog_states(n2.body) == {"call": "terminated"}


def test_malformed_dialog_info_is_400() -> None:
    state = make_state()
    effects = publish_dialog(state, "dialog", b"<dialog-info><dialog/></dialog-info>")
    assert status(effects) == 400
