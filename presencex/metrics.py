"""Prometheus text exposition (format 0.0.4) of ``Server.statistics()``.

Facts:
- Opt-in (``metrics_listen``), loopback by default: figures about who
  watches whom are not for the open network.
- A deliberately tiny HTTP/1.1 server on trio: GET /metrics only, one
  request per connection, bounded request size and read time.  No new
  dependency for one endpoint.
- Names are ``presencex_`` plus the statistic's path; counters (totals that
  only grow) end in ``_total``, everything else is a gauge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import trio

log = logging.getLogger(__name__)

# A GET line and a few headers; anything larger is not a scraper.
MAX_REQUEST = 8192
READ_TIMEOUT = 5.0

# Statistics that count events since start (Prometheus counters); the rest
# are levels (gauges).
_COUNTERS = {
    ("transport", "requests"),
    ("transport", "responses_sent"),
    ("transport", "notifies_sent"),
    ("transport", "notifies_retransmitted"),
    ("transport", "notifies_failed"),
    ("transport", "notifies_timed_out"),
    ("transport", "malformed"),
    ("transport", "retransmissions_absorbed"),
    ("router", "actors_started"),
    ("router", "rejected_503"),
    ("router", "errors_500"),
    ("store", "batches"),
    ("store", "ops"),
    ("store", "commit_seconds_total"),
    ("store", "failures"),
    ("documents", "requests"),
    ("documents", "fetches"),
    ("documents", "cache_hits"),
    ("documents", "not_modified"),
    ("documents", "changed"),
    ("documents", "failures"),
    ("documents", "reads"),
    ("documents", "deliveries"),
}
# Labels for the statistics that are maps: which dimension their keys are.
_LABELS = {
    ("transport", "requests"): "method",
    ("transport", "responses_sent"): "class",
    ("subscriptions",): "event_status",
    ("publications",): "event",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _samples(stats: dict[str, object]) -> Iterator[tuple[tuple[str, ...], str | None, str, float]]:
    """(path, label name, label value, number) for every numeric figure."""
    for section, value in stats.items():
        if isinstance(value, dict):
            label = _LABELS.get((section,))
            for key, item in value.items():
                path = (section, str(key))
                if label is not None and isinstance(item, int | float):
                    yield (section,), label, str(key), float(item)
                elif isinstance(item, dict):
                    inner = _LABELS.get(path, "key")
                    for k, v in item.items():
                        if isinstance(v, int | float) and not isinstance(v, bool):
                            yield path, inner, str(k), float(v)
                elif isinstance(item, int | float) and not isinstance(item, bool):
                    yield path, None, "", float(item)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield (section,), None, "", float(value)


def render_prometheus(stats: dict[str, object]) -> str:
    lines: list[str] = []
    seen: set[str] = set()
    for path, label, label_value, number in _samples(stats):
        counter = path in _COUNTERS
        name = "presencex_" + "_".join(p.replace("-", "_").replace(";", "_") for p in path)
        if counter and not name.endswith("_total"):
            name += "_total"
        if name not in seen:
            seen.add(name)
            kind = "counter" if counter else "gauge"
            lines.append(f"# HELP {name} presencex statistic {'.'.join(path)}")
            lines.append(f"# TYPE {name} {kind}")
        labels = f'{{{label}="{_escape(label_value)}"}}' if label else ""
        lines.append(f"{name}{labels} {number:g}")
    return "\n".join(lines) + "\n"


async def serve_metrics(
    host: str,
    port: int,
    stats: Callable[[], dict[str, object]],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve GET /metrics on host:port; ``task_status.started`` gets the port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            with trio.move_on_after(READ_TIMEOUT):
                while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST:
                    data = await stream.receive_some(MAX_REQUEST)
                    if not data:
                        break
                    request += data
            line = request.split(b"\r\n", 1)[0].split()
            if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
                body = render_prometheus(stats()).encode()
                head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
            else:
                body = b"not found\n"
                head = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
            head += b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            try:
                await stream.send_all(head + body)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.debug("metrics client went away")

    await trio.serve_listeners(handle, listeners)
