"""Helpers for the issue 5 end-to-end tests: a server process fetching XCAP
documents, Kamailio's xcap_server as the real XCAP server, and a tiny HTTP
listener that records every request it gets (to prove who is never asked).

Kamailio is started by ``KamailioXcap`` from tests/xcap (the same config and
start-up as the fetcher's own tests against it); nothing here is Kamailio
specific beyond the document URIs it serves.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trio

from presencex.bodies.pidf import DATA_MODEL_NS
from presencex.control.client import call
from presencex.sip.message import Request
from tests.integration.server import UdpPeer
from tests.sipmsg import pidf, request_bytes
from tests.xcap.test_xcap_kamailio import KAMAILIO, KamailioXcap

ALICE = "sip:alice@example.com"
RULES_TYPE = "application/auth-policy+xml"
PIDF_TYPE = "application/pidf+xml"
PERSON_PIDF = f"""<?xml version="1.0"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="{DATA_MODEL_NS}"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="{ALICE}">
  <tuple id="phone"><status><basic>open</basic></status></tuple>
  <dm:person id="me"><rpid:activities><rpid:meeting/></rpid:activities></dm:person>
</presence>""".encode()
# Tuples only: no provide-persons, so the person (and what it says) is withheld.
SERVICES_ONLY = (
    "<cr:transformations><pr:provide-services><pr:all-services/></pr:provide-services>"
    "</cr:transformations>"
)
# Every HTTP exchange with the XCAP server and every ctl call is bounded.
HTTP_TIMEOUT = 5.0
CTL_TIMEOUT = 30.0

# With @pytest.mark.kamailio on every test that starts Kamailio.
skip_without_kamailio = pytest.mark.skipif(
    KAMAILIO is None, reason="the kamailio binary is not installed"
)


@contextmanager
def kamailio_xcap_server(tmp_path: Path) -> Iterator[KamailioXcap]:
    """A fresh Kamailio xcap_server (stopping it twice is fine)."""
    workdir = tmp_path / "kamailio"
    workdir.mkdir()
    server = KamailioXcap(workdir)
    try:
        yield server
    finally:
        server.stop()


# -- talking to the XCAP server and to the control socket ---------------------


async def xcap_put(url: str, body: bytes, content_type: str) -> str:
    """PUT a whole document the way an XCAP client does; its new ETag."""
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, trust_env=False) as client:
        response = await client.put(url, content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    return response.headers["ETag"]


async def xcap_delete(url: str) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, trust_env=False) as client:
        response = await client.delete(url)
    assert response.status_code == 200, response.text


def ctl(sock: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "presencex", "ctl", "--socket", str(sock), *args],
        capture_output=True,
        text=True,
        timeout=CTL_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def ctl_async(sock: Path, *args: str) -> str:
    """``ctl`` off the event loop, so peers keep receiving meanwhile."""
    return await trio.to_thread.run_sync(ctl, sock, *args)


async def rpc_async(sock: Path, method: str, *params: object) -> object:
    """One JSON-RPC request on the control socket from this process (no
    interpreter start-up in the figure), in a worker thread; bounded by the
    client's own socket timeout."""
    answer = await trio.to_thread.run_sync(call, str(sock), method, list(params))
    assert "error" not in answer, answer
    return answer.get("result")


async def command_then_notifies(
    peer: UdpPeer,
    sock: Path,
    args: tuple[str, ...],
    *,
    notifies: int = 1,
    in_process: bool = False,
    within: float = 10,
) -> tuple[list[Request], float]:
    """Run a control command while ``peer`` collects the NOTIFYs it causes;
    the NOTIFYs and the seconds from the command's start to the last one.

    The command runs in a thread: ``presencex ctl`` takes about as long to
    start as Timer E's first interval, so blocking the loop on it would make
    the server retransmit the unanswered NOTIFY.
    """
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        if in_process:
            method, *params = args
            nursery.start_soon(
                rpc_async, sock, method, *[int(p) if p.isdigit() else p for p in params]
            )
        else:
            nursery.start_soon(ctl_async, sock, *args)
        _, got = await peer.collect(notifies=notifies, within=within)
        latency = time.monotonic() - started
    return got, latency


async def command_then_notify(
    peer: UdpPeer,
    sock: Path,
    args: tuple[str, ...],
    *,
    in_process: bool = False,
    within: float = 10,
) -> tuple[Request, float]:
    """``command_then_notifies`` for the one NOTIFY the command causes."""
    (notify,), latency = await command_then_notifies(
        peer, sock, args, in_process=in_process, within=within
    )
    return notify, latency


def restart_on_same_port(xcap: KamailioXcap) -> None:
    """Start a stopped Kamailio again with its database and port, as an
    operator would after an outage (the trusted entry names that port)."""
    assert KAMAILIO is not None
    assert xcap._start(KAMAILIO), xcap.log_path.read_text()


def document_stats(sock: Path) -> dict[str, int | float]:
    """The document source's figures from ``presencex ctl --json stats``."""
    figures = json.loads(ctl(sock, "--json", "stats"))
    assert isinstance(figures, dict)
    documents = figures.get("documents")
    assert isinstance(documents, dict), f"no document statistics in ctl stats: {figures}"
    return documents


# -- SIP messages ---------------------------------------------------------------


def subscribe(
    peer: UdpPeer,
    watcher: str,
    call_id: str,
    presentity: str = ALICE,
    *,
    expires: int = 600,
    extra: list[tuple[str, str]] | None = None,
) -> bytes:
    return request_bytes(
        "SUBSCRIBE",
        presentity,
        from_uri=watcher,
        to_uri=presentity,
        call_id=call_id,
        expires=expires,
        contact=f"sip:w@127.0.0.1:{peer.port}",
        via=f"SIP/2.0/UDP 127.0.0.1:{peer.port}",
        extra=extra,
    )


def publish(
    peer: UdpPeer,
    body: bytes | None = None,
    *,
    tuple_id: str = "phone",
    presentity: str = ALICE,
    if_match: str | None = None,
) -> bytes:
    return request_bytes(
        "PUBLISH",
        presentity,
        from_uri=presentity,
        to_uri=presentity,
        body=body if body is not None else pidf(presentity, tuple_id),
        content_type=PIDF_TYPE,
        expires=600,
        via=f"SIP/2.0/UDP 127.0.0.1:{peer.port}",
        extra=[("SIP-If-Match", if_match)] if if_match else None,
    )


def sub_state(notify: Request) -> str:
    return notify.headers.get("Subscription-State") or ""


async def notifies_within(peer: UdpPeer, within: float) -> list[Request]:
    """Every NOTIFY that arrives within ``within`` seconds (each answered 200)."""
    got: list[Request] = []
    with trio.move_on_after(within):
        while True:
            _, notifies = await peer.collect(notifies=1, within=within + 1)
            got.extend(notifies)
    return got


# -- figures --------------------------------------------------------------------


@dataclass
class Latencies:
    """NOTIFY latencies on the monotonic clock, printed for the closing note."""

    what: str
    samples: list[float] = field(default_factory=list)

    def add(self, started: float) -> None:
        self.samples.append(time.monotonic() - started)

    def summary(self) -> str:
        ms = sorted(s * 1000 for s in self.samples)
        return (
            f"{self.what}: n={len(ms)} min {ms[0]:.1f} ms, median {statistics.median(ms):.1f} ms, "
            f"max {ms[-1]:.1f} ms"
        )


def report(line: str) -> None:
    """Figures go to stdout (``pytest -s``) and to the log pytest keeps for -rA."""
    print(f"\n[issue 5 figures] {line}")


# -- an HTTP listener that records every request --------------------------------


@dataclass(frozen=True)
class Seen:
    method: str
    target: str
    headers: dict[str, str]


Responder = Callable[[Seen], tuple[int, dict[str, str], bytes]]


def not_found(request: Seen) -> tuple[int, dict[str, str], bytes]:
    return 404, {}, b""


@dataclass
class HttpRecorder:
    host: str
    port: int
    responder: Responder
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            with trio.move_on_after(HTTP_TIMEOUT):
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    head += chunk
                if not head:
                    return
                lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
                method, target, *_ = [*lines[0].split(" "), "", ""]
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                request = Seen(method, target, headers)
                self.seen.append(request)
                status, extra, body = self.responder(request)
                reply = [
                    f"HTTP/1.1 {status} X",
                    f"Content-Length: {len(body)}",
                    "Connection: close",
                ]
                reply += [f"{k}: {v}" for k, v in extra.items()]
                await stream.send_all(("\r\n".join(reply) + "\r\n\r\n").encode() + body)
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()


@asynccontextmanager
async def open_http_recorder(
    host: str, responder: Responder = not_found
) -> AsyncIterator[HttpRecorder]:
    """Listen on ``host`` (a loopback address), port chosen by the kernel."""
    listeners = await trio.open_tcp_listeners(0, host=host)
    port = listeners[0].socket.getsockname()[1]
    recorder = HttpRecorder(host, port, responder)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, recorder._handle, listeners)
        try:
            yield recorder
        finally:
            nursery.cancel_scope.cancel()
