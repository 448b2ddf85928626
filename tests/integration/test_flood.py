"""A flood beyond capacity: answered or refused, memory bounded, service goes on.

For a bounded time one client floods the server with a mix of SUBSCRIBEs to
one presentity (more than its cap), PUBLISHes with broken bodies, requests
for a domain not served, and junk, as fast as it can send.  The server must
keep answering (200, 403, 404, 400, 503), its RSS must stay bounded, and a
legitimate PUBLISH and SUBSCRIBE afterwards must be served normally.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections import Counter
from pathlib import Path

import trio
import trio.lowlevel

from presencex.sip.message import Response
from tests.integration.server import open_udp_peer, running_server
from tests.sipmsg import pidf, request_bytes

ALICE = "sip:alice@example.com"
FLOOD_SECONDS = 3.0
RSS_LIMIT_MB = 400


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def flood_messages(port: int) -> list[bytes]:
    via = f"SIP/2.0/UDP 127.0.0.1:{port}"
    out: list[bytes] = []
    for i in range(2000):
        out.append(
            request_bytes(
                "SUBSCRIBE",
                ALICE,
                from_uri=f"sip:w{i}@example.com",
                to_uri=ALICE,
                expires=300,
                call_id=f"flood-{i}",
                contact=f"sip:w@127.0.0.1:{port}",
                via=via,
            )
        )
        out.append(
            request_bytes(
                "PUBLISH",
                ALICE,
                from_uri=ALICE,
                to_uri=ALICE,
                body=b"<presence><oops",
                content_type="application/pidf+xml",
                via=via,
            )
        )
        out.append(
            request_bytes(
                "SUBSCRIBE",
                "sip:x@not-ours.example",
                from_uri="sip:w@example.com",
                to_uri="sip:x@not-ours.example",
                via=via,
            )
        )
        out.append(os.urandom(200))
    return out


async def test_flood_is_answered_memory_bounded_and_service_goes_on(tmp_path: Path) -> None:
    config = 'force_active = 1\ndomains = ["example.com"]\nmax_subscriptions_per_presentity = 500\n'
    with running_server(tmp_path, config) as server:
        assert server.proc is not None
        pid = server.proc.pid
        flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flooder.bind(("127.0.0.1", 0))
        flooder.setblocking(False)
        flooder.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        port = flooder.getsockname()[1]
        messages = flood_messages(port)
        statuses: Counter[int] = Counter()
        sent = 0
        peak = rss_mb(pid)
        start = time.monotonic()
        try:
            for data in itertools.cycle(messages):
                if time.monotonic() - start > FLOOD_SECONDS:
                    break
                try:
                    flooder.sendto(data, ("127.0.0.1", server.port))
                    sent += 1
                except BlockingIOError:
                    await trio.lowlevel.checkpoint()
                if sent % 500 == 0:
                    peak = max(peak, rss_mb(pid))
                    await trio.lowlevel.checkpoint()
            # Collect what came back, for a bounded time after the flood.
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                try:
                    data = flooder.recv(65535)
                except BlockingIOError:
                    await trio.sleep(0.01)
                    continue
                if data.startswith(b"SIP/2.0 "):
                    statuses[int(data[8:11])] += 1
            peak = max(peak, rss_mb(pid))
        finally:
            flooder.close()

        answered = sum(statuses.values())
        print(
            f"flood: sent {sent} in {FLOOD_SECONDS:.0f} s, answered {answered} "
            f"({dict(sorted(statuses.items()))}), unanswered {sent - answered}, "
            f"peak RSS {peak:.0f} MB"
        )
        assert server.proc.poll() is None, "the server died"
        assert answered > 0
        assert set(statuses) <= {200, 400, 403, 404, 503}
        assert peak < RSS_LIMIT_MB

        # Legitimate requests are served normally afterwards.
        peer = await open_udp_peer(server.port)
        await peer.send(
            request_bytes(
                "PUBLISH",
                ALICE,
                from_uri=ALICE,
                to_uri=ALICE,
                body=pidf(ALICE, "ok"),
                content_type="application/pidf+xml",
                expires=60,
                via=f"SIP/2.0/UDP 127.0.0.1:{peer.port}",
            )
        )
        responses: list[Response] = []
        with trio.fail_after(10):
            while not responses:
                msg = await peer.receive(within=10)
                if isinstance(msg, Response):
                    responses.append(msg)
        assert responses[0].status == 200
