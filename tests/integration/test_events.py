"""presence.winfo, dialog;sla and dialog against the real server process."""

from __future__ import annotations

from pathlib import Path

from presencex.bodies.dialoginfo import dialog_states
from presencex.bodies.watcherinfo import parse_watcherinfo
from presencex.bodies.xmlparse import parse_xml
from tests.integration.server import UdpPeer, open_udp_peer, running_server
from tests.sipmsg import request_bytes

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
CAROL = "sip:carol@example.com"


def subscribe_bytes(
    server_port: int, peer: UdpPeer, watcher: str, event: str, **kw: object
) -> bytes:
    return request_bytes(
        "SUBSCRIBE",
        ALICE,
        from_uri=watcher,
        to_uri=ALICE,
        event=event,
        contact=f"sip:w@127.0.0.1:{peer.port}",
        via=f"SIP/2.0/UDP 127.0.0.1:{peer.port}",
        **kw,  # type: ignore[arg-type]
    )


def dialog_body(dialogs: list[tuple[str, str]]) -> bytes:
    items = "".join(f'<dialog id="{d}"><state>{s}</state></dialog>' for d, s in dialogs)
    return (
        '<?xml version="1.0"?><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
        f'version="0" state="full" entity="{ALICE}">{items}</dialog-info>'
    ).encode()


async def test_winfo_full_then_partials_as_watchers_come_and_go(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        alice = await open_udp_peer(server.port)
        bob = await open_udp_peer(server.port)
        carol = await open_udp_peer(server.port)
        await bob.send(subscribe_bytes(server.port, bob, BOB, "presence", expires=600))
        await bob.collect(responses=1, notifies=1)

        await alice.send(
            subscribe_bytes(
                server.port,
                alice,
                ALICE,
                "presence.winfo",
                expires=600,
                extra=[("Accept", "application/watcherinfo+xml")],
            )
        )
        (ok,), (n0,) = await alice.collect(responses=1, notifies=1)
        assert ok.status == 200
        doc0 = parse_watcherinfo(n0.body)
        assert (doc0.version, doc0.state) == (0, "full")
        assert [w.uri for w in doc0.watcher_lists[0].watchers] == [BOB]

        await carol.send(
            subscribe_bytes(server.port, carol, CAROL, "presence", expires=600, call_id="c-1")
        )
        (carol_ok,), _ = await carol.collect(responses=1, notifies=1)
        _, (n1,) = await alice.collect(notifies=1)
        doc1 = parse_watcherinfo(n1.body)
        assert (doc1.version, doc1.state) == (1, "partial")
        assert [(w.uri, w.status) for w in doc1.watcher_lists[0].watchers] == [(CAROL, "active")]

        await carol.send(
            subscribe_bytes(
                server.port,
                carol,
                CAROL,
                "presence",
                expires=0,
                call_id="c-1",
                to_tag=carol_ok.to.tag,
                cseq=2,
            )
        )
        await carol.collect(responses=1, notifies=1)
        _, (n2,) = await alice.collect(notifies=1)
        doc2 = parse_watcherinfo(n2.body)
        assert (doc2.version, doc2.state) == (2, "partial")
        assert [(w.uri, w.status) for w in doc2.watcher_lists[0].watchers] == [
            (CAROL, "terminated")
        ]


async def test_winfo_shows_who_watches_the_busy_lamp_too(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        alice = await open_udp_peer(server.port)
        bob = await open_udp_peer(server.port)
        await bob.send(subscribe_bytes(server.port, bob, BOB, "presence", expires=600))
        await bob.collect(responses=1, notifies=1)
        await bob.send(
            subscribe_bytes(server.port, bob, BOB, "dialog", expires=600, call_id="bob-blf")
        )
        await bob.collect(responses=1, notifies=1)
        await alice.send(subscribe_bytes(server.port, alice, ALICE, "presence.winfo", expires=600))
        (ok,), (n0,) = await alice.collect(responses=1, notifies=1)
        assert ok.status == 200
        doc = parse_watcherinfo(n0.body)
        assert [(wl.package, [w.uri for w in wl.watchers]) for wl in doc.watcher_lists] == [
            ("presence", [BOB]),
            ("dialog", [BOB]),
        ]


async def test_two_phones_publish_sla_third_sees_both(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        phone1 = await open_udp_peer(server.port)
        phone2 = await open_udp_peer(server.port)
        phone3 = await open_udp_peer(server.port)
        await phone3.send(subscribe_bytes(server.port, phone3, ALICE, "dialog;sla", expires=600))
        await phone3.collect(responses=1, notifies=1)
        for phone, dialog in (
            (phone1, ("line1-call", "confirmed")),
            (phone2, ("line2-call", "early")),
        ):
            await phone.send(
                request_bytes(
                    "PUBLISH",
                    ALICE,
                    from_uri=ALICE,
                    to_uri=ALICE,
                    event="dialog;sla",
                    body=dialog_body([dialog]),
                    content_type="application/dialog-info+xml",
                    expires=600,
                    via=f"SIP/2.0/UDP 127.0.0.1:{phone.port}",
                )
            )
            (ok,), _ = await phone.collect(responses=1)
            assert ok.status == 200
        _, (n1,) = await phone3.collect(notifies=1)
        _, (n2,) = await phone3.collect(notifies=1)
        assert dialog_states(n2.body) == {"line1-call": "confirmed", "line2-call": "early"}
        versions = [int(parse_xml(n.body).get("version") or -1) for n in (n1, n2)]
        assert versions == [1, 2]


async def test_blf_busy_then_idle(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        phone = await open_udp_peer(server.port)
        watcher = await open_udp_peer(server.port)
        await watcher.send(
            subscribe_bytes(
                server.port,
                watcher,
                BOB,
                "dialog",
                expires=600,
                extra=[("Accept", "application/dialog-info+xml")],
            )
        )
        _, (idle,) = await watcher.collect(responses=1, notifies=1)
        assert dialog_states(idle.body) == {}
        etag = ""
        for state in ("confirmed", "terminated"):
            extra = [("SIP-If-Match", etag)] if etag else []
            await phone.send(
                request_bytes(
                    "PUBLISH",
                    ALICE,
                    from_uri=ALICE,
                    to_uri=ALICE,
                    event="dialog",
                    body=dialog_body([("call-1", state)]),
                    content_type="application/dialog-info+xml",
                    expires=600,
                    via=f"SIP/2.0/UDP 127.0.0.1:{phone.port}",
                    extra=extra,
                )
            )
            (ok,), _ = await phone.collect(responses=1)
            etag = ok.headers.get("SIP-ETag") or ""
            _, (notify,) = await watcher.collect(notifies=1)
            assert dialog_states(notify.body) == {"call-1": state}
