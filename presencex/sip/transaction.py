"""Non-INVITE transactions (RFC 3261 §17.1.2, §17.2.2), sans IO.

Facts:
- Time is a float the caller passes in; nothing here reads a clock. The
  caller asks ``next_deadline()``, sleeps until then and calls ``on_timer``.
- Server side: a request is new, a retransmission still being processed
  (absorbed), or a retransmission after the final response (the stored
  response is sent again, §17.2.2 "Completed" state, Timer J).
- Client side (our NOTIFYs): Timer E retransmits on unreliable transports,
  T1 doubling up to T2 (§17.1.2.2); Timer F gives up after 64*T1 on every
  transport; a provisional response moves Timer E to T2.
- Deadlines live in a heap with lazy deletion: an entry is stale when its
  transaction is gone or has a different deadline. Each transaction has at
  most one live entry, so the heap stays about as large as the table even
  with 50,000 transactions.
- INVITE, ACK and CANCEL are not handled: a presence server receives none it
  must keep transaction state for (ACK/CANCEL pass through as new requests).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from presencex.sip.build import BRANCH_COOKIE
from presencex.sip.errors import SipError
from presencex.sip.message import Request, Response

# RFC 3261 §17.1.1.1 defaults: T1 is the RTT estimate, T2 the cap for
# non-INVITE retransmissions.
T1 = 0.5
T2 = 4.0
# Timer F and Timer J (RFC 3261 §17.1.2.2, §17.2.2) are both 64*T1.
TIMEOUT_FACTOR = 64


@dataclass(frozen=True, slots=True)
class NewRequest:
    """Not seen before (or not ours to track): pass it up."""


@dataclass(frozen=True, slots=True)
class Absorb:
    """A retransmission of a request still being processed: drop it."""


@dataclass(frozen=True, slots=True)
class Resend:
    """A retransmission after the final response: send ``data`` again."""

    data: bytes


ServerVerdict = NewRequest | Absorb | Resend


@dataclass(frozen=True, slots=True)
class Retransmit:
    """Timer E fired: send ``data`` again (unreliable transports only)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Timer F fired: no final response; report 408 to the NOTIFY's sender."""


ClientEvent = Retransmit | TimedOut

_NEW = NewRequest()
_ABSORB = Absorb()
_TIMED_OUT = TimedOut()

ServerKey = tuple[str, ...]


def server_key(req: Request) -> ServerKey:
    """The §17.2.3 matching key of a request.

    With the RFC 3261 magic cookie: branch, sent-by and method. Without it
    (RFC 2543 peers): Request-URI, From tag, To tag, Call-ID, CSeq and the
    whole top Via.
    """
    via = req.top_via
    branch = via.branch
    if branch is not None and branch.startswith(BRANCH_COOKIE):
        return ("3261", branch, via.sent_by, req.method)
    number, method = req.cseq
    return (
        "2543",
        req.uri,
        req.from_.tag or "",
        req.to.tag or "",
        req.call_id,
        str(number),
        method,
        str(via),
    )


# Mutable on purpose: internal bookkeeping that changes state in place, never
# handed out.
@dataclass(slots=True)
class _ServerTransaction:
    deadline: float
    response: bytes | None = None


class ServerTransactions:
    """Every live non-INVITE server transaction, keyed per §17.2.3."""

    def __init__(self, *, t1: float = T1, t2: float = T2) -> None:
        self.t1 = t1
        self.t2 = t2
        self._table: dict[ServerKey, _ServerTransaction] = {}
        self._heap: list[tuple[float, int, ServerKey]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._table)

    def receive(self, req: Request, reliable: bool, now: float) -> ServerVerdict:
        if req.method in ("ACK", "CANCEL", "INVITE"):
            return _NEW
        key = server_key(req)
        txn = self._table.get(key)
        if txn is None:
            # A request nobody answers must not pin its entry forever: the
            # client gives up after Timer F (64*T1), so can we.
            deadline = now + TIMEOUT_FACTOR * self.t1
            self._table[key] = _ServerTransaction(deadline)
            self._push(deadline, key)
            return _NEW
        if txn.response is None:
            return _ABSORB
        return Resend(txn.response)

    def respond(self, req: Request, data: bytes, status: int, reliable: bool, now: float) -> None:
        """Record the final response ``data`` sent for ``req`` (§17.2.2 Completed)."""
        if status < 200 or req.method in ("ACK", "CANCEL", "INVITE"):
            # Provisionals are not replayed: a presence server answers
            # SUBSCRIBE/PUBLISH finally within milliseconds.
            return
        key = server_key(req)
        if reliable:
            # Timer J is zero on reliable transports: the transport itself
            # delivers the response, there are no retransmissions to absorb.
            self._table.pop(key, None)
            return
        deadline = now + TIMEOUT_FACTOR * self.t1
        self._table[key] = _ServerTransaction(deadline, data)
        self._push(deadline, key)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, key = heap[0]
            txn = self._table.get(key)
            if txn is not None and txn.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def on_timer(self, now: float) -> None:
        """Forget transactions whose Timer J (or unanswered guard) fired."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, key = heapq.heappop(heap)
            txn = self._table.get(key)
            if txn is not None and txn.deadline == deadline:
                del self._table[key]

    def _push(self, deadline: float, key: ServerKey) -> None:
        heapq.heappush(self._heap, (deadline, next(self._seq), key))


@dataclass(slots=True)
class _ClientTransaction:
    data: bytes
    method: str
    reliable: bool
    timeout_at: float  # Timer F
    retransmit_at: float | None  # Timer E, None on reliable transports
    interval: float
    proceeding: bool = False

    @property
    def deadline(self) -> float:
        if self.retransmit_at is None:
            return self.timeout_at
        return min(self.retransmit_at, self.timeout_at)


class ClientTransactions:
    """Our outgoing non-INVITE transactions (NOTIFY), keyed by branch."""

    def __init__(self, *, t1: float = T1, t2: float = T2) -> None:
        self.t1 = t1
        self.t2 = t2
        self._table: dict[str, _ClientTransaction] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._table)

    def start(self, branch: str, data: bytes, reliable: bool, now: float) -> None:
        """Track a request the caller has just sent once (§17.1.2.2 Trying)."""
        method = data.split(b" ", 1)[0].decode("latin-1")
        retransmit_at = None if reliable else now + self.t1
        txn = _ClientTransaction(
            data, method, reliable, now + TIMEOUT_FACTOR * self.t1, retransmit_at, self.t1
        )
        self._table[branch] = txn
        self._push(txn.deadline, branch)

    def receive(self, resp: Response, now: float) -> str | None:
        """Match a response (§17.1.3); return the branch when it ends the transaction."""
        try:
            branch = resp.top_via.branch  # parsed and kept by the parser
        except SipError:
            return None
        txn = self._table.get(branch) if branch else None
        if txn is None or branch is None or resp.cseq[1] != txn.method:
            return None
        if resp.status >= 200:
            del self._table[branch]
            return branch
        if not txn.proceeding:
            # §17.1.2.2: in Proceeding, Timer E fires every T2.
            txn.proceeding = True
            txn.interval = self.t2
        return None

    def cancel(self, branch: str) -> None:
        self._table.pop(branch, None)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, branch = heap[0]
            txn = self._table.get(branch)
            if txn is not None and txn.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def on_timer(self, now: float) -> list[tuple[str, Retransmit | TimedOut]]:
        """Fire every Timer E and F due at ``now``, in deadline order."""
        out: list[tuple[str, Retransmit | TimedOut]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, branch = heapq.heappop(heap)
            txn = self._table.get(branch)
            if txn is None or txn.deadline != deadline:
                continue
            if txn.timeout_at <= deadline:
                del self._table[branch]
                out.append((branch, _TIMED_OUT))
                continue
            # Timer E (§17.1.2.2): resend, then double the interval up to T2.
            # Counted from when it was due, not from ``now``, so a late tick
            # does not stretch the schedule.
            out.append((branch, Retransmit(txn.data)))
            txn.interval = self.t2 if txn.proceeding else min(txn.interval * 2, self.t2)
            txn.retransmit_at = deadline + txn.interval
            self._push(txn.deadline, branch)
        return out

    def _push(self, deadline: float, branch: str) -> None:
        heapq.heappush(self._heap, (deadline, next(self._seq), branch))
