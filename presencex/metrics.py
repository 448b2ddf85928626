"""Prometheus text exposition (format 0.0.4) of ``Server.statistics()``.

Facts:
- Opt-in (``metrics_listen``), loopback by default: figures about who
  watches whom are not for the open network.
- A deliberately tiny HTTP/1.1 server on trio: GET /metrics only (200,
  ``text/plain; version=0.0.4``), anything else 404, one request per
  connection (``Connection: close``), the request head bounded in size
  (``MAX_REQUEST``, else 431) and in time (``READ_TIMEOUT``, else 408), at
  most ``MAX_CONNECTIONS`` at once (more are closed unanswered).  No new
  dependency for one endpoint.
- Names are ``presencex_`` plus the statistic's path (``transport.requests``
  -> ``presencex_transport_requests_total``).  Counters (totals that only
  grow since start) end in ``_total``; levels (actors alive, queue lengths,
  high-water marks, maxima) are gauges.  ``_METRICS`` names the known ones
  with their help text; a statistic added later and not listed there is
  still exported, as a gauge, so nothing a ``ctl stats`` shows is missing.
- Map-valued statistics become labels: requests by ``method``, responses by
  ``class``, subscriptions by ``event`` and ``status`` (``ctl stats`` keys
  them ``"event:status"``), publications by ``event``.
- All samples of one metric are written together under one ``# HELP`` and
  one ``# TYPE`` line, as the format requires.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeGuard

import trio

log = logging.getLogger(__name__)

PREFIX = "presencex_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A request line and a few headers; anything larger is not a scraper.
MAX_REQUEST = 8192
# A scraper sends its request at once; a slower peer only holds a socket.
READ_TIMEOUT = 5.0
# After answering: how long and how much to read from a client still sending.
LINGER_SECONDS = 1.0
LINGER_BYTES = 65536
# Scrapers come one at a time; this only stops a flood of idle connections.
MAX_CONNECTIONS = 16

COUNTER = "counter"
GAUGE = "gauge"

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Spec:
    kind: str
    help: str
    # For map-valued statistics: how a key becomes labels.
    labels: Callable[[str], Labels] | None = None


def _label(name: str) -> Callable[[str], Labels]:
    return lambda key: ((name, key),)


def _event_status(key: str) -> Labels:
    event, sep, status = key.rpartition(":")
    return (("event", event), ("status", status)) if sep else (("event", key), ("status", ""))


_METRICS: dict[tuple[str, ...], Spec] = {
    # transport
    ("transport", "requests"): Spec(COUNTER, "SIP requests received, by method", _label("method")),
    ("transport", "responses_sent"): Spec(
        COUNTER, "SIP responses sent, by status class", _label("class")
    ),
    ("transport", "notifies_sent"): Spec(COUNTER, "NOTIFY requests sent (first transmissions)"),
    ("transport", "notifies_retransmitted"): Spec(COUNTER, "NOTIFY retransmissions (Timer E)"),
    ("transport", "notifies_failed"): Spec(COUNTER, "NOTIFYs answered with a failure response"),
    ("transport", "notifies_timed_out"): Spec(COUNTER, "NOTIFYs never answered (Timer F)"),
    ("transport", "malformed"): Spec(COUNTER, "messages dropped or refused as malformed"),
    ("transport", "retransmissions_absorbed"): Spec(
        COUNTER, "request retransmissions answered by the transaction layer"
    ),
    ("transport", "tcp_connections"): Spec(GAUGE, "open TCP connections"),
    ("transport", "server_transactions"): Spec(GAUGE, "server transactions held"),
    ("transport", "client_transactions"): Spec(GAUGE, "client transactions held"),
    # router and actors
    ("router", "actors"): Spec(GAUGE, "presentity actors alive"),
    ("router", "actors_started"): Spec(COUNTER, "presentity actors started"),
    ("router", "inbox_high_water"): Spec(GAUGE, "highest actor inbox length seen"),
    ("router", "rejected_503"): Spec(COUNTER, "requests refused 503 (inbox full or overload)"),
    ("router", "errors_500"): Spec(COUNTER, "requests answered 500 after an internal error"),
    ("router", "in_flight"): Spec(GAUGE, "requests handed to actors and not yet handled"),
    # store
    ("store", "batches"): Spec(COUNTER, "store transactions (group commits) attempted"),
    ("store", "ops"): Spec(COUNTER, "store operations in those transactions"),
    ("store", "max_batch_size"): Spec(GAUGE, "largest store batch, in operations"),
    ("store", "last_batch_size"): Spec(GAUGE, "last store batch, in operations"),
    ("store", "commit_seconds_total"): Spec(COUNTER, "seconds spent in store transactions"),
    ("store", "commit_seconds_max"): Spec(GAUGE, "longest store transaction, in seconds"),
    ("store", "failures"): Spec(COUNTER, "store batches that failed"),
    ("store", "queued"): Spec(GAUGE, "store operations waiting for a batch"),
    # state held
    ("subscriptions",): Spec(GAUGE, "subscriptions held, by event and status", _event_status),
    ("publications",): Spec(GAUGE, "publications held, by event", _label("event")),
    # rules documents: the XCAP fetcher or the integrated xcap table
    ("documents", "requests"): Spec(COUNTER, "document requests from presentity actors"),
    ("documents", "fetches"): Spec(COUNTER, "XCAP HTTP fetches"),
    ("documents", "cache_hits"): Spec(COUNTER, "document requests answered from the cache"),
    ("documents", "not_modified"): Spec(COUNTER, "XCAP revalidations answered 304"),
    ("documents", "changed"): Spec(COUNTER, "documents found changed"),
    ("documents", "failures"): Spec(COUNTER, "document fetches or reads that failed"),
    ("documents", "evicted"): Spec(COUNTER, "documents evicted from the cache"),
    ("documents", "reads"): Spec(COUNTER, "xcap table reads"),
    ("documents", "deliveries"): Spec(COUNTER, "documents delivered to presentity actors"),
    ("documents", "cached_documents"): Spec(GAUGE, "documents in the cache"),
    ("documents", "pending_deliveries"): Spec(GAUGE, "documents waiting for delivery"),
    ("documents", "in_flight"): Spec(GAUGE, "XCAP fetches in progress"),
    ("documents", "queued"): Spec(GAUGE, "xcap table reads queued"),
}

_NAME_JUNK = re.compile(r"[^a-zA-Z0-9_]")
_LABEL_JUNK = re.compile(r"[^a-zA-Z0-9_]")


def _metric_name(path: tuple[str, ...], kind: str) -> str:
    name = PREFIX + "_".join(_NAME_JUNK.sub("_", part) for part in path)
    if kind == COUNTER and not name.endswith("_total"):
        name += "_total"
    return name


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(slots=True)
class _Family:
    kind: str
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)


def _figures(
    stats: dict[str, object],
) -> Iterator[tuple[tuple[str, ...], Labels, float, Spec | None]]:
    """(path, labels, value, spec) for every number in ``stats``, at most two
    levels of maps deep (section -> figure -> key)."""
    for section, value in stats.items():
        path: tuple[str, ...] = (str(section),)
        if _is_number(value):
            yield path, (), value, _METRICS.get(path)
        elif isinstance(value, dict):
            spec = _METRICS.get(path)
            for key, item in value.items():
                if spec is not None and spec.labels is not None:
                    if _is_number(item):
                        yield path, spec.labels(str(key)), item, spec
                    continue
                inner = (*path, str(key))
                inner_spec = _METRICS.get(inner)
                if _is_number(item):
                    yield inner, (), item, inner_spec
                elif isinstance(item, dict):
                    to_labels = (
                        inner_spec.labels
                        if inner_spec is not None and inner_spec.labels is not None
                        else _label("key")
                    )
                    for k, v in item.items():
                        if _is_number(v):
                            yield inner, to_labels(str(k)), v, inner_spec


def render_prometheus(stats: dict[str, object]) -> str:
    """``stats`` (as ``Server.statistics()`` returns it) in the Prometheus
    text format 0.0.4; non-numeric figures are left out."""
    families: dict[str, _Family] = {}
    # Map-valued families are declared even when empty (no subscriptions
    # yet): a scraper sees the metric exists.
    for section, value in stats.items():
        spec = _METRICS.get((section,))
        if isinstance(value, dict) and spec is not None and spec.labels is not None:
            families[_metric_name((section,), spec.kind)] = _Family(spec.kind, spec.help)
    for path, labels, value, spec in _figures(stats):
        kind = spec.kind if spec is not None else GAUGE
        name = _metric_name(path, kind)
        family = families.get(name)
        if family is None:
            help_text = spec.help if spec is not None else f"presencex statistic {'.'.join(path)}"
            family = families[name] = _Family(kind, help_text)
        family.samples.append((labels, value))
    lines: list[str] = []
    for name, family in families.items():
        lines.append(f"# HELP {name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.kind}")
        for labels, value in family.samples:
            text = ",".join(f'{_LABEL_JUNK.sub("_", k)}="{_escape(v)}"' for k, v in labels)
            lines.append(
                f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}"
            )
    return "\n".join(lines) + "\n" if lines else ""


# ------------------------------------------------------------------ HTTP


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _read_head(stream: trio.abc.ReceiveStream) -> bytes | None:
    """The request head (up to the blank line); None when it is too large."""
    request = b""
    while b"\r\n\r\n" not in request:
        if len(request) > MAX_REQUEST:
            return None
        data = await stream.receive_some(MAX_REQUEST)
        if not data:
            break
        request += data
    return request


async def _linger(stream: trio.SocketStream) -> None:
    """Half-close, then read what the client still sends for a moment: closing
    with unread bytes (a refused oversized request) makes the kernel send a
    reset, which can destroy the response before the client reads it."""
    await stream.send_eof()
    drained = 0
    with trio.move_on_after(LINGER_SECONDS):
        while drained < LINGER_BYTES and (data := await stream.receive_some(MAX_REQUEST)):
            drained += len(data)


def _answer(request: bytes, stats: Callable[[], dict[str, object]]) -> bytes:
    parts = request.split(b"\r\n", 1)[0].split()
    if len(parts) != 3 or parts[0] != b"GET" or parts[1].split(b"?", 1)[0] != b"/metrics":
        return _response("404 Not Found", b"not found\n")
    try:
        body = render_prometheus(stats()).encode("utf-8")
    except Exception:
        # A statistics bug must not take the endpoint (or the server) down.
        log.exception("metrics: statistics failed")
        return _response("500 Internal Server Error", b"statistics failed\n")
    return _response("200 OK", body, CONTENT_TYPE)


async def serve_metrics(
    host: str,
    port: int,
    stats: Callable[[], dict[str, object]],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve GET /metrics on ``host``:``port`` (0: any free port) until
    cancelled; ``task_status.started`` gets the port actually bound."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                limiter.acquire_nowait()
            except trio.WouldBlock:
                log.warning("metrics: %d connections open, closing another", MAX_CONNECTIONS)
                return
            try:
                reply = None
                with trio.move_on_after(READ_TIMEOUT):
                    request = await _read_head(stream)
                    reply = (
                        _response("431 Request Header Fields Too Large", b"request too large\n")
                        if request is None
                        else _answer(request, stats)
                    )
                if reply is None:
                    reply = _response("408 Request Timeout", b"request timeout\n")
                with trio.move_on_after(READ_TIMEOUT):
                    await stream.send_all(reply)
                    await _linger(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.debug("metrics: client went away")
            finally:
                limiter.release()

    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)
