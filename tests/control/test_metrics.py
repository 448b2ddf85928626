"""The Prometheus endpoint: text format, types, and the tiny HTTP server."""

from __future__ import annotations

import httpx
import trio

from presencex.metrics import render_prometheus, serve_metrics

SAMPLE: dict[str, object] = {
    "documents": {"fetches": 3, "cache_hits": 7},
    "transport": {
        "requests": {"SUBSCRIBE": 10, "PUBLISH": 4},
        "responses_sent": {"2xx": 13, "4xx": 1},
        "notifies_sent": 20,
        "tcp_connections": 2,
    },
    "router": {"actors": 5, "rejected_503": 1, "inbox_high_water": 3},
    "store": {"batches": 9, "commit_seconds_max": 0.004},
    "subscriptions": {"presence:active": 8, "presence.winfo:active": 1},
    "publications": {"presence": 2},
}


def parse(text: str) -> tuple[dict[str, str], dict[str, float]]:
    types: dict[str, str] = {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        elif line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return types, values


def test_render_types_labels_and_values() -> None:
    types, values = parse(render_prometheus(SAMPLE))
    assert types["presencex_transport_requests_total"] == "counter"
    assert types["presencex_router_actors"] == "gauge"
    assert types["presencex_documents_cache_hits_total"] == "counter"
    assert values['presencex_transport_requests_total{method="SUBSCRIBE"}'] == 10
    assert values['presencex_transport_responses_sent_total{class="4xx"}'] == 1
    assert values['presencex_subscriptions{event_status="presence.winfo:active"}'] == 1
    assert values["presencex_store_commit_seconds_max"] == 0.004
    # Every sample line belongs to a declared metric.
    for sample in values:
        assert sample.split("{")[0] in types


async def test_endpoint_serves_metrics_and_404s_the_rest() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, "127.0.0.1", 0, lambda: SAMPLE)
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            ok = await client.get(f"http://127.0.0.1:{port}/metrics")
            missing = await client.get(f"http://127.0.0.1:{port}/other")
        assert ok.status_code == 200
        assert ok.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "presencex_notifies" not in ok.text
        assert "presencex_transport_notifies_sent_total 20" in ok.text
        assert missing.status_code == 404
        nursery.cancel_scope.cancel()
