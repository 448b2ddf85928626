"""The store writer: the only task that writes to sqlite.

Facts and invariants:
- Actors hand it ``StoreOp`` values through ``commit(ops)``, which returns once
  the transaction holding those ops has committed, so an actor persists
  before it sends the 2xx the state backs (never losing acknowledged state).
- Group commit: ``serve()`` takes everything queued (whole ``commit()`` calls,
  up to ``max_batch`` ops unless one call alone is larger) and applies it in
  ONE transaction in a worker thread. While that transaction commits, new ops
  queue up for the next one, so under load each fsync carries many ops.
- Order: ops are applied in submission order, within a call and across calls
  (batches run one after another). The ops of one ``commit()`` call are never
  split across transactions.
- Durability: ``commit()`` returns only after ``COMMIT`` succeeded at the
  configured ``PRAGMA synchronous`` level, in WAL journal mode. With WAL,
  ``FULL`` fsyncs the WAL at every commit and survives power loss;
  ``NORMAL`` fsyncs only at checkpoints, so a commit survives a process crash
  or ``kill -9`` (the WAL is in the OS page cache) but not a power loss or
  kernel crash; ``OFF`` survives neither and is for tests only.
- Faults: when a transaction fails (database locked by another program for
  longer than ``busy_timeout``, read-only file, full disk) every caller in
  that batch gets ``StoreError`` carrying sqlite's message, the failure is
  logged at ERROR, and the writer keeps serving later batches: those faults
  may go away. A failure that is about the data (a constraint, a value sqlite
  cannot bind) is isolated: each caller's ops are retried in a transaction of
  their own, so only the caller whose ops are at fault gets the error.
- Threading: sqlite calls block, so they run in ``trio.to_thread.run_sync``.
  The connection is opened, used and closed only through those calls, and
  ``serve()`` has at most one of them in flight at any time (they are not
  abandoned on cancellation, and a CapacityLimiter(1) guards them too): every
  access is serialised. trio's thread cache may run successive calls on
  different worker threads, which is safe for a serialised sqlite connection,
  so the connection is made with ``check_same_thread=False``.
- The hot path is plain ``sqlite3`` with fixed SQL text (cached as prepared
  statements by the sqlite3 module) and ``executemany`` over runs of
  consecutive ops of one kind; sqlite-utils is only used for schema
  inspection (``schema.ensure_schema``), where its per-call overhead does not
  matter.
- Cancelling a waiting ``commit()`` stops the wait, not the write: ops already
  submitted are still applied.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar, assert_never

# trio 0.22 ships no py.typed (typing arrived in 0.23); its names are Any here.
import trio

from presencex.store.records import STATUS_CODES, DialogKey, Publication, Subscription
from presencex.store.schema import (
    HARD_STATE_EXPIRES,
    ensure_schema,
    join_route_set,
    split_uri,
)

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
# How long a transaction waits for another program's lock (Kamailio, an XCAP
# server, the sqlite3 shell) before it fails with "database is locked".
DEFAULT_BUSY_TIMEOUT = 5.0


class StoreError(Exception):
    """A transaction failed; the message is sqlite's (or the writer's) reason."""


@dataclass(frozen=True, slots=True)
class PutPublication:
    """Insert, or replace the row with the same (username, domain, event, etag)."""

    pub: Publication


@dataclass(frozen=True, slots=True)
class DropPublication:
    presentity: str
    event: str
    etag: str


@dataclass(frozen=True, slots=True)
class PutSubscription:
    """Insert, or update the row of the same dialog (callid, to_tag, from_tag)."""

    sub: Subscription


@dataclass(frozen=True, slots=True)
class DropSubscription:
    key: DialogKey


@dataclass(frozen=True, slots=True)
class PutWatcher:
    """A row of Kamailio's ``watchers`` table: a watcher that is pending or was
    refused (what presence.winfo reports for it), keyed by (presentity_uri,
    watcher user, watcher domain, event)."""

    presentity: str
    watcher_uri: str
    event: str
    status: str  # a key of records.STATUS_CODES
    reason: str | None
    inserted_at: float

    def __post_init__(self) -> None:
        if self.status not in STATUS_CODES:
            raise ValueError(f"watcher status {self.status!r} is not one of {sorted(STATUS_CODES)}")


@dataclass(frozen=True, slots=True)
class DropWatcher:
    presentity: str
    watcher_uri: str
    event: str


@dataclass(frozen=True, slots=True)
class PurgeExpired:
    """Delete presentity and active_watchers rows with ``expires < now``
    (hard-state presentity rows, expires <= 0, never expire, as in Kamailio)."""

    now: float


StoreOp = (
    PutPublication
    | DropPublication
    | PutSubscription
    | DropSubscription
    | PutWatcher
    | DropWatcher
    | PurgeExpired
)


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    batches: int  # transactions attempted (isolation retries not counted)
    ops: int  # ops in those batches
    max_batch_size: int  # ops
    last_batch_size: int  # ops
    commit_seconds_total: float  # wall time in the worker thread, BEGIN..COMMIT
    commit_seconds_max: float
    failures: int  # batches that failed, wholly or for some callers
    queued: int  # ops submitted and not yet taken into a batch


# Kamailio's columns are int epoch seconds. Expiry rounds up, so a record is
# never dropped before its time; arrival and update times round down.
def _expires(at: float) -> int:
    return HARD_STATE_EXPIRES if math.isinf(at) else math.ceil(at)


_PUT_PUBLICATION = """
INSERT INTO presentity (username, domain, event, etag, expires, received_time, body, sender,
                        priority, px_seq, px_presentity_uri)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)
ON CONFLICT (username, domain, event, etag) DO UPDATE SET
    expires = excluded.expires, received_time = excluded.received_time, body = excluded.body,
    sender = excluded.sender, px_seq = excluded.px_seq,
    px_presentity_uri = excluded.px_presentity_uri
"""
_DROP_PUBLICATION = (
    "DELETE FROM presentity WHERE username = ? AND domain = ? AND event = ? AND etag = ?"
)

_SUBSCRIPTION_COLUMNS = (
    "presentity_uri",
    "watcher_username",
    "watcher_domain",
    "to_user",
    "to_domain",
    "event",
    "event_id",
    "to_tag",
    "from_tag",
    "callid",
    "local_cseq",
    "remote_cseq",
    "contact",
    "record_route",
    "expires",
    "status",
    "reason",
    "version",
    "socket_info",
    "local_contact",
    "from_user",
    "from_domain",
    "updated",
    "updated_winfo",
    "flags",
    "user_agent",
    "px_source",
    "px_watcher_uri",
    "px_to_uri",
)
_KEY_COLUMNS = ("callid", "to_tag", "from_tag")
_PUT_SUBSCRIPTION = (
    f"INSERT INTO active_watchers ({', '.join(_SUBSCRIPTION_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in _SUBSCRIPTION_COLUMNS)})"
    f" ON CONFLICT ({', '.join(_KEY_COLUMNS)}) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _SUBSCRIPTION_COLUMNS if c not in _KEY_COLUMNS)
)
_DROP_SUBSCRIPTION = "DELETE FROM active_watchers WHERE callid = ? AND to_tag = ? AND from_tag = ?"

_PUT_WATCHER = """
INSERT INTO watchers (presentity_uri, watcher_username, watcher_domain, event, status, reason,
                      inserted_time)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (presentity_uri, watcher_username, watcher_domain, event) DO UPDATE SET
    status = excluded.status, reason = excluded.reason, inserted_time = excluded.inserted_time
"""
_DROP_WATCHER = (
    "DELETE FROM watchers"
    " WHERE presentity_uri = ? AND watcher_username = ? AND watcher_domain = ? AND event = ?"
)
_PURGE_PRESENTITY = "DELETE FROM presentity WHERE expires > 0 AND expires < ?"
_PURGE_SUBSCRIPTIONS = "DELETE FROM active_watchers WHERE expires < ?"

Row = tuple[object, ...]


def _publication_row(pub: Publication) -> Row:
    user, domain = split_uri(pub.presentity)
    return (
        user,
        domain,
        pub.event,
        pub.etag,
        _expires(pub.expires_at),
        math.floor(pub.received_at),
        pub.body,
        pub.sender,
        pub.seq,
        pub.presentity,
    )


def _subscription_row(sub: Subscription) -> Row:
    watcher_user, watcher_domain = split_uri(sub.watcher_uri)
    to_user, to_domain = split_uri(sub.to_uri)
    updated = math.floor(sub.updated_at)
    return (
        sub.presentity,
        watcher_user,
        watcher_domain,
        to_user,
        to_domain,
        sub.event,
        sub.event_id,
        sub.key.to_tag,
        sub.key.from_tag,
        sub.key.call_id,
        sub.local_cseq,
        sub.remote_cseq,
        sub.contact,
        join_route_set(sub.route_set),
        _expires(sub.expires_at),
        STATUS_CODES[sub.status],
        sub.reason,
        sub.version,
        sub.local_socket,
        sub.local_contact,
        watcher_user,  # from_user: the From URI is the watcher's
        watcher_domain,
        updated,
        updated,  # updated_winfo
        0,  # flags
        sub.user_agent,
        sub.source,
        sub.watcher_uri,
        sub.to_uri,
    )


def _statement(op: StoreOp) -> tuple[str, Row]:
    match op:
        case PutPublication(pub):
            return _PUT_PUBLICATION, _publication_row(pub)
        case DropPublication(presentity, event, etag):
            user, domain = split_uri(presentity)
            return _DROP_PUBLICATION, (user, domain, event, etag)
        case PutSubscription(sub):
            return _PUT_SUBSCRIPTION, _subscription_row(sub)
        case DropSubscription(key):
            return _DROP_SUBSCRIPTION, (key.call_id, key.to_tag, key.from_tag)
        case PutWatcher(presentity, watcher_uri, event, status, reason, inserted_at):
            user, domain = split_uri(watcher_uri)
            row = (presentity, user, domain, event, STATUS_CODES[status], reason)
            return _PUT_WATCHER, (*row, math.floor(inserted_at))
        case DropWatcher(presentity, watcher_uri, event):
            user, domain = split_uri(watcher_uri)
            return _DROP_WATCHER, (presentity, user, domain, event)
        case PurgeExpired():
            raise AssertionError("PurgeExpired is applied by _apply itself")
        case _:
            assert_never(op)


def _apply(conn: sqlite3.Connection, ops: Sequence[StoreOp]) -> None:
    """Apply ops in order in one transaction (worker thread). Raises on failure,
    after rolling back."""
    if conn.in_transaction:  # a ROLLBACK that failed last time
        conn.execute("ROLLBACK")
    conn.execute("BEGIN IMMEDIATE")
    try:
        run_sql = ""
        run_rows: list[Row] = []
        for op in ops:
            if isinstance(op, PurgeExpired):
                if run_rows:
                    conn.executemany(run_sql, run_rows)
                    run_rows = []
                conn.execute(_PURGE_PRESENTITY, (op.now,))
                conn.execute(_PURGE_SUBSCRIPTIONS, (op.now,))
                continue
            sql, row = _statement(op)
            if sql is not run_sql and run_rows:
                conn.executemany(run_sql, run_rows)
                run_rows = []
            run_sql = sql
            run_rows.append(row)
        if run_rows:
            conn.executemany(run_sql, run_rows)
        conn.execute("COMMIT")
    except Exception:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _is_data_fault(exc: Exception) -> bool:
    """True when the failure is about the ops themselves, not the database.

    OperationalError (locks, read-only file, I/O errors, a full disk) and other
    DatabaseErrors (a corrupt file) would fail the same way for each caller
    alone, after waiting out the busy timeout once per caller: not retried.
    """
    data_errors = (
        sqlite3.IntegrityError,
        sqlite3.DataError,
        sqlite3.InterfaceError,
        sqlite3.ProgrammingError,
    )
    return isinstance(exc, data_errors) or not isinstance(exc, sqlite3.Error)


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _apply_batch(
    conn: sqlite3.Connection, calls: list[Sequence[StoreOp]]
) -> tuple[list[str | None], float]:
    """Worker thread: one transaction for the whole batch; on a data fault,
    one transaction per call. Returns each call's error (None when committed)
    and the seconds spent."""
    started = time.perf_counter()
    try:
        _apply(conn, [op for call in calls for op in call])
        errors: list[str | None] = [None] * len(calls)
    except Exception as exc:
        if len(calls) == 1 or not _is_data_fault(exc):
            errors = [_describe(exc)] * len(calls)
        else:
            errors = []
            for call in calls:
                try:
                    _apply(conn, call)
                    errors.append(None)
                except Exception as exc_one:
                    errors.append(_describe(exc_one))
    return errors, time.perf_counter() - started


class _Waiter:
    __slots__ = ("done", "error", "ops")

    def __init__(self, ops: Sequence[StoreOp]) -> None:
        self.ops = ops
        self.done = trio.Event()
        self.error: str | None = None


class StoreWriter:
    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "FULL",
        max_batch: int = 2000,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        gather: float = 0.0,
    ) -> None:
        level = synchronous.upper()
        if level not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if busy_timeout < 0:
            raise ValueError("busy_timeout must not be negative")
        self._path = path
        self._synchronous = level
        self._max_batch = max_batch
        self._busy_timeout = busy_timeout
        self._gather = gather
        self._queue: deque[_Waiter] = deque()
        # The batch taken from the queue and not yet answered; if serve()
        # unwinds before its thread call started, _stop() answers it.
        self._batch: list[_Waiter] = []
        self._queued_ops = 0
        self._wake = trio.Event()
        self._state = "new"  # -> "serving" -> "stopped"
        self._limiter = trio.CapacityLimiter(1)
        self._batches = 0
        self._ops = 0
        self._max_batch_size = 0
        self._last_batch_size = 0
        self._commit_total = 0.0
        self._commit_max = 0.0
        self._failures = 0

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            batches=self._batches,
            ops=self._ops,
            max_batch_size=self._max_batch_size,
            last_batch_size=self._last_batch_size,
            commit_seconds_total=self._commit_total,
            commit_seconds_max=self._commit_max,
            failures=self._failures,
            queued=self._queued_ops,
        )

    async def commit(self, ops: Sequence[StoreOp]) -> None:
        """Return once a transaction holding ``ops`` has committed; raise
        ``StoreError`` if it failed or the writer has stopped. Ops submitted
        before ``serve()`` starts wait for it."""
        if not ops:
            return
        if self._state == "stopped":
            raise StoreError("the store writer is not running")
        waiter = _Waiter(tuple(ops))  # a snapshot: the caller may reuse its list
        self._queue.append(waiter)
        self._queued_ops += len(ops)
        self._wake.set()
        await waiter.done.wait()
        if waiter.error is not None:
            raise StoreError(waiter.error)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the database, create what the schema lacks, then commit batches forever."""
        if self._state != "new":
            raise RuntimeError("StoreWriter.serve() runs once")
        self._state = "serving"
        conn: sqlite3.Connection | None = None
        try:
            conn = await self._run_sync(self._open)
            task_status.started()
            while True:
                if not self._queue:
                    self._wake = trio.Event()
                    await self._wake.wait()
                if self._gather > 0:
                    # Group commit: a moment for the other actors woken by
                    # the same burst of datagrams to add their ops, so one
                    # transaction (one fsync, one thread hand-off) serves many.
                    await trio.sleep(self._gather)
                self._batch = self._take_batch()
                await self._commit_batch(conn, self._batch)
                self._batch = []
        finally:
            # Callers still queued learn that their ops will not be written;
            # a batch in flight has already finished (its thread call is not
            # abandoned), so its callers have their outcome.
            self._stop("the store writer stopped")
            if conn is not None:
                with trio.CancelScope(shield=True):
                    await self._run_sync(conn.close)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # see the module docstring: access is serialised
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(mode).lower() != "wal":
                logger.warning("store %s: journal_mode is %s, not WAL", self._path, mode)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            ensure_schema(conn)
        except Exception:
            conn.close()
            raise
        return conn

    def _take_batch(self) -> list[_Waiter]:
        batch = [self._queue.popleft()]
        size = len(batch[0].ops)
        while self._queue and size + len(self._queue[0].ops) <= self._max_batch:
            waiter = self._queue.popleft()
            size += len(waiter.ops)
            batch.append(waiter)
        self._queued_ops -= size
        return batch

    async def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Waiter]) -> None:
        size = sum(len(w.ops) for w in batch)
        calls = [w.ops for w in batch]
        # Once the thread call has started it is not abandoned on cancellation:
        # the batch commits (or fails) and its waiters learn the outcome
        # before serve() unwinds. A cancellation before it starts (the
        # limiter's checkpoint) leaves the batch to _stop().
        errors, seconds = await self._run_sync(lambda: _apply_batch(conn, calls))
        self._batches += 1
        self._ops += size
        self._last_batch_size = size
        self._max_batch_size = max(self._max_batch_size, size)
        self._commit_total += seconds
        self._commit_max = max(self._commit_max, seconds)
        failed = [e for e in errors if e is not None]
        if failed:
            self._failures += 1
            logger.error(
                "store %s: commit FAILED for %d of %d callers (%d ops in the batch): %s",
                self._path,
                len(failed),
                len(batch),
                size,
                failed[0],
            )
        for waiter, error in zip(batch, errors, strict=True):
            waiter.error = error
            waiter.done.set()

    def _stop(self, reason: str) -> None:
        self._state = "stopped"
        for waiter in self._batch:
            if not waiter.done.is_set():
                waiter.error = reason
                waiter.done.set()
        self._batch = []
        while self._queue:
            waiter = self._queue.popleft()
            waiter.error = reason
            waiter.done.set()
        self._queued_ops = 0

    async def _run_sync(self, fn: Callable[[], _T]) -> _T:
        result: _T = await trio.to_thread.run_sync(fn, limiter=self._limiter)
        return result
