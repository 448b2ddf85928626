"""Integrated mode: documents from the xcap table, rows written the way Kamailio's xcap_server writes them."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from presencex.config import config_from_mapping
from presencex.presence.messages import RulesChanged
from presencex.store.load import PIDF_MANIPULATION, PRES_RULES
from presencex.store.schema import create_sql
from presencex.xcap.table import XcapTable, table_from_config

from .conftest import ALICE, RULES_V1, RULES_V2, Deliveries, settle, wait_for

ALICE_URI = "/xcap-root/pres-rules/users/sip:alice@example.com/index"


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "presencex.db")
    conn = sqlite3.connect(path)
    try:
        conn.executescript(create_sql())
    finally:
        conn.close()
    return path


def xcap_put(path: str, username: str, domain: str, doc_type: int, doc: bytes, etag: str) -> None:
    """What xcaps_put does: update the row of that doc_uri, else insert one."""
    doc_uri = f"/xcap-root/{'pres-rules' if doc_type == PRES_RULES else 'pidf-manipulation'}/users/sip:{username}@{domain}/index"
    conn = sqlite3.connect(path)
    try:
        with conn:
            updated = conn.execute(
                "UPDATE xcap SET doc = ?, etag = ?, source = 0, port = 0 WHERE doc_uri = ?",
                (doc, etag, doc_uri),
            ).rowcount
            if not updated:
                conn.execute(
                    "INSERT INTO xcap (username, domain, doc, doc_type, etag, source, doc_uri, port)"
                    " VALUES (?, ?, ?, ?, ?, 0, ?, 0)",
                    (username, domain, doc, doc_type, etag, doc_uri),
                )
    finally:
        conn.close()


def xcap_delete(path: str, username: str, domain: str, doc_type: int) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(
                "DELETE FROM xcap WHERE username = ? AND domain = ? AND doc_type = ?",
                (username, domain, doc_type),
            )
    finally:
        conn.close()


@asynccontextmanager
async def running_table(
    path: str, deliver: Callable[[str, RulesChanged], None], table: str = "xcap"
) -> AsyncIterator[XcapTable]:
    source = XcapTable(path, table, deliver=deliver, min_backoff=0.01, max_backoff=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(source.serve)
        yield source
        nursery.cancel_scope.cancel()


async def test_request_answers_with_the_row_and_refresh_picks_up_a_change(db: str) -> None:
    xcap_put(db, "alice", "example.com", PRES_RULES, RULES_V1, "sr-1")
    deliveries = Deliveries()
    async with running_table(db, deliveries) as source:
        source.request_nowait(ALICE, "pres-rules")
        assert await deliveries.next(within=5) == (
            ALICE,
            RulesChanged("pres-rules", RULES_V1, "sr-1"),
        )
        # What an integrated XCAP server does on PUT, then refreshWatchers.
        xcap_put(db, "alice", "example.com", PRES_RULES, RULES_V2, "sr-2")
        source.request_nowait(ALICE, "pres-rules", revalidate=True)
        assert await deliveries.next(within=5) == (
            ALICE,
            RulesChanged("pres-rules", RULES_V2, "sr-2"),
        )
        # An explicit revalidation answers even when nothing changed.
        source.request_nowait(ALICE, "pres-rules", revalidate=True)
        assert await deliveries.next(within=5) == (
            ALICE,
            RulesChanged("pres-rules", RULES_V2, "sr-2"),
        )
        # A deleted document is "no document".
        xcap_delete(db, "alice", "example.com", PRES_RULES)
        source.request_nowait(ALICE, "pres-rules", revalidate=True)
        assert await deliveries.next(within=5) == (ALICE, RulesChanged("pres-rules", None, None))
        stats = source.statistics()
        assert (stats["reads"], stats["deliveries"], stats["changed"], stats["failures"]) == (
            4,
            4,
            2,
            0,
        )


async def test_no_row_is_none_and_doc_types_are_kept_apart(db: str) -> None:
    xcap_put(db, "alice", "example.com", PIDF_MANIPULATION, b"<presence/>", "p-1")
    xcap_put(db, "alice", "example.org", PRES_RULES, RULES_V1, "other-domain")
    deliveries = Deliveries()
    async with running_table(db, deliveries) as source:
        source.request_nowait(ALICE, "pres-rules")
        assert await deliveries.next(within=5) == (ALICE, RulesChanged("pres-rules", None, None))
        source.request_nowait(ALICE, "pidf-manipulation")
        assert await deliveries.next(within=5) == (
            ALICE,
            RulesChanged("pidf-manipulation", b"<presence/>", "p-1"),
        )
        # A second plain request (an actor started afresh) is answered too.
        source.request_nowait(ALICE, "pidf-manipulation")
        assert (await deliveries.next(within=5))[1].etag == "p-1"
        with pytest.raises(ValueError, match="unknown document"):
            source.request_nowait(ALICE, "rls-services")


async def test_a_burst_of_requests_is_read_in_one_batch(db: str) -> None:
    for i in range(50):
        xcap_put(db, f"u{i}", "example.com", PRES_RULES, RULES_V1, f"e{i}")
    deliveries = Deliveries()
    async with running_table(db, deliveries) as source:
        for i in range(50):
            source.request_nowait(f"sip:u{i}@example.com", "pres-rules")
        source.request_nowait("sip:u0@example.com", "pres-rules")  # merged with the first
        got = {await deliveries.next(within=5) for _ in range(50)}
        assert {user: m.etag for user, m in got} == {
            f"sip:u{i}@example.com": f"e{i}" for i in range(50)
        }
        await settle()
        assert deliveries.drain() == []


async def test_a_failed_read_delivers_nothing_and_is_retried(db: str) -> None:
    deliveries = Deliveries()
    async with running_table(db, deliveries, table="xcap_docs") as source:
        source.request_nowait(ALICE, "pres-rules")
        # Real time: reads run in worker threads, which an autojump clock
        # would not wait for.  Back-off 0.01, 0.02, 0.04 s.
        await wait_for(lambda: source.statistics()["failures"] >= 3)
        assert deliveries.all == []
        conn = sqlite3.connect(db)
        try:
            conn.execute("CREATE TABLE xcap_docs AS SELECT * FROM xcap")
            conn.execute(
                "INSERT INTO xcap_docs (id, username, domain, doc, doc_type, etag, source, doc_uri, port)"
                " VALUES (1, 'alice', 'example.com', ?, 2, 'sr-9', 0, ?, 0)",
                (RULES_V1, ALICE_URI),
            )
            conn.commit()
        finally:
            conn.close()
        assert await deliveries.next(within=5) == (
            ALICE,
            RulesChanged("pres-rules", RULES_V1, "sr-9"),
        )


async def test_a_full_inbox_is_retried(db: str) -> None:
    xcap_put(db, "alice", "example.com", PRES_RULES, RULES_V1, "sr-1")
    deliveries = Deliveries()
    refusals = [1, 1]

    def deliver(user: str, message: RulesChanged) -> None:
        if refusals:
            refusals.pop()
            raise trio.WouldBlock
        deliveries(user, message)

    async with running_table(db, deliver) as source:
        source.request_nowait(ALICE, "pres-rules")
        assert (await deliveries.next(within=5))[1].etag == "sr-1"
        assert source.statistics()["pending_deliveries"] == 0


async def test_table_from_config(tmp_path: Path) -> None:
    path = tmp_path / "px.db"
    config = config_from_mapping(
        {"integrated_xcap_server": 1, "db_url": f"sqlite:///{path}", "xcap_table": "xcap"}
    )
    conn = sqlite3.connect(path)
    try:
        conn.executescript(create_sql())
    finally:
        conn.close()
    xcap_put(str(path), "alice", "example.com", PRES_RULES, RULES_V1, "sr-1")
    deliveries = Deliveries()
    source = table_from_config(config, deliveries)
    async with trio.open_nursery() as nursery:
        await nursery.start(source.serve)
        source.request_nowait(ALICE, "pres-rules")
        assert (await deliveries.next(within=5))[1].document == RULES_V1
        nursery.cancel_scope.cancel()
