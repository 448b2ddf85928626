"""force_active = 0 with rules in the xcap table, changed under a running server
and announced with ``presencex ctl refreshWatchers`` (the integrated XCAP flow)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import trio

from presencex.bodies.pidf import DATA_MODEL_NS, tuple_statuses
from presencex.bodies.watcherinfo import parse_watcherinfo
from presencex.bodies.xmlparse import parse_xml
from presencex.sip.message import Request
from tests.integration.server import UdpPeer, open_udp_peer, running_server
from tests.presence.rules_docs import rule, ruleset
from tests.sipmsg import request_bytes

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
CONFIG = (
    "force_active = 0\n"
    "integrated_xcap_server = 1\n"
    'xcapauth_userdel_reason = "probation;retry-after=30"\n'
)
PERSON_PIDF = f"""<?xml version="1.0"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="{DATA_MODEL_NS}"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="{ALICE}">
  <tuple id="phone"><status><basic>open</basic></status></tuple>
  <dm:person id="me"><rpid:activities><rpid:meeting/></rpid:activities></dm:person>
</presence>""".encode()
# Tuples only: no provide-persons, so the person (and what it says) is withheld.
SERVICES_ONLY = (
    "<cr:transformations><pr:provide-services><pr:all-services/></pr:provide-services>"
    "</cr:transformations>"
)


def put_rules(db: Path, document: bytes | None) -> None:
    """Write the row the way an integrated XCAP server (Kamailio's xcap_server) does."""
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM xcap WHERE username = 'alice' AND doc_type = 2")
        if document is not None:
            conn.execute(
                "INSERT INTO xcap (username, domain, doc, doc_type, etag, source, doc_uri, port)"
                " VALUES ('alice', 'example.com', ?, 2, ?, 1, ?, 0)",
                (
                    document,
                    f"etag-{len(document)}",
                    "/xcap-root/pres-rules/users/sip:alice@example.com/index",
                ),
            )


def refresh(sock: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "presencex",
            "ctl",
            "--socket",
            str(sock),
            "refreshWatchers",
            ALICE,
            "presence",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def subscribe(port: int, peer: UdpPeer, watcher: str, event: str = "presence") -> bytes:
    return request_bytes(
        "SUBSCRIBE",
        ALICE,
        from_uri=watcher,
        to_uri=ALICE,
        event=event,
        expires=600,
        contact=f"sip:w@127.0.0.1:{peer.port}",
        via=f"SIP/2.0/UDP 127.0.0.1:{peer.port}",
    )


def state_of(notify: Request) -> str:
    return notify.headers.get("Subscription-State") or ""


async def test_pending_then_allowed_then_revoked(tmp_path: Path) -> None:
    with running_server(tmp_path, CONFIG) as server:
        sock = tmp_path / "ctl.sock"
        alice = await open_udp_peer(server.port)
        bob = await open_udp_peer(server.port)
        await alice.send(
            request_bytes(
                "PUBLISH",
                ALICE,
                from_uri=ALICE,
                to_uri=ALICE,
                body=PERSON_PIDF,
                content_type="application/pidf+xml",
                expires=600,
                via=f"SIP/2.0/UDP 127.0.0.1:{alice.port}",
            )
        )
        await alice.collect(responses=1)
        await alice.send(subscribe(server.port, alice, ALICE, "presence.winfo"))
        await alice.collect(responses=1, notifies=1)

        await bob.send(subscribe(server.port, bob, BOB))
        (ok,), (pending,) = await bob.collect(responses=1, notifies=1)
        assert ok.status == 200
        assert state_of(pending).startswith("pending")
        assert pending.body == b""
        _, (w1,) = await alice.collect(notifies=1)
        assert [w.status for w in parse_watcherinfo(w1.body).watcher_lists[0].watchers] == [
            "pending"
        ]

        put_rules(server.db_path, ruleset(rule("bob", BOB, "allow", SERVICES_ONLY)))
        refresh(sock)
        _, (active,) = await bob.collect(notifies=1)
        assert state_of(active).startswith("active")
        assert tuple_statuses(active.body) == {"phone": "open"}
        assert parse_xml(active.body).find(f"{{{DATA_MODEL_NS}}}person") is None
        _, (w2,) = await alice.collect(notifies=1)
        (entry,) = parse_watcherinfo(w2.body).watcher_lists[0].watchers
        assert (entry.status, entry.event) == ("active", "approved")

        put_rules(server.db_path, None)
        refresh(sock)
        _, (gone,) = await bob.collect(notifies=1)
        assert state_of(gone) == "terminated;reason=probation;retry-after=30"
        _, (w3,) = await alice.collect(notifies=1)
        (entry,) = parse_watcherinfo(w3.body).watcher_lists[0].watchers
        assert (entry.status, entry.event) == ("terminated", "probation")


async def test_block_rejects_and_polite_block_shows_closed(tmp_path: Path) -> None:
    carol = "sip:carol@example.com"
    with running_server(tmp_path, CONFIG) as server:
        put_rules(
            server.db_path,
            ruleset(rule("b", BOB, "block"), rule("c", carol, "polite-block")),
        )
        phone = await open_udp_peer(server.port)
        await phone.send(
            request_bytes(
                "PUBLISH",
                ALICE,
                from_uri=ALICE,
                to_uri=ALICE,
                body=PERSON_PIDF,
                content_type="application/pidf+xml",
                expires=600,
                via=f"SIP/2.0/UDP 127.0.0.1:{phone.port}",
            )
        )
        await phone.collect(responses=1)
        bob = await open_udp_peer(server.port)
        await bob.send(subscribe(server.port, bob, BOB))
        _, (rejected,) = await bob.collect(responses=1, notifies=1)
        assert state_of(rejected) == "terminated;reason=rejected"
        # The refusal is remembered in Kamailio's watchers table (status 3,
        # terminated); that write trails the NOTIFY, so wait for it, bounded.
        rows: list[tuple[int, str | None]] = []
        with trio.move_on_after(5):
            while rows != [(3, "rejected")]:
                with sqlite3.connect(server.db_path) as conn:
                    rows = conn.execute("SELECT status, reason FROM watchers").fetchall()
                await trio.sleep(0.05)
        assert rows == [(3, "rejected")]

        watcher = await open_udp_peer(server.port)
        await watcher.send(subscribe(server.port, watcher, carol))
        _, (polite,) = await watcher.collect(responses=1, notifies=1)
        assert state_of(polite).startswith("active")
        statuses = tuple_statuses(polite.body)
        assert "phone" not in statuses
        assert set(statuses.values()) == {"closed"}
