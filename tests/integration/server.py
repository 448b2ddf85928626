"""Run ``presencex serve`` as a real process on loopback, and talk to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from presencex.loadtest.runner import free_port
from presencex.sip.message import Request, Response
from presencex.sip.parse import MAX_MESSAGE_SIZE, StreamFramer, parse_message

START_TIMEOUT = 15.0


@dataclass
class ServerProcess:
    port: int
    config_path: Path
    db_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "presencex", "serve", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()}")
            text = self.log_path.read_text(errors="replace")
            if text.count("events:") > self.starts:
                self.starts += 1
                return
            time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()}")

    starts: int = 0

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


@contextmanager
def running_server(
    tmp_path: Path, extra: str = "force_active = 1\n", control_socket: Path | None = None
) -> Iterator[ServerProcess]:
    port = free_port()
    db = tmp_path / "presencex.db"
    config = tmp_path / "presencex.toml"
    config.write_text(
        f'listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]\n'
        f'db_url = "sqlite:///{db}"\n'
        f'control_socket = "{control_socket or tmp_path / "ctl.sock"}"\n'
        "min_expires = 10\n"
        'log_level = "INFO"\n' + extra
    )
    server = ServerProcess(port, config, db, tmp_path / "server.log")
    server.start()
    try:
        yield server
    finally:
        close_peers()
        server.stop()


class UdpPeer:
    """A SIP user agent on a UDP socket: sends requests, collects messages,
    answers NOTIFYs 200 when asked to."""

    def __init__(self, sock: trio.socket.SocketType, server: tuple[str, int]) -> None:
        self.sock = sock
        self.server = server
        self.port = sock.getsockname()[1]

    async def send(self, data: bytes) -> None:
        await self.sock.sendto(data, self.server)

    async def receive_raw(self, within: float = 5.0) -> bytes:
        with trio.fail_after(within):
            data, _ = await self.sock.recvfrom(65535)
        return bytes(data)

    async def receive(self, within: float = 5.0) -> Request | Response:
        return parse_message(await self.receive_raw(within))

    async def answer(self, request: Request, status: int = 200) -> None:
        from presencex.sip.build import make_response, serialize

        await self.send(serialize(make_response(request, status)))

    async def collect(
        self, *, responses: int = 0, notifies: int = 0, within: float = 5.0, answer: int = 200
    ) -> tuple[list[Response], list[Request]]:
        """Receive until the given numbers of responses and NOTIFYs arrived
        (in any order, as RFC 6665 allows), answering each NOTIFY."""
        got_responses: list[Response] = []
        got_notifies: list[Request] = []
        with trio.fail_after(within):
            while len(got_responses) < responses or len(got_notifies) < notifies:
                msg = await self.receive(within)
                if isinstance(msg, Response):
                    got_responses.append(msg)
                elif msg.method == "NOTIFY":
                    got_notifies.append(msg)
                    await self.answer(msg, answer)
        return got_responses, got_notifies


_open_peers: list[trio.socket.SocketType] = []


async def open_udp_peer(port: int) -> UdpPeer:
    """A UDP peer on a fresh loopback port; closed by ``close_peers``."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    sock = trio.socket.from_stdlib_socket(raw)
    _open_peers.append(sock)
    return UdpPeer(sock, ("127.0.0.1", port))


def close_peers() -> None:
    while _open_peers:
        _open_peers.pop().close()


class TcpPeer:
    def __init__(self, stream: trio.SocketStream, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self.stream = stream
        self.framer = StreamFramer(max_size)
        self.max_size = max_size
        self.pending: list[bytes] = []
        self.port = stream.socket.getsockname()[1]

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive(self, within: float = 5.0) -> Request | Response:
        with trio.fail_after(within):
            while not self.pending:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError("server closed the connection")
                self.pending.extend(self.framer.feed(data))
        return parse_message(self.pending.pop(0), max_size=self.max_size)

    async def answer(self, request: Request, status: int = 200) -> None:
        from presencex.sip.build import make_response, serialize

        await self.send(serialize(make_response(request, status)))
