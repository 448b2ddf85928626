"""Issue 5 end to end: ``presencex serve`` fetching pres-rules and
pidf-manipulation documents over HTTP from a real XCAP server (Kamailio's
xcap_server on loopback), and from its own ``xcap`` table.

Every wait is bounded; the figures (fetches, cache hits, NOTIFY latency after
a document change) are printed for the closing note.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from presencex.bodies.pidf import tuple_statuses
from presencex.sip.message import Request
from tests.integration.server import UdpPeer, open_udp_peer, running_server
from tests.presence.rules_docs import rule, ruleset
from tests.sipmsg import pidf, request_bytes
from tests.xcap.test_xcap_kamailio import KAMAILIO, KamailioXcap, http_client

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
CAROL = "sip:carol@example.com"
RULES_TYPE = "application/auth-policy+xml"
PIDF_TYPE = "application/pidf+xml"
PERIOD = 0.5  # xcap_revalidate_period for these tests

skip_without_kamailio = pytest.mark.skipif(
    KAMAILIO is None, reason="the kamailio binary is not installed"
)


@pytest.fixture
def xcap(tmp_path: Path) -> Iterator[KamailioXcap]:
    workdir = tmp_path / "kamailio"
    workdir.mkdir()
    server = KamailioXcap(workdir)
    try:
        yield server
    finally:
        server.stop()


def ctl(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "presencex", "ctl", "--socket", str(sock), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result


def stats(sock: Path) -> dict[str, dict[str, object]]:
    figures = json.loads(ctl(sock, "--json", "stats").stdout)
    assert isinstance(figures, dict)
    return figures


def subscribe(peer: UdpPeer, watcher: str, call_id: str) -> bytes:
    return request_bytes(
        "SUBSCRIBE",
        ALICE,
        from_uri=watcher,
        to_uri=ALICE,
        call_id=call_id,
        expires=600,
        contact=f"sip:w@127.0.0.1:{peer.port}",
        via=f"SIP/2.0/UDP 127.0.0.1:{peer.port}",
    )


def publish(peer: UdpPeer, tuple_id: str) -> bytes:
    return request_bytes(
        "PUBLISH",
        ALICE,
        from_uri=ALICE,
        to_uri=ALICE,
        body=pidf(ALICE, tuple_id),
        content_type=PIDF_TYPE,
        expires=600,
        via=f"SIP/2.0/UDP 127.0.0.1:{peer.port}",
    )


def sub_state(notify: Request) -> str:
    return notify.headers.get("Subscription-State") or ""


async def put(url: str, body: bytes, content_type: str) -> None:
    async with http_client() as client:
        response = await client.put(url, content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text


@pytest.mark.kamailio
@skip_without_kamailio
async def test_rules_over_http_refresh_revalidation_and_outage(
    tmp_path: Path, xcap: KamailioXcap
) -> None:
    config = (
        "force_active = 0\nintegrated_xcap_server = 0\n"
        f'xcap_server = ["http://127.0.0.1:{xcap.port}/xcap-root"]\n'
        f"xcap_revalidate_period = {PERIOD}\nxcap_timeout = 1.0\n"
    )
    rules_url = xcap.uri("pres-rules", ALICE)
    with running_server(tmp_path, config) as server:
        sock = tmp_path / "ctl.sock"
        bob = await open_udp_peer(server.port)
        carol = await open_udp_peer(server.port)
        phone = await open_udp_peer(server.port)

        # No document yet (404): no rules, so the watcher is pending, no body.
        await bob.send(subscribe(bob, BOB, "bob-1"))
        (ok,), (pending,) = await bob.collect(responses=1, notifies=1)
        assert ok.status == 200
        assert sub_state(pending).startswith("pending")
        assert pending.body == b""

        # A document allowing Bob and Carol is PUT; refreshWatchers … 0 applies it.
        await put(
            rules_url, ruleset(rule("b", BOB, "allow"), rule("c", CAROL, "allow")), RULES_TYPE
        )
        started = time.monotonic()
        ctl(sock, "refreshWatchers", ALICE, "presence", "0")
        _, (active,) = await bob.collect(notifies=1)
        refresh_latency = time.monotonic() - started
        assert sub_state(active).startswith("active")

        await carol.send(subscribe(carol, CAROL, "carol-1"))
        _, (carol_first,) = await carol.collect(responses=1, notifies=1)
        assert sub_state(carol_first).startswith("active")

        # A changed document blocking Carol is picked up by revalidation alone.
        started = time.monotonic()
        await put(
            rules_url, ruleset(rule("b", BOB, "allow"), rule("c", CAROL, "block")), RULES_TYPE
        )
        _, (rejected,) = await carol.collect(notifies=1, within=10)
        revalidation_latency = time.monotonic() - started
        assert sub_state(rejected) == "terminated;reason=rejected"

        before = stats(sock)["documents"]

        # The XCAP server goes away: SIP goes on, the last good rules hold.
        xcap.stop()
        await phone.send(publish(phone, "phone"))
        (published,), _ = await phone.collect(responses=1)
        assert published.status == 200
        _, (update,) = await bob.collect(notifies=1)
        assert sub_state(update).startswith("active")
        assert tuple_statuses(update.body) == {"phone": "open"}
        await trio.sleep(3 * PERIOD)  # revalidations fail meanwhile
        await carol.send(subscribe(carol, CAROL, "carol-2"))
        (again,), (still_rejected,) = await carol.collect(responses=1, notifies=1)
        assert again.status == 200
        assert sub_state(still_rejected) == "terminated;reason=rejected"

        after = stats(sock)["documents"]
        assert int(str(after["failures"])) > int(str(before["failures"]))
        print(
            f"\nXCAP over HTTP: fetches {after['fetches']}, cache hits {after['cache_hits']}, "
            f"304s {after['not_modified']}, changes {after['changed']}, failures {after['failures']}; "
            f"NOTIFY {refresh_latency * 1000:.0f} ms after refreshWatchers, "
            f"{revalidation_latency * 1000:.0f} ms after a PUT (revalidation period {PERIOD} s)"
        )


async def test_untrusted_hosts_are_never_contacted(tmp_path: Path) -> None:
    """Whatever the SIP messages name, only the configured server is asked."""
    trusted = socket.socket()
    trusted.bind(("127.0.0.1", 0))
    trusted.listen(16)
    untrusted = socket.socket()
    untrusted.bind(("127.0.0.2", 0))
    untrusted.listen(16)
    trusted.setblocking(False)
    untrusted.setblocking(False)
    evil_port = untrusted.getsockname()[1]
    config = (
        "force_active = 0\nintegrated_xcap_server = 0\n"
        f'xcap_server = ["127.0.0.1:{trusted.getsockname()[1]}"]\n'
        "xcap_revalidate_period = 0.5\nxcap_timeout = 0.5\n"
    )
    try:
        with running_server(tmp_path, config) as server:
            peer = await open_udp_peer(server.port)
            evil = f"sip:mallory@127.0.0.2:{evil_port}"
            await peer.send(
                request_bytes(
                    "SUBSCRIBE",
                    evil,
                    from_uri=evil,
                    to_uri=evil,
                    expires=600,
                    contact=f"sip:w@127.0.0.1:{peer.port}",
                    via=f"SIP/2.0/UDP 127.0.0.1:{peer.port}",
                    extra=[("Record-Route", f"<sip:127.0.0.2:{evil_port};lr>")],
                )
            )
            (ok,), _ = await peer.collect(responses=1)
            assert ok.status == 200
            connections = {"trusted": 0, "untrusted": 0}
            with trio.move_on_after(3):
                while True:
                    for name, listener in (("trusted", trusted), ("untrusted", untrusted)):
                        try:
                            conn, _ = listener.accept()
                        except BlockingIOError:
                            continue
                        connections[name] += 1
                        conn.close()
                    await trio.sleep(0.02)
            assert connections["trusted"] > 0, "the fetcher never asked the trusted server"
            assert connections["untrusted"] == 0
    finally:
        trusted.close()
        untrusted.close()


MANIPULATION = f"""<?xml version="1.0"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{ALICE}">
  <tuple id="email"><status><basic>open</basic></status><contact>mailto:alice@example.com</contact></tuple>
</presence>""".encode()


def put_manipulation_row(db: Path, document: bytes) -> None:
    """As an integrated XCAP server writes it: doc_type 16 (pidf-manipulation)."""
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM xcap WHERE username = 'alice' AND doc_type = 16")
        conn.execute(
            "INSERT INTO xcap (username, domain, doc, doc_type, etag, source, doc_uri, port)"
            " VALUES ('alice', 'example.com', ?, 16, ?, 1, ?, 0)",
            (document, f"m{len(document)}", "pidf-manipulation/users/sip:alice@example.com/index"),
        )


async def test_pidf_manipulation_from_the_table(tmp_path: Path) -> None:
    config = "force_active = 1\npidf_manipulation = 1\nintegrated_xcap_server = 1\n"
    with running_server(tmp_path, config) as server:
        sock = tmp_path / "ctl.sock"
        put_manipulation_row(server.db_path, MANIPULATION)
        bob = await open_udp_peer(server.port)
        # No device publishes: the permanent state alone is shown.
        await bob.send(subscribe(bob, BOB, "m-1"))
        # The first NOTIFY waits (bounded) for the document: it already shows it.
        _, (first,) = await bob.collect(responses=1, notifies=1)
        assert tuple_statuses(first.body) == {"email": "open"}

        phone = await open_udp_peer(server.port)
        await phone.send(publish(phone, "phone"))
        await phone.collect(responses=1)
        _, (both,) = await bob.collect(notifies=1)
        assert tuple_statuses(both.body) == {"email": "open", "phone": "open"}

        # The document changes in the table; refreshWatchers … 2 brings it out.
        put_manipulation_row(
            server.db_path,
            MANIPULATION.replace(
                b"open</basic></status><contact>mailto", b"closed</basic></status><contact>mailto"
            ),
        )
        started = time.monotonic()
        ctl(sock, "refreshWatchers", ALICE, "presence", "2")
        _, (changed,) = await bob.collect(notifies=1)
        print(f"\npidf-manipulation change to NOTIFY: {(time.monotonic() - started) * 1000:.0f} ms")
        assert tuple_statuses(changed.body) == {"email": "closed", "phone": "open"}


@pytest.mark.kamailio
@skip_without_kamailio
async def test_pidf_manipulation_over_http(tmp_path: Path, xcap: KamailioXcap) -> None:
    config = (
        "force_active = 1\npidf_manipulation = 1\nintegrated_xcap_server = 0\n"
        f'xcap_server = ["127.0.0.1:{xcap.port}"]\nxcap_revalidate_period = {PERIOD}\n'
    )
    await put(xcap.uri("pidf-manipulation", ALICE), MANIPULATION, PIDF_TYPE)
    with running_server(tmp_path, config) as server:
        bob = await open_udp_peer(server.port)
        phone = await open_udp_peer(server.port)
        await phone.send(publish(phone, "phone"))
        await phone.collect(responses=1)
        await bob.send(subscribe(bob, BOB, "mh-1"))
        _, (first,) = await bob.collect(responses=1, notifies=1)
        assert tuple_statuses(first.body) == {"email": "open", "phone": "open"}
