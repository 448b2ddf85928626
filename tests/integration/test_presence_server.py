"""The real server process over real loopback UDP and TCP sockets."""

from __future__ import annotations

import re
import socket
import sqlite3
import struct
from pathlib import Path

import trio

from presencex.bodies.pidf import tuple_statuses
from presencex.sip.message import Request, Response
from tests.integration.server import TcpPeer, open_udp_peer, running_server
from tests.sipmsg import pidf, request_bytes

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
PIDF_TYPE = "application/pidf+xml"


def publish_bytes(
    port: int,
    peer_port: int,
    tuple_id: str,
    basic: str = "open",
    body: bytes | None = None,
    **kw: object,
) -> bytes:
    return request_bytes(
        "PUBLISH",
        ALICE,
        from_uri=ALICE,
        to_uri=ALICE,
        body=body or pidf(ALICE, tuple_id, basic),
        content_type=PIDF_TYPE,
        expires=600,
        via=f"SIP/2.0/UDP 127.0.0.1:{peer_port}",
        **kw,  # type: ignore[arg-type]
    )


async def _subscribe(port: int, watcher_port: int, call_id: str) -> bytes:
    return request_bytes(
        "SUBSCRIBE",
        ALICE,
        from_uri=BOB,
        to_uri=ALICE,
        call_id=call_id,
        expires=600,
        contact=f"sip:bob@127.0.0.1:{watcher_port}",
        via=f"SIP/2.0/UDP 127.0.0.1:{watcher_port}",
    )


async def test_two_devices_publish_watcher_sees_both_then_modify_and_removal(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path) as server:
        phone = await open_udp_peer(server.port)
        laptop = await open_udp_peer(server.port)
        watcher = await open_udp_peer(server.port)
        await phone.send(publish_bytes(server.port, phone.port, "phone"))
        (ok,), _ = await phone.collect(responses=1)
        assert ok.status == 200
        phone_etag = ok.headers.get("SIP-ETag")
        await laptop.send(publish_bytes(server.port, laptop.port, "laptop"))
        (ok2,), _ = await laptop.collect(responses=1)
        assert ok2.status == 200

        await watcher.send(await _subscribe(server.port, watcher.port, "w-1"))
        (sub_ok,), (notify,) = await watcher.collect(responses=1, notifies=1)
        assert sub_ok.status == 200
        assert (notify.headers.get("Subscription-State") or "").startswith("active")
        assert tuple_statuses(notify.body) == {"phone": "open", "laptop": "open"}

        # A modify from the phone reaches the watcher.
        await phone.send(
            publish_bytes(
                server.port, phone.port, "phone", "closed", extra=[("SIP-If-Match", phone_etag)]
            )
        )
        (ok3,), _ = await phone.collect(responses=1)
        assert ok3.status == 200
        _, (changed,) = await watcher.collect(notifies=1)
        assert tuple_statuses(changed.body) == {"phone": "closed", "laptop": "open"}

        # The laptop removes its publication: shown closed, once.
        await laptop.send(
            request_bytes(
                "PUBLISH",
                ALICE,
                from_uri=ALICE,
                to_uri=ALICE,
                expires=0,
                extra=[("SIP-If-Match", ok2.headers.get("SIP-ETag") or "")],
                via=f"SIP/2.0/UDP 127.0.0.1:{laptop.port}",
            )
        )
        (ok4,), _ = await laptop.collect(responses=1)
        assert ok4.status == 200
        _, (gone,) = await watcher.collect(notifies=1)
        assert tuple_statuses(gone.body)["laptop"] == "closed"


async def test_notify_too_large_for_a_datagram_goes_over_tcp(tmp_path: Path) -> None:
    """RFC 3261 §18.1.1: two devices publishing 40 KB each make an aggregate
    no UDP datagram can carry; the NOTIFY goes over TCP to the same address."""
    note = "<note>" + "n" * 40_000 + "</note></tuple>"
    with running_server(tmp_path) as server:
        devices = [await open_udp_peer(server.port) for _ in range(2)]
        for device, tuple_id in zip(devices, ("phone", "laptop"), strict=True):
            body = pidf(ALICE, tuple_id).replace(b"</tuple>", note.encode())
            await device.send(publish_bytes(server.port, device.port, tuple_id, body=body))
            (ok,), _ = await device.collect(responses=1)
            assert ok.status == 200
        watcher = await open_udp_peer(server.port)
        (listener,) = await trio.open_tcp_listeners(watcher.port, host="127.0.0.1")
        async with listener:
            await watcher.send(await _subscribe(server.port, watcher.port, "w-big"))
            (sub_ok,), _ = await watcher.collect(responses=1)
            assert sub_ok.status == 200
            with trio.fail_after(5):
                stream = await listener.accept()
            async with stream:
                peer = TcpPeer(stream, max_size=1 << 20)
                notify = await peer.receive()
                assert isinstance(notify, Request)
                assert notify.method == "NOTIFY"
                assert len(notify.body) > 65_507
                assert notify.top_via.transport == "TCP"
                assert tuple_statuses(notify.body) == {"phone": "open", "laptop": "open"}
                await peer.answer(notify)


async def test_kill_9_and_restart_keep_subscription_and_publications(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        phone = await open_udp_peer(server.port)
        watcher = await open_udp_peer(server.port)
        await phone.send(publish_bytes(server.port, phone.port, "phone"))
        (ok,), _ = await phone.collect(responses=1)
        etag = ok.headers.get("SIP-ETag") or ""
        await watcher.send(await _subscribe(server.port, watcher.port, "w-restart"))
        (sub_ok,), (first,) = await watcher.collect(responses=1, notifies=1)
        to_tag = sub_ok.to.tag

        server.kill9()
        with sqlite3.connect(server.db_path) as db:
            assert db.execute("select count(*) from active_watchers").fetchone()[0] == 1
            assert db.execute("select count(*) from presentity").fetchone()[0] == 1
        server.start()

        # After the restart the watcher is told the current state again...
        _, (again,) = await watcher.collect(notifies=1, within=10)
        assert again.from_.tag == to_tag
        assert again.cseq[0] > first.cseq[0]
        assert tuple_statuses(again.body) == {"phone": "open"}
        # ...and the phone's next PUBLISH (with its old ETag) reaches it.
        await phone.send(
            publish_bytes(
                server.port, phone.port, "phone", "closed", extra=[("SIP-If-Match", etag)]
            )
        )
        (ok2,), _ = await phone.collect(responses=1)
        assert ok2.status == 200
        _, (changed,) = await watcher.collect(notifies=1)
        assert tuple_statuses(changed.body) == {"phone": "closed"}


async def test_tcp_subscribe_notifies_on_the_same_connection(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        peer = TcpPeer(stream)
        await peer.send(
            request_bytes(
                "SUBSCRIBE",
                ALICE,
                from_uri=BOB,
                to_uri=ALICE,
                expires=600,
                contact=f"sip:bob@127.0.0.1:{peer.port};transport=tcp",
                via=f"SIP/2.0/TCP 127.0.0.1:{peer.port}",
            )
        )
        got: list[Request | Response] = [await peer.receive(), await peer.receive()]
        kinds = sorted(type(m).__name__ for m in got)
        assert kinds == ["Request", "Response"]
        notify = next(m for m in got if isinstance(m, Request))
        assert notify.method == "NOTIFY"
        assert notify.top_via.transport == "TCP"
        await peer.answer(notify)
        await stream.aclose()


async def test_tcp_stream_that_cannot_be_framed_is_answered_then_closed(tmp_path: Path) -> None:
    """RFC 3261 §18.3: a stream out of step is closed, but the message that put
    it out of step is answered first, and what came before it is served."""
    with running_server(tmp_path) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            peer = TcpPeer(stream)
            good = publish_bytes(server.port, peer.port, "t1").replace(b"/UDP", b"/TCP")
            bad = publish_bytes(server.port, peer.port, "t2", call_id="bad-length")
            bad = bad.replace(b"/UDP", b"/TCP")
            bad = re.sub(rb"Content-Length: \d+", b"Content-Length: 12x", bad)
            await peer.send(good + bad)
            # The 400 needs no commit and may come first; both come.
            answers = {}
            for _ in range(2):
                answer = await peer.receive()
                assert isinstance(answer, Response)
                answers[answer.call_id] = (answer.status, answer.reason)
            assert answers.pop("bad-length") == (400, "Bad Content-Length header")
            assert [status for status, _ in answers.values()] == [200]
            with trio.fail_after(5):
                assert await stream.receive_some(65536) == b""
        # The server goes on serving others.
        udp = await open_udp_peer(server.port)
        await udp.send(publish_bytes(server.port, udp.port, "t3"))
        answer = await udp.receive()
        assert isinstance(answer, Response)
        assert answer.status == 200


async def test_tcp_peers_that_reset_do_not_stop_the_server(tmp_path: Path) -> None:
    """A reset right after connecting, and one after a request whose answers
    are being written: each ends only its own connection."""
    with running_server(tmp_path) as server:
        for pause in (0.0, 0.3):
            raw = socket.create_connection(("127.0.0.1", server.port))
            raw.sendall(
                request_bytes(
                    "SUBSCRIBE",
                    ALICE,
                    from_uri=BOB,
                    to_uri=ALICE,
                    expires=600,
                    contact="sip:bob@127.0.0.1:9;transport=tcp",
                    via="SIP/2.0/TCP 127.0.0.1:9",
                )
            )
            await trio.sleep(pause)
            # SO_LINGER 0: close with a TCP reset rather than a FIN.
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()
        await trio.sleep(0.5)
        assert server.proc is not None
        assert server.proc.poll() is None, "the server died"
        udp = await open_udp_peer(server.port)
        await udp.send(publish_bytes(server.port, udp.port, "after-reset"))
        answer = await udp.receive()
        assert isinstance(answer, Response)
        assert answer.status == 200
        # Once, from the hub that sends every response.
        assert answer.headers.get_all("Server") == ["presencex"]


async def test_bad_input_gets_clear_answers_and_server_goes_on(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        peer = await open_udp_peer(server.port)
        # A request with a broken CSeq: 400 naming the header.
        bad = request_bytes("SUBSCRIBE", ALICE, from_uri=BOB, to_uri=ALICE).replace(
            b"CSeq: 1 SUBSCRIBE", b"CSeq: x SUBSCRIBE"
        )
        await peer.send(bad)
        # The answer copies the broken CSeq (RFC 3261 §8.2.6.2), so read it raw.
        status_line = (await peer.receive_raw()).split(b"\r\n", 1)[0]
        assert status_line.startswith(b"SIP/2.0 400 ")
        assert b"CSeq" in status_line
        # Unsupported event: 489 with Allow-Events.
        await peer.send(
            request_bytes(
                "SUBSCRIBE",
                ALICE,
                from_uri=BOB,
                to_uri=ALICE,
                event="message-summary",
                via=f"SIP/2.0/UDP 127.0.0.1:{peer.port}",
            )
        )
        (resp,), _ = await peer.collect(responses=1)
        assert resp.status == 489
        assert "presence" in (resp.headers.get("Allow-Events") or "")
        # Garbage is dropped, and the server still serves.
        await peer.send(b"\x00\x01garbage\r\n\r\n")
        await peer.send(publish_bytes(server.port, peer.port, "p"))
        (ok,), _ = await peer.collect(responses=1)
        assert ok.status == 200


async def test_retransmitted_publish_is_answered_once_processed(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        peer = await open_udp_peer(server.port)
        data = publish_bytes(server.port, peer.port, "phone", branch="z9hG4bK-same")
        await peer.send(data)
        (first,), _ = await peer.collect(responses=1)
        await peer.send(data)
        (second,), _ = await peer.collect(responses=1)
        assert first.headers.get("SIP-ETag") == second.headers.get("SIP-ETag")
        with sqlite3.connect(server.db_path) as db:
            assert db.execute("select count(*) from presentity").fetchone()[0] == 1
