"""A locked database is reported, answered 500, and recovered from."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from presencex.bodies.pidf import tuple_statuses
from tests.integration.server import open_udp_peer, running_server
from tests.sipmsg import pidf, request_bytes

ALICE = "sip:alice@example.com"


def publish(port: int, tuple_id: str) -> bytes:
    return request_bytes(
        "PUBLISH",
        ALICE,
        from_uri=ALICE,
        to_uri=ALICE,
        body=pidf(ALICE, tuple_id),
        content_type="application/pidf+xml",
        expires=600,
        via=f"SIP/2.0/UDP 127.0.0.1:{port}",
    )


async def test_locked_database_answers_500_then_recovers(tmp_path: Path) -> None:
    with running_server(tmp_path, "force_active = 1\ndb_busy_timeout = 0.3\n") as server:
        peer = await open_udp_peer(server.port)
        await peer.send(publish(peer.port, "before"))
        (ok,), _ = await peer.collect(responses=1)
        assert ok.status == 200

        # Another process (an integrated XCAP server, an operator's sqlite3
        # shell) holds the write lock.
        blocker = sqlite3.connect(server.db_path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            await peer.send(publish(peer.port, "during"))
            (failed,), _ = await peer.collect(responses=1, within=10)
            assert failed.status == 500
            assert "Database" in failed.reason
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

        await trio.sleep(0.1)
        watcher = await open_udp_peer(server.port)
        await watcher.send(
            request_bytes(
                "SUBSCRIBE",
                ALICE,
                from_uri="sip:bob@example.com",
                to_uri=ALICE,
                expires=600,
                contact=f"sip:bob@127.0.0.1:{watcher.port}",
                via=f"SIP/2.0/UDP 127.0.0.1:{watcher.port}",
            )
        )
        _, (first,) = await watcher.collect(responses=1, notifies=1)
        # The refused PUBLISH was taken back from memory too: never shown.
        assert tuple_statuses(first.body) == {"before": "open"}
        await peer.send(publish(peer.port, "after"))
        (again,), _ = await peer.collect(responses=1)
        assert again.status == 200
        _, (second,) = await watcher.collect(notifies=1)
        assert tuple_statuses(second.body) == {"before": "open", "after": "open"}
        log = server.log_path.read_text()
        assert "store commit failed" in log
        with sqlite3.connect(server.db_path) as db:
            count = db.execute("SELECT count(*) FROM presentity").fetchone()[0]
        assert count == 2  # "before" and "after"; the refused one left nothing
