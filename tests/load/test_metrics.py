"""``presencex.metrics``: the text format parsed back line by line, every
statistic the server produces declared, and the tiny HTTP server."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import httpx
import pytest
import trio

from presencex.metrics import (
    CONTENT_TYPE,
    MAX_REQUEST,
    READ_TIMEOUT,
    render_prometheus,
    serve_metrics,
)
from presencex.router import RouterStatistics
from presencex.store.writer import StoreStatistics
from presencex.transport.hub import HubStatistics

SAMPLE: dict[str, object] = {
    "documents": {"requests": 5, "fetches": 3, "cache_hits": 7, "cached_documents": 2},
    "transport": {
        "requests": {"SUBSCRIBE": 10, "PUBLISH": 4, "NOTIFY": 0},
        "responses_sent": {"2xx": 13, "4xx": 1},
        "notifies_sent": 20,
        "notifies_retransmitted": 2,
        "notifies_failed": 1,
        "notifies_timed_out": 0,
        "tcp_connections": 2,
        "server_transactions": 6,
    },
    "router": {"actors": 5, "actors_started": 9, "rejected_503": 1, "inbox_high_water": 3},
    "store": {"batches": 9, "commit_seconds_total": 0.25, "commit_seconds_max": 0.004},
    "subscriptions": {"presence:active": 8, "presence.winfo:active": 1, "dialog;sla:pending": 2},
    "publications": {"presence": 2},
    "uptime_note": "not a number",
}

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
SAMPLE_LINE = re.compile(rf"^({NAME})(?:\{{({LABEL}(?:,{LABEL})*)\}})? (\S+)$")
HELP_LINE = re.compile(rf"^# HELP ({NAME}) (.*)$")
TYPE_LINE = re.compile(rf"^# TYPE ({NAME}) (counter|gauge|untyped|summary|histogram)$")


@dataclasses.dataclass
class Parsed:
    types: dict[str, str] = dataclasses.field(default_factory=dict)
    helps: dict[str, str] = dataclasses.field(default_factory=dict)
    # (name, frozenset of labels) -> value
    values: dict[tuple[str, frozenset[tuple[str, str]]], float] = dataclasses.field(
        default_factory=dict
    )

    def get(self, name: str, **labels: str) -> float:
        return self.values[(name, frozenset(labels.items()))]


def parse(text: str) -> Parsed:
    """A strict reader of the 0.0.4 text format: every line is HELP, TYPE or
    a sample; HELP and TYPE come once per metric, before its samples; the
    samples of one metric are contiguous."""
    assert text.endswith("\n")
    out = Parsed()
    current: str | None = None
    finished: set[str] = set()
    for line in text.splitlines():
        if match := HELP_LINE.match(line):
            name = match.group(1)
            assert name not in out.helps, f"second HELP for {name}"
            assert name not in finished
            out.helps[name] = match.group(2)
            if current is not None and current != name:
                finished.add(current)
            current = name
        elif match := TYPE_LINE.match(line):
            name = match.group(1)
            assert name == current, f"TYPE {name} not right after its HELP"
            assert name not in out.types, f"second TYPE for {name}"
            out.types[name] = match.group(2)
        else:
            match = SAMPLE_LINE.match(line)
            assert match is not None, f"not a sample line: {line!r}"
            name, labels, value = match.groups()
            assert name == current, f"sample of {name} outside its family"
            pairs = frozenset(
                (k, v.encode().decode("unicode_escape"))
                for k, v in re.findall(
                    r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or ""
                )
            )
            key = (name, pairs)
            assert key not in out.values, f"duplicate sample {line!r}"
            out.values[key] = float(value)
    return out


def test_render_parses_back_with_types_labels_and_values() -> None:
    parsed = parse(render_prometheus(SAMPLE))
    assert parsed.types["presencex_transport_requests_total"] == "counter"
    assert parsed.get("presencex_transport_requests_total", method="SUBSCRIBE") == 10
    assert parsed.get("presencex_transport_requests_total", method="NOTIFY") == 0
    assert parsed.types["presencex_transport_responses_sent_total"] == "counter"
    assert parsed.get("presencex_transport_responses_sent_total", **{"class": "4xx"}) == 1
    assert parsed.get("presencex_transport_notifies_sent_total") == 20
    assert parsed.get("presencex_transport_notifies_retransmitted_total") == 2
    assert parsed.types["presencex_transport_tcp_connections"] == "gauge"
    assert parsed.types["presencex_router_actors"] == "gauge"
    assert parsed.types["presencex_router_inbox_high_water"] == "gauge"
    assert parsed.types["presencex_router_rejected_503_total"] == "counter"
    assert parsed.types["presencex_store_commit_seconds_total"] == "counter"
    assert parsed.get("presencex_store_commit_seconds_total") == 0.25
    assert parsed.types["presencex_store_commit_seconds_max"] == "gauge"
    assert parsed.get("presencex_store_commit_seconds_max") == 0.004
    assert parsed.types["presencex_documents_cache_hits_total"] == "counter"
    assert parsed.types["presencex_documents_cached_documents"] == "gauge"
    assert parsed.types["presencex_subscriptions"] == "gauge"
    assert parsed.get("presencex_subscriptions", event="presence.winfo", status="active") == 1
    assert parsed.get("presencex_subscriptions", event="dialog;sla", status="pending") == 2
    assert parsed.get("presencex_publications", event="presence") == 2
    # Every family has help; counters and only counters end in _total.
    for name, kind in parsed.types.items():
        assert name.startswith("presencex_")
        assert parsed.helps[name]
        assert name.endswith("_total") == (kind == "counter"), name
    assert not any("uptime_note" in name for name in parsed.types)


def _fill(cls: type[Any]) -> dict[str, object]:
    """An instance of a statistics dataclass with a value in every field,
    as ``asdict`` (what ``Server.statistics()`` does)."""
    values: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        values[f.name] = {"SUBSCRIBE": 1} if "dict" in str(f.type) else 1
    return dataclasses.asdict(cls(**values))


def test_every_server_statistic_has_a_declared_type_and_help() -> None:
    stats: dict[str, object] = {
        "transport": _fill(HubStatistics),
        "router": _fill(RouterStatistics),
        "store": _fill(StoreStatistics),
        "subscriptions": {},
        "publications": {},
        "documents": {},
    }
    parsed = parse(render_prometheus(stats))
    generic = [n for n, h in parsed.helps.items() if h.startswith("presencex statistic ")]
    assert generic == [], "add these to presencex.metrics._METRICS"
    # Empty maps still declare their metric.
    assert parsed.types["presencex_subscriptions"] == "gauge"
    assert parsed.types["presencex_publications"] == "gauge"


def test_unknown_figures_are_gauges_with_safe_names_and_escaped_labels() -> None:
    text = render_prometheus({"new-section": {"odd.name": 1.5, "map": {'a"b\\c\nd': 2}}})
    parsed = parse(text)
    assert parsed.types["presencex_new_section_odd_name"] == "gauge"
    assert parsed.get("presencex_new_section_odd_name") == 1.5
    assert parsed.get("presencex_new_section_map", key='a"b\\c\nd') == 2


def test_special_floats_and_empty_stats() -> None:
    parsed = parse(render_prometheus({"store": {"commit_seconds_max": float("inf")}}))
    assert parsed.get("presencex_store_commit_seconds_max") == float("inf")
    assert render_prometheus({}) == ""


async def test_endpoint_serves_metrics_and_404s_the_rest() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, "127.0.0.1", 0, lambda: SAMPLE)
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            ok = await client.get(f"http://127.0.0.1:{port}/metrics")
            query = await client.get(f"http://127.0.0.1:{port}/metrics?x=1")
            missing = await client.get(f"http://127.0.0.1:{port}/other")
            post = await client.post(f"http://127.0.0.1:{port}/metrics", content=b"x")
        assert ok.status_code == 200
        assert ok.headers["content-type"] == CONTENT_TYPE
        assert ok.headers["connection"] == "close"
        assert parse(ok.text).get("presencex_transport_notifies_sent_total") == 20
        assert query.status_code == 200
        assert missing.status_code == 404
        assert post.status_code == 404
        nursery.cancel_scope.cancel()


async def _raw(port: int, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        if data:
            await stream.send_all(data)
        reply = b""
        while chunk := await stream.receive_some(65536):
            reply += chunk
    return reply


async def test_oversized_request_is_refused() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, "127.0.0.1", 0, lambda: SAMPLE)
        with trio.fail_after(5):
            head = b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * (2 * MAX_REQUEST)
            reply = await _raw(port, head)
        assert reply.startswith(b"HTTP/1.1 431 ")
        nursery.cancel_scope.cancel()


async def test_silent_client_times_out(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, "127.0.0.1", 0, lambda: SAMPLE)
        start = trio.current_time()
        with trio.fail_after(3 * READ_TIMEOUT):
            reply = await _raw(port, b"GET /metr")
        assert reply.startswith(b"HTTP/1.1 408 ")
        assert trio.current_time() - start >= READ_TIMEOUT
        nursery.cancel_scope.cancel()


async def test_a_failing_statistics_call_answers_500_and_keeps_serving() -> None:
    calls = 0

    def stats() -> dict[str, object]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return SAMPLE

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, "127.0.0.1", 0, stats)
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            first = await client.get(f"http://127.0.0.1:{port}/metrics")
            second = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert first.status_code == 500
        assert second.status_code == 200
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("line", [b"GET /metrics\r\n\r\n", b"\r\n\r\n", b"GET  HTTP/1.1\r\n\r\n"])
async def test_malformed_request_lines_get_404(line: bytes) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, "127.0.0.1", 0, lambda: SAMPLE)
        with trio.fail_after(5):
            reply = await _raw(port, line)
        assert reply.startswith(b"HTTP/1.1 404 ")
        nursery.cancel_scope.cancel()
