"""The XCAP document cache: what to fetch when, and what to deliver (pure).

Facts and invariants:
- One entry per (presentity AOR, internal auid), the auid being our name for
  the document ("pres-rules", "pidf-manipulation"); the fetcher maps it to the
  configured AUID and document name of the URI.
- Every ``request`` is answered by one ``RulesChanged`` as soon as the cache
  knows the document: at once from the cache when it does (a cache hit, no
  HTTP), else after the first definitive answer (200 or 404).  An actor that
  ended and started afresh asks again, so a plain request must never be
  swallowed as "nothing new".
- Besides answers, a ``RulesChanged`` is pushed only when revalidation finds
  the document changed (another ETag or other bytes; a 404 after a document
  is a change to None).  A 304, or a 200 with the same tag and bytes, delivers
  nothing, unless an explicit revalidation (refreshWatchers) asked for the
  document: then the current one is delivered even if unchanged, once.
- A failure (connect error, timeout, 5xx, 3xx, 4xx other than 404) changes
  nothing that is known: the last good copy stays in force, no document is
  ever invented, and the entry is retried after ``min_backoff * 2**(n-1)``
  seconds, capped at ``max_backoff``.  A request owed an answer stays owed
  until a definitive one arrives.
- Entries are revalidated every ``period`` while their user asked within
  ``keep_for`` seconds; an idle entry is dropped when its check comes due.
  At most ``max_documents`` entries are kept, least recently asked first out.
- Time is an argument (trio's clock in the fetcher, a float in the tests);
  nothing here does I/O or awaits (trio is imported for ``WouldBlock`` only).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import trio

from presencex.presence.messages import RulesChanged

logger = logging.getLogger(__name__)

# Our internal names of the documents presence needs.
PRES_RULES = "pres-rules"
PIDF_MANIPULATION = "pidf-manipulation"

DocumentKey = tuple[str, str]  # (presentity AOR, internal auid)
# The router's deliver_nowait: raises trio.WouldBlock when the inbox is full.
Deliver = Callable[[str, RulesChanged], None]

# A full inbox is retried after 20 ms, doubling up to 1 s: the actor is busy,
# not gone (the router starts a fresh one for a message to a gone actor).
DELIVERY_RETRY = 0.02
DELIVERY_RETRY_MAX = 1.0


def split_aor(uri: str) -> tuple[str, str, str] | None:
    """(scheme, user, domain) of a SIP AOR, the domain lowercased and without
    port; None for anything that has no user part or is not sip:/sips:.

    URI parameters and headers are dropped: a document belongs to the AOR.
    """
    scheme, sep, rest = uri.strip().partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("sip", "sips"):
        return None
    rest = rest.split("?", 1)[0].split(";", 1)[0]
    user, at, host = rest.rpartition("@")
    if not at or not user or not host:
        return None
    host = host.lower()
    if host.startswith("["):
        end = host.find("]")
        host, port = (host[: end + 1], host[end + 1 :]) if end > 0 else ("", "")
    else:
        host, _, port = host.partition(":")
        port = f":{port}" if port else ""
    if port and not (port[0] == ":" and port[1:].isdigit()):
        return None
    if not host or any(c in host or c in user for c in "/\\ "):
        return None
    return scheme, user, host


@dataclass(slots=True)
class CachedDocument:
    user: str
    auid: str
    last_asked: float
    next_check: float
    known: bool = False  # a definitive answer (200/404) has been seen
    document: bytes | None = None
    etag: str | None = None
    in_flight: bool = False
    again: bool = False  # an explicit revalidation came while a fetch was in flight
    owed: bool = True  # a request waits for an answer
    failures: int = 0  # consecutive

    @property
    def key(self) -> DocumentKey:
        return (self.user, self.auid)

    def answer(self) -> RulesChanged:
        return RulesChanged(self.auid, self.document, self.etag)


class DocumentCache:
    def __init__(
        self,
        *,
        period: float,
        keep_for: float,
        max_documents: int,
        min_backoff: float,
        max_backoff: float,
    ) -> None:
        if period <= 0 or keep_for <= 0 or min_backoff <= 0 or max_backoff < min_backoff:
            raise ValueError("period, keep_for and back-offs must be positive, max >= min")
        if max_documents < 1:
            raise ValueError("max_documents must be at least 1")
        self.period = period
        self.keep_for = keep_for
        self.max_documents = max_documents
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        # Least recently asked first.
        self._entries: OrderedDict[DocumentKey, CachedDocument] = OrderedDict()
        # (when, seq, key); an item whose ``when`` is not the entry's
        # ``next_check`` any more is stale and skipped.
        self._heap: list[tuple[float, int, DocumentKey]] = []
        self._seq = itertools.count()
        self.cache_hits = 0
        self.not_modified = 0
        self.changed = 0
        self.failures = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: DocumentKey) -> CachedDocument | None:
        return self._entries.get(key)

    # -- requests ------------------------------------------------------------

    def request(
        self, user: str, auid: str, now: float, *, revalidate: bool = False
    ) -> RulesChanged | None:
        """Register a request; the answer if the cache can give it now."""
        key = (user, auid)
        entry = self._entries.get(key)
        if entry is None:
            entry = CachedDocument(user, auid, last_asked=now, next_check=now)
            self._entries[key] = entry
            self._schedule(entry, now)
            self._evict_over_limit(keep=key)
            return None
        self._entries.move_to_end(key)
        entry.last_asked = now
        if revalidate:
            entry.owed = True
            if entry.in_flight:
                # The fetch under way may predate the change being announced.
                entry.again = True
            else:
                # An explicit command bypasses the back-off: one request.
                self._schedule(entry, now)
            return None
        if entry.known:
            self.cache_hits += 1
            return entry.answer()
        entry.owed = True
        return None

    # -- what to fetch -------------------------------------------------------

    def pop_due(self, now: float) -> CachedDocument | None:
        """The next entry to fetch, marked in flight; idle entries are dropped."""
        while self._heap and self._heap[0][0] <= now:
            when, _, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is None or entry.in_flight or entry.next_check != when:
                continue
            if not entry.owed and now - entry.last_asked > self.keep_for:
                del self._entries[key]
                self.evicted += 1
                continue
            entry.in_flight = True
            return entry
        return None

    def next_deadline(self) -> float:
        return self._heap[0][0] if self._heap else math.inf

    # -- outcomes ------------------------------------------------------------

    def on_document(
        self, key: DocumentKey, document: bytes | None, etag: str | None, now: float
    ) -> RulesChanged | None:
        """A 200 (document) or a 404 (None): what to deliver, if anything."""
        entry = self._finish(key)
        if entry is None:
            return None
        changed = entry.known and (entry.document, entry.etag) != (document, etag)
        deliver = changed or not entry.known or entry.owed
        entry.known, entry.document, entry.etag = True, document, etag
        entry.failures = 0
        if changed:
            self.changed += 1
        return self._answered(entry, now, deliver)

    def on_not_modified(self, key: DocumentKey, now: float) -> RulesChanged | None:
        entry = self._finish(key)
        if entry is None:
            return None
        if not entry.known:
            # A 304 to a request without If-None-Match: the server is confused.
            self._failed(entry, now)
            return None
        self.not_modified += 1
        entry.failures = 0
        return self._answered(entry, now, entry.owed)

    def on_failure(self, key: DocumentKey, now: float) -> tuple[int, float] | None:
        """(consecutive failures, seconds until the retry)."""
        entry = self._finish(key)
        if entry is None:
            return None
        return entry.failures + 1, self._failed(entry, now)

    # -- internals -----------------------------------------------------------

    def _finish(self, key: DocumentKey) -> CachedDocument | None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.in_flight = False
        return entry

    def _answered(self, entry: CachedDocument, now: float, deliver: bool) -> RulesChanged | None:
        if entry.again:
            entry.again = False
            self._schedule(entry, now)
        else:
            self._schedule(entry, now + self.period)
        if not deliver:
            return None
        entry.owed = False
        return entry.answer()

    def _failed(self, entry: CachedDocument, now: float) -> float:
        self.failures += 1
        entry.failures += 1
        entry.again = False
        # min() on the exponent keeps 2**n a small float after days of failing.
        delay = min(self.max_backoff, self.min_backoff * 2.0 ** min(entry.failures - 1, 32))
        self._schedule(entry, now + delay)
        return delay

    def _schedule(self, entry: CachedDocument, when: float) -> None:
        entry.next_check = when
        heapq.heappush(self._heap, (when, next(self._seq), entry.key))
        if len(self._heap) > 4 * len(self._entries) + 64:
            # Stale items pile up when entries are rescheduled early (explicit
            # revalidations) or dropped; keep the heap proportional.
            self._heap = [
                item
                for item in self._heap
                if (e := self._entries.get(item[2])) is not None and e.next_check == item[0]
            ]
            heapq.heapify(self._heap)

    def _evict_over_limit(self, keep: DocumentKey) -> None:
        while len(self._entries) > self.max_documents:
            victim = next(
                (k for k, e in self._entries.items() if k != keep and not e.in_flight), None
            )
            if victim is None:
                return
            del self._entries[victim]
            self.evicted += 1


@dataclass(slots=True)
class _Pending:
    message: RulesChanged
    attempts: int = 0
    not_before: float = -math.inf


class Outbox:
    """Messages on their way to actors; a full inbox never loses one.

    A newer message for the same document replaces a waiting one: it carries
    the whole current document, so the older one says nothing more.
    """

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._pending: dict[DocumentKey, _Pending] = {}
        self.deliveries = 0

    def __len__(self) -> int:
        return len(self._pending)

    def post(self, key: DocumentKey, message: RulesChanged) -> None:
        self._pending[key] = _Pending(message)

    def next_deadline(self) -> float:
        return min((p.not_before for p in self._pending.values()), default=math.inf)

    def flush(self, now: float) -> None:
        for key, pending in list(self._pending.items()):
            if pending.not_before > now:
                continue
            try:
                self._deliver(key[0], pending.message)
            except trio.WouldBlock:
                pending.attempts += 1
                pending.not_before = now + min(
                    DELIVERY_RETRY_MAX, DELIVERY_RETRY * 2.0 ** min(pending.attempts - 1, 16)
                )
                continue
            except Exception:
                logger.exception("delivering %s of %s failed; dropped", key[1], key[0])
            else:
                self.deliveries += 1
            del self._pending[key]
