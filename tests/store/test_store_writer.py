"""The store writer: group commit, order, faults, durability."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing

from presencex.store.load import LoadedState, load_state
from presencex.store.records import Publication
from presencex.store.writer import (
    DropPublication,
    DropSubscription,
    DropWatcher,
    PurgeExpired,
    PutPublication,
    PutSubscription,
    PutWatcher,
    StoreError,
    StoreOp,
    StoreWriter,
)

from .store_factories import make_publication, make_subscription

REPO = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0


def rows(path: str, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


async def start(nursery: trio.Nursery, writer: StoreWriter) -> StoreWriter:
    with trio.fail_after(10):
        await nursery.start(writer.serve)
    return writer


async def commit(writer: StoreWriter, ops: list[StoreOp]) -> None:
    with trio.fail_after(10):
        await writer.commit(ops)


async def test_round_trip_every_field(db_path: str) -> None:
    pubs = [
        make_publication(1),
        make_publication(2, presentity="sips:alice@example.com", event="dialog;sla"),
        make_publication(3, expires_at=math.inf, sender=""),
    ]
    subs = [
        make_subscription(1),
        make_subscription(
            2, event_id=None, reason=None, route_set=(), status="active", user_agent=""
        ),
        make_subscription(3, event="presence.winfo", status="terminated", source="udp:[::1]:5060"),
    ]
    async with trio.open_nursery() as nursery:
        writer = await start(nursery, StoreWriter(db_path))
        await commit(writer, [PutPublication(p) for p in pubs])
        await commit(writer, [PutSubscription(s) for s in subs])
        nursery.cancel_scope.cancel()
    state = load_state(db_path, NOW)
    assert state.publications == tuple(pubs)
    assert state.subscriptions == tuple(subs)


async def test_kamailio_columns_are_filled(db_path: str) -> None:
    async with trio.open_nursery() as nursery:
        writer = await start(nursery, StoreWriter(db_path))
        await commit(writer, [PutPublication(make_publication(1))])
        await commit(writer, [PutSubscription(make_subscription(1))])
        nursery.cancel_scope.cancel()
    assert rows(
        db_path,
        "SELECT username, domain, event, etag, expires, received_time, sender, priority, ruid"
        " FROM presentity",
    ) == [
        (
            "alice",
            "example.com",
            "presence",
            "etag-1",
            2_000_000_001,
            1_700_000_001,
            "sip:alice@192.0.2.1:5060",
            0,
            None,
        )
    ]
    assert rows(
        db_path,
        "SELECT presentity_uri, watcher_username, watcher_domain, to_user, to_domain,"
        " from_user, from_domain, record_route, status, socket_info, updated, updated_winfo,"
        " flags, expires FROM active_watchers",
    ) == [
        (
            "sip:alice@example.com",
            "bob",
            "example.org",
            "alice",
            "example.com",
            "bob",
            "example.org",
            '<sip:p1.example.net;lr>, "Edge, Proxy" <sip:p2.example.net;lr;x="a,b">',
            2,
            "tcp:192.0.2.10:5060",
            1_700_000_050,
            1_700_000_050,
            0,
            2_000_000_101,
        )
    ]


async def test_put_replaces_and_drop_deletes(db_path: str) -> None:
    sub = make_subscription(1)
    async with trio.open_nursery() as nursery:
        writer = await start(nursery, StoreWriter(db_path))
        await commit(writer, [PutPublication(make_publication(1)), PutSubscription(sub)])
        newer = make_publication(1, body=b"<new/>", expires_at=2_100_000_000.0, seq=9)
        refreshed = make_subscription(1, local_cseq=99, status="active", reason=None)
        await commit(writer, [PutPublication(newer), PutSubscription(refreshed)])
        state = load_state(db_path, NOW)
        assert state.publications == (newer,)
        assert state.subscriptions == (refreshed,)
        await commit(
            writer,
            [
                DropPublication("sip:alice@example.com", "presence", "etag-1"),
                DropSubscription(sub.key),
            ],
        )
        nursery.cancel_scope.cancel()
    assert load_state(db_path, NOW) == LoadedState((), ())


async def test_watchers_upsert_and_drop(db_path: str) -> None:
    async with trio.open_nursery() as nursery:
        writer = await start(nursery, StoreWriter(db_path))
        await commit(
            writer,
            [
                PutWatcher(
                    "sip:alice@example.com", "sip:bob@example.org", "presence", "pending", None, 1e9
                ),
                PutWatcher(
                    "sip:alice@example.com", "sip:eve@example.org", "presence", "pending", None, 1e9
                ),
                PutWatcher(
                    "sip:alice@example.com",
                    "sip:bob@example.org",
                    "presence",
                    "terminated",
                    "rejected",
                    1e9 + 5,
                ),
                DropWatcher("sip:alice@example.com", "sip:eve@example.org", "presence"),
            ],
        )
        nursery.cancel_scope.cancel()
    assert rows(
        db_path,
        "SELECT presentity_uri, watcher_username, watcher_domain, event, status, reason,"
        " inserted_time FROM watchers",
    ) == [("sip:alice@example.com", "bob", "example.org", "presence", 3, "rejected", 1_000_000_005)]


def test_put_watcher_refuses_unknown_status() -> None:
    with pytest.raises(ValueError, match="status"):
        PutWatcher("sip:a@b", "sip:c@d", "presence", "allowed", None, 0.0)


async def test_purge_expired(db_path: str) -> None:
    async with trio.open_nursery() as nursery:
        writer = await start(nursery, StoreWriter(db_path))
        await commit(
            writer,
            [
                PutPublication(make_publication(1, expires_at=NOW - 10)),
                PutPublication(make_publication(2, expires_at=NOW + 10)),
                PutPublication(make_publication(3, expires_at=math.inf)),  # hard state
                PutSubscription(make_subscription(1, expires_at=NOW - 1)),
                PutSubscription(make_subscription(2, expires_at=NOW + 1)),
            ],
        )
        await commit(writer, [PurgeExpired(NOW)])
        nursery.cancel_scope.cancel()
    assert rows(db_path, "SELECT etag FROM presentity ORDER BY id") == [("etag-2",), ("etag-3",)]
    assert rows(db_path, "SELECT callid FROM active_watchers") == [("call-2@192.0.2.2",)]


async def test_empty_commit_returns_at_once(db_path: str) -> None:
    writer = StoreWriter(db_path)  # not serving
    with trio.fail_after(1):
        await writer.commit([])
    assert writer.statistics().queued == 0


async def test_ops_submitted_before_serve_starts_are_committed(db_path: str) -> None:
    writer = StoreWriter(db_path)
    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as callers:
            callers.start_soon(commit, writer, [PutPublication(make_publication(1))])
            await trio.testing.wait_all_tasks_blocked()
            assert writer.statistics().queued == 1
            await start(nursery, writer)
        nursery.cancel_scope.cancel()
    assert len(load_state(db_path, NOW).publications) == 1


async def test_many_tasks_share_transactions(db_path: str) -> None:
    calls = 300
    async with trio.open_nursery() as nursery:
        writer = await start(nursery, StoreWriter(db_path, synchronous="NORMAL", max_batch=64))
        async with trio.open_nursery() as callers:
            for n in range(calls):
                callers.start_soon(commit, writer, [PutPublication(make_publication(n))])
        stats = writer.statistics()
        nursery.cancel_scope.cancel()
    assert stats.ops == calls
    assert stats.batches < calls
    assert 1 < stats.max_batch_size <= 64
    assert stats.failures == 0
    assert stats.queued == 0
    assert len(load_state(db_path, NOW).publications) == calls


async def test_submission_order_is_kept_for_one_key(db_path: str) -> None:
    pub = make_publication(1)
    sub = make_subscription(1)
    async with trio.open_nursery() as nursery:
        writer = await start(nursery, StoreWriter(db_path))
        # Within one call.
        await commit(
            writer,
            [PutPublication(pub), DropPublication(pub.presentity, pub.event, pub.etag)] * 3,
        )
        # Across calls from different tasks, queued while a batch may be in flight.
        async with trio.open_nursery() as callers:
            for _ in range(20):
                callers.start_soon(commit, writer, [PutSubscription(sub)])
                await trio.testing.wait_all_tasks_blocked()
                callers.start_soon(commit, writer, [DropSubscription(sub.key)])
                await trio.testing.wait_all_tasks_blocked()
            callers.start_soon(commit, writer, [PutPublication(pub)])
            await trio.testing.wait_all_tasks_blocked()
            callers.start_soon(
                commit, writer, [DropPublication(pub.presentity, pub.event, pub.etag)]
            )
        nursery.cancel_scope.cancel()
    assert load_state(db_path, NOW) == LoadedState((), ())


async def test_a_locked_database_fails_the_batch_and_the_writer_recovers(db_path: str) -> None:
    async with trio.open_nursery() as nursery:
        writer = await start(nursery, StoreWriter(db_path, busy_timeout=0.2))
        await commit(writer, [PutPublication(make_publication(1))])

        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            results: list[BaseException | None] = []

            async def caller(n: int) -> None:
                try:
                    await commit(writer, [PutPublication(make_publication(n))])
                except StoreError as exc:
                    results.append(exc)
                else:
                    results.append(None)

            async with trio.open_nursery() as callers:
                for n in range(2, 6):
                    callers.start_soon(caller, n)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

        assert len(results) == 4
        assert all(isinstance(r, StoreError) and "locked" in str(r) for r in results)
        assert writer.statistics().failures >= 1
        await commit(writer, [PutPublication(make_publication(7))])
        nursery.cancel_scope.cancel()
    etags = [p.etag for p in load_state(db_path, NOW).publications]
    assert etags == ["etag-1", "etag-7"]


async def test_a_read_only_file_fails_and_the_writer_recovers(db_path: str, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes to read-only files")
    async with trio.open_nursery() as nursery:
        writer = await start(nursery, StoreWriter(db_path, busy_timeout=0.2))
        await commit(writer, [PutPublication(make_publication(1))])
        os.chmod(db_path, 0o444)
        try:
            with pytest.raises(StoreError):
                await commit(writer, [PutPublication(make_publication(2))])
        finally:
            os.chmod(db_path, 0o644)
        await commit(writer, [PutPublication(make_publication(3))])
        nursery.cancel_scope.cancel()


async def test_a_bad_op_fails_only_its_caller(db_path: str) -> None:
    # A value sqlite cannot bind: a fault of the data, not of the database.
    bad = make_publication(2, body=cast(bytes, object()))
    outcome: dict[int, str] = {}

    async def caller(n: int, pub: Publication) -> None:
        try:
            await commit(writer, [PutPublication(pub)])
            outcome[n] = "ok"
        except StoreError:
            outcome[n] = "failed"

    async with trio.open_nursery() as nursery:
        writer = StoreWriter(db_path)
        async with trio.open_nursery() as callers:
            # Queued before serve() starts, so all three share the first batch.
            callers.start_soon(caller, 1, make_publication(1))
            callers.start_soon(caller, 2, bad)
            callers.start_soon(caller, 3, make_publication(3))
            await trio.testing.wait_all_tasks_blocked()
            await start(nursery, writer)
        nursery.cancel_scope.cancel()
    assert outcome == {1: "ok", 2: "failed", 3: "ok"}
    assert writer.statistics().batches == 1
    assert [p.etag for p in load_state(db_path, NOW).publications] == ["etag-1", "etag-3"]


async def test_commit_after_the_writer_stopped_raises(db_path: str) -> None:
    writer = StoreWriter(db_path)
    async with trio.open_nursery() as nursery:
        await start(nursery, writer)
        nursery.cancel_scope.cancel()
    with pytest.raises(StoreError, match="not running"):
        await commit(writer, [PurgeExpired(NOW)])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="synchronous"):
        StoreWriter("x.db", synchronous="SOMETIMES")
    with pytest.raises(ValueError, match="max_batch"):
        StoreWriter("x.db", max_batch=0)


CHILD = textwrap.dedent(
    """
    import sys
    import trio
    from presencex.store.writer import PutPublication, StoreWriter
    from presencex.store.records import Publication

    async def main(path, synchronous):
        writer = StoreWriter(path, synchronous=synchronous)
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.serve)
            n = 0
            while True:
                n += 1
                pub = Publication("sip:k@example.com", "presence", f"e{n}", 2e9, 1.7e9, b"x", "", n)
                await writer.commit([PutPublication(pub)])
                print(n, flush=True)

    trio.run(main, sys.argv[1], sys.argv[2])
    """
)


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_committed_rows_survive_kill_9(db_path: str, synchronous: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, db_path, synchronous],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    acknowledged = 0
    try:
        assert child.stdout is not None
        # readline() blocks: a timer kills a stuck child, which ends the reads.
        watchdog = threading.Timer(30, child.kill)
        watchdog.start()
        try:
            while acknowledged < 50:
                line = child.stdout.readline()
                assert line, "child ended or hung before acknowledging 50 commits"
                acknowledged = int(line)
        finally:
            watchdog.cancel()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        if child.stdout:
            child.stdout.close()
        if child.stderr:
            child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    etags = {p.etag for p in load_state(db_path, NOW).publications}
    assert {f"e{n}" for n in range(1, acknowledged + 1)} <= etags


async def test_a_cancelled_commit_still_writes(db_path: str) -> None:
    writer = StoreWriter(db_path)
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            scope.cancel()
            await writer.commit([PutPublication(make_publication(1))])
        await start(nursery, writer)
        await commit(writer, [PutPublication(make_publication(2))])
        nursery.cancel_scope.cancel()
    assert [p.etag for p in load_state(db_path, NOW).publications] == ["etag-1", "etag-2"]


async def test_stopping_finishes_the_batch_in_flight_and_fails_the_queued(db_path: str) -> None:
    writer = StoreWriter(db_path, busy_timeout=10)
    outcome: dict[int, str] = {}

    async def caller(n: int) -> None:
        try:
            await commit(writer, [PutPublication(make_publication(n))])
            outcome[n] = "ok"
        except StoreError as exc:
            outcome[n] = str(exc)

    async with trio.open_nursery() as callers:
        with trio.CancelScope() as serving:
            async with trio.open_nursery() as nursery:
                await start(nursery, writer)
                blocker = sqlite3.connect(db_path, isolation_level=None)
                try:
                    blocker.execute("BEGIN EXCLUSIVE")
                    callers.start_soon(caller, 1)  # its batch waits for the lock
                    await trio.testing.wait_all_tasks_blocked()
                    callers.start_soon(caller, 2)  # queued behind it
                    await trio.testing.wait_all_tasks_blocked()
                    assert writer.statistics().queued == 1
                    serving.cancel()
                finally:
                    blocker.execute("ROLLBACK")
                    blocker.close()
    assert outcome == {1: "ok", 2: "the store writer stopped"}
    assert [p.etag for p in load_state(db_path, NOW).publications] == ["etag-1"]
