"""Issue 5 end to end, ``pidf_manipulation = 1`` (RFC 4827): the presentity's
pidf-manipulation document is permanent state, aggregated with what devices
publish, from the ``xcap`` table (``integrated_xcap_server = 1``, doc_type 16)
and over HTTP from Kamailio's xcap_server (AUID pidf-manipulation).

Each source is checked the same way, over real UDP to a server process:
- the document alone (nobody publishes) gives a watcher a NOTIFY with its
  tuples, already in the first NOTIFY;
- a device publishing too: both in one document;
- a changed document reaches the watcher with ``refreshWatchers … 2`` (timed
  over several repetitions), and so does a removed one;
- over HTTP, a change is also found by revalidation alone, and the
  pres-rules document of the same server decides who may see it.

Figures are printed with the prefix ``[issue 5 figures]`` (``pytest -s``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from presencex.bodies.pidf import tuple_statuses
from presencex.bodies.xmlparse import parse_xml
from tests.integration.server import open_udp_peer, running_server
from tests.integration.xcap_support import (
    ALICE,
    PIDF_TYPE,
    RULES_TYPE,
    Latencies,
    command_then_notify,
    document_stats,
    kamailio_xcap_server,
    notifies_within,
    publish,
    report,
    skip_without_kamailio,
    sub_state,
    subscribe,
    xcap_delete,
    xcap_put,
)
from tests.presence.rules_docs import rule, ruleset
from tests.xcap.test_xcap_kamailio import KamailioXcap

BOB = "sip:bob@example.com"
PIDF_NS = "urn:ietf:params:xml:ns:pidf"
LONG_PERIOD = 60.0  # only the refresh command may explain a NOTIFY
PERIOD = 1.0  # where revalidation is under test
REPETITIONS = 5


def manipulation(basic: str = "open") -> bytes:
    """A permanent state: reachable by e-mail (RFC 4827 §1's example kind)."""
    return (
        f'<?xml version="1.0"?><presence xmlns="{PIDF_NS}" entity="{ALICE}">'
        f'<tuple id="email"><status><basic>{basic}</basic></status>'
        "<contact>mailto:alice@example.com</contact></tuple></presence>"
    ).encode()


@pytest.fixture
def kamailio_xcap(tmp_path: Path) -> Iterator[KamailioXcap]:
    with kamailio_xcap_server(tmp_path) as server:
        yield server


# A document source under test: write(document) puts it in place (None removes it).
Write = Callable[[bytes | None], Awaitable[None]]


def table_writer(db: Path) -> Write:
    """As an integrated XCAP server writes the row: doc_type 16, a new etag."""

    async def write(document: bytes | None) -> None:
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM xcap WHERE username = 'alice' AND doc_type = 16")
            if document is not None:
                conn.execute(
                    "INSERT INTO xcap (username, domain, doc, doc_type, etag, source, doc_uri,"
                    " port) VALUES ('alice', 'example.com', ?, 16, ?, 1, ?, 0)",
                    (
                        document,
                        f"m-{time.monotonic_ns()}",
                        "/xcap-root/pidf-manipulation/users/sip:alice@example.com/index",
                    ),
                )

    return write


def http_writer(xcap: KamailioXcap) -> Write:
    url = xcap.uri("pidf-manipulation", ALICE)

    async def write(document: bytes | None) -> None:
        if document is None:
            await xcap_delete(url)
        else:
            await xcap_put(url, document, PIDF_TYPE)

    return write


async def check_manipulation(tmp_path: Path, port: int, write: Write, source: str) -> None:
    """The whole flow against a running server whose document source is ``write``."""
    sock = tmp_path / "ctl.sock"
    bob, phone = await open_udp_peer(port), await open_udp_peer(port)

    # The document alone: nobody publishes, the first NOTIFY already shows it.
    await bob.send(subscribe(bob, BOB, "bob-1"))
    (ok,), (first,) = await bob.collect(responses=1, notifies=1)
    assert ok.status == 200
    assert sub_state(first).startswith("active")
    assert tuple_statuses(first.body) == {"email": "open"}

    # A device publishes too: both in one document.
    await phone.send(publish(phone))
    (published,), _ = await phone.collect(responses=1)
    assert published.status == 200
    _, (both,) = await bob.collect(notifies=1)
    assert tuple_statuses(both.body) == {"email": "open", "phone": "open"}
    root = parse_xml(both.body)
    assert root.tag == f"{{{PIDF_NS}}}presence"
    assert root.get("entity") == ALICE

    # The document changes; refreshWatchers … 2 brings it out, sent by
    # ``presencex ctl`` and, without its start-up, on the socket directly.
    with_ctl = Latencies(f"{source}: write + `presencex ctl refreshWatchers … 2` → NOTIFY")
    with_rpc = Latencies(f"{source}: write + JSON-RPC refreshWatchers … 2 → NOTIFY")
    for i in range(2 * REPETITIONS):
        basic = "closed" if i % 2 == 0 else "open"
        use_ctl = i < REPETITIONS
        started = time.monotonic()
        await write(manipulation(basic))
        changed, _ = await command_then_notify(
            bob, sock, ("refreshWatchers", ALICE, "presence", "2"), in_process=not use_ctl
        )
        (with_ctl if use_ctl else with_rpc).add(started)
        assert tuple_statuses(changed.body) == {"email": basic, "phone": "open"}

    # Removed: the permanent state is gone, the device's stays.
    await write(None)
    gone, _ = await command_then_notify(bob, sock, ("refreshWatchers", ALICE, "presence", "2"))
    assert tuple_statuses(gone.body) == {"phone": "open"}

    documents = document_stats(sock)
    report(f"{source}: " + ", ".join(f"{k} {v}" for k, v in documents.items()))
    report(with_ctl.summary())
    report(with_rpc.summary())


async def test_pidf_manipulation_from_the_table(tmp_path: Path) -> None:
    config = "force_active = 1\npidf_manipulation = 1\nintegrated_xcap_server = 1\n"
    with running_server(tmp_path, config) as server:
        write = table_writer(server.db_path)
        await write(manipulation())
        await check_manipulation(tmp_path, server.port, write, "xcap table (doc_type 16)")


@pytest.mark.kamailio
@skip_without_kamailio
async def test_pidf_manipulation_over_http(tmp_path: Path, kamailio_xcap: KamailioXcap) -> None:
    config = (
        "force_active = 1\npidf_manipulation = 1\nintegrated_xcap_server = 0\n"
        f'xcap_server = ["127.0.0.1:{kamailio_xcap.port}"]\n'
        f"xcap_revalidate_period = {LONG_PERIOD}\nxcap_timeout = 1.0\n"
    )
    write = http_writer(kamailio_xcap)
    await write(manipulation())
    with running_server(tmp_path, config) as server:
        await check_manipulation(
            tmp_path, server.port, write, "HTTP from Kamailio xcap_server (pidf-manipulation)"
        )


@pytest.mark.kamailio
@skip_without_kamailio
async def test_pidf_manipulation_and_rules_revalidated_over_http(
    tmp_path: Path, kamailio_xcap: KamailioXcap
) -> None:
    """Both documents from one XCAP server, with authorization on: the
    permanent state is what an allowed watcher sees, and a change of it is
    found by revalidation without any command."""
    config = (
        "force_active = 0\npidf_manipulation = 1\nintegrated_xcap_server = 0\n"
        f'xcap_server = ["http://127.0.0.1:{kamailio_xcap.port}/xcap-root"]\n'
        f"xcap_revalidate_period = {PERIOD}\nxcap_timeout = 1.0\n"
    )
    write = http_writer(kamailio_xcap)
    await write(manipulation())
    await xcap_put(
        kamailio_xcap.uri("pres-rules", ALICE), ruleset(rule("b", BOB, "allow")), RULES_TYPE
    )
    with running_server(tmp_path, config) as server:
        sock = tmp_path / "ctl.sock"
        bob, eve = await open_udp_peer(server.port), await open_udp_peer(server.port)
        await bob.send(subscribe(bob, BOB, "bob-1"))
        _, (first,) = await bob.collect(responses=1, notifies=1)
        assert sub_state(first).startswith("active")
        assert tuple_statuses(first.body) == {"email": "open"}
        # No rule for Eve: pending, and the permanent state is not shown to her.
        await eve.send(subscribe(eve, "sip:eve@example.com", "eve-1"))
        _, (eve_first,) = await eve.collect(responses=1, notifies=1)
        assert sub_state(eve_first).startswith("pending")
        assert eve_first.body == b""

        revalidation = Latencies(
            f"pidf-manipulation PUT → NOTIFY by revalidation (period {PERIOD} s)"
        )
        for i in range(3):
            basic = "closed" if i % 2 == 0 else "open"
            started = time.monotonic()
            await write(manipulation(basic))
            _, (changed,) = await bob.collect(notifies=1, within=5 * PERIOD + 5)
            revalidation.add(started)
            assert tuple_statuses(changed.body) == {"email": basic}
        # Eve, pending, was told nothing of the changes: she sees no state.
        assert await notifies_within(eve, 0.2) == []

        documents = document_stats(sock)
        report("HTTP, both documents: " + ", ".join(f"{k} {v}" for k, v in documents.items()))
        report(revalidation.summary())


async def test_a_fetch_shows_the_permanent_state(tmp_path: Path) -> None:
    config = "force_active = 1\npidf_manipulation = 1\nintegrated_xcap_server = 1\n"
    with running_server(tmp_path, config) as server:
        await table_writer(server.db_path)(manipulation())
        bob = await open_udp_peer(server.port)
        await bob.send(subscribe(bob, BOB, "fetch-1", expires=0))
        (ok,), (notify,) = await bob.collect(responses=1, notifies=1)
        assert ok.status == 200
        assert sub_state(notify) == "terminated;reason=timeout"
        assert tuple_statuses(notify.body) == {"email": "open"}
