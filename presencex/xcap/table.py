"""Documents from the ``xcap`` table (``integrated_xcap_server = 1``).

Facts and invariants:
- An integrated XCAP server (Kamailio's xcap_server, OpenXCAP) writes the
  documents into our own database; rows are looked up by (username, domain,
  doc_type) with Kamailio's doc_type bits (FIELD-NOTES.md), never by doc_uri.
  Username and domain come from the presentity's AOR.
- The table is read only when asked: an actor's request (its first need of a
  document) or ``revalidate=True`` after refreshWatchers, which is how an
  integrated XCAP server announces a change.  Every request is answered with
  the row as it is now (``document=None``: no row), the same promise the
  HTTP fetcher makes, so an actor never waits for an answer that will not
  come.
- Reads run in a worker thread, one read-only connection per batch of queued
  requests, so sqlite never blocks the event loop.  A failed read (a busy or
  missing database, a wrong ``xcap_table``) delivers nothing: the request is
  retried with back-off and the actor keeps what it had.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from presencex.config import Config
from presencex.presence.messages import RulesChanged
from presencex.store.load import BUSY_TIMEOUT, PIDF_MANIPULATION, PRES_RULES, read_xcap
from presencex.xcap.cache import Deliver, DocumentKey, Outbox, split_aor

logger = logging.getLogger(__name__)

DEFAULT_DOC_TYPES: Mapping[str, int] = {
    "pres-rules": PRES_RULES,
    "pidf-manipulation": PIDF_MANIPULATION,
}
# Requests read per worker-thread call: enough to drain a burst in a few
# calls, few enough that one call stays short.
BATCH = 256
# The first retry after a failed read; it doubles up to MAX_BACKOFF.
MIN_BACKOFF = 0.5
MAX_BACKOFF = 60.0
# Documents whose last delivery is remembered (for the "changed" figure only).
MAX_REMEMBERED = 20_000

_Row = tuple[bytes, str] | None


@dataclass(slots=True)
class _Queued:
    revalidate: bool
    not_before: float = -math.inf
    failures: int = 0


class XcapTable:
    def __init__(
        self,
        path: str,
        table: str,
        *,
        deliver: Deliver,
        doc_types: Mapping[str, int] = DEFAULT_DOC_TYPES,
        min_backoff: float = MIN_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self._path = path
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._table = table
        self._doc_types = dict(doc_types)
        self._outbox = Outbox(deliver)
        self._queue: dict[DocumentKey, _Queued] = {}
        self._wakeup = trio.Event()
        self._requests = 0
        self._reads = 0
        self._failures = 0
        self._changed = 0
        # A digest of what was last delivered per document, to count changes;
        # the oldest is forgotten past MAX_REMEMBERED.
        self._last: dict[DocumentKey, bytes] = {}

    def request_nowait(self, user: str, auid: str, *, revalidate: bool = False) -> None:
        """Queue a read for the task; raises ValueError for an unknown auid."""
        if auid not in self._doc_types:
            raise ValueError(f"unknown document {auid!r}; known: {', '.join(self._doc_types)}")
        key = (user, auid)
        queued = self._queue.get(key)
        if queued is None:
            self._queue[key] = _Queued(revalidate)
        else:
            # A new request does not wait out the back-off of a failed read.
            queued.revalidate = queued.revalidate or revalidate
            queued.not_before = -math.inf
        self._requests += 1
        self._wakeup.set()

    def statistics(self) -> dict[str, int | float]:
        return {
            "requests": self._requests,
            "reads": self._reads,
            "failures": self._failures,
            "changed": self._changed,
            "deliveries": self._outbox.deliveries,
            "pending_deliveries": len(self._outbox),
            "queued": len(self._queue),
        }

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            now = trio.current_time()
            batch = [key for key, q in self._queue.items() if q.not_before <= now][:BATCH]
            if batch:
                taken = {key: self._queue.pop(key) for key in batch}
                # Abandoning on cancel is safe: the worker owns its connection
                # and closes it; only the answers are lost, with the server.
                rows = await trio.to_thread.run_sync(
                    self._read_batch, batch, abandon_on_cancel=True
                )
                self._answer(taken, rows, trio.current_time())
            now = trio.current_time()
            self._outbox.flush(now)
            if any(q.not_before <= now for q in self._queue.values()):
                continue
            deadline = min(
                self._outbox.next_deadline(),
                min((q.not_before for q in self._queue.values()), default=math.inf),
            )
            with trio.move_on_at(deadline):
                await self._wakeup.wait()
            self._wakeup = trio.Event()

    def _answer(
        self,
        taken: dict[DocumentKey, _Queued],
        rows: dict[DocumentKey, _Row | Exception],
        now: float,
    ) -> None:
        self._reads += len(taken)
        for key, queued in taken.items():
            row = rows[key]
            if isinstance(row, Exception):
                self._failures += 1
                queued.failures += 1
                delay = min(
                    self._max_backoff, self._min_backoff * 2.0 ** min(queued.failures - 1, 16)
                )
                level = logging.ERROR if queued.failures == 1 else logging.DEBUG
                logger.log(
                    level,
                    "reading %s of %s from table %s: %s; retry in %.1f s",
                    key[1],
                    key[0],
                    self._table,
                    row,
                    delay,
                )
                queued.not_before = now + delay
                # A request that came in meanwhile is merged, not lost.
                newer = self._queue.get(key)
                if newer is not None:
                    queued.revalidate = queued.revalidate or newer.revalidate
                    queued.not_before = -math.inf
                self._queue[key] = queued
                continue
            document, etag = row if row is not None else (None, None)
            digest = _digest(document, etag)
            previous = self._last.pop(key, None)
            if previous is not None and previous != digest:
                self._changed += 1
            self._last[key] = digest
            if len(self._last) > MAX_REMEMBERED:
                del self._last[next(iter(self._last))]
            self._outbox.post(key, RulesChanged(key[1], document, etag))

    def _read_batch(self, keys: list[DocumentKey]) -> dict[DocumentKey, _Row | Exception]:
        """In a worker thread: one read-only connection for the whole batch."""
        out: dict[DocumentKey, _Row | Exception] = {}
        try:
            uri = Path(self._path).resolve().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT)
        except sqlite3.Error as exc:
            return dict.fromkeys(keys, exc)
        try:
            for key in keys:
                user, auid = key
                parts = split_aor(user)
                if parts is None:
                    out[key] = None  # not a sip: AOR: it has no row
                    continue
                _, username, domain = parts
                try:
                    out[key] = read_xcap(conn, self._table, username, domain, self._doc_types[auid])
                except (sqlite3.Error, ValueError) as exc:
                    out[key] = exc
        finally:
            conn.close()
        return out


def _digest(document: bytes | None, etag: str | None) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(b"\x00" if document is None else b"\x01" + document)
    h.update((etag or "").encode("utf-8", "surrogateescape"))
    return h.digest()


def table_from_config(config: Config, deliver: Deliver) -> XcapTable:
    """The document source ``integrated_xcap_server = 1`` asks for."""
    return XcapTable(config.db_path, config.xcap_table, deliver=deliver)
