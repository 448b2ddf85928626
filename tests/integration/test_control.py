"""The control socket and ``presencex ctl`` against a real server process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from presencex.control import server as control_module
from presencex.control.server import ControlServer, bind_unix_socket
from tests.integration.server import open_udp_peer, running_server
from tests.sipmsg import request_bytes

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"


def ctl(socket_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "presencex", "ctl", "--socket", str(socket_path), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_ctl_stats_subscriptions_and_refresh(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        sock = tmp_path / "ctl.sock"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        watcher = await open_udp_peer(server.port)
        await watcher.send(
            request_bytes(
                "SUBSCRIBE",
                ALICE,
                from_uri=BOB,
                to_uri=ALICE,
                expires=600,
                contact=f"sip:bob@127.0.0.1:{watcher.port}",
                via=f"SIP/2.0/UDP 127.0.0.1:{watcher.port}",
            )
        )
        await watcher.collect(responses=1, notifies=1)

        listed = ctl(sock, "--json", "presentity_list")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == [ALICE]

        subs = ctl(sock, "--json", "subscriptions", ALICE)
        assert subs.returncode == 0, subs.stderr
        (sub,) = json.loads(subs.stdout)
        assert sub["watcher"] == BOB
        assert sub["status"] == "active"

        # refreshWatchers reaches the actor, which NOTIFYs the watcher again.
        refreshed = ctl(sock, "refreshWatchers", ALICE, "presence", "1")
        assert refreshed.returncode == 0, refreshed.stderr
        _, (notify,) = await watcher.collect(notifies=1)
        assert notify.method == "NOTIFY"
        # The seed's spelling with Kamailio's RPC prefix works too.
        assert ctl(sock, "presence.refreshWatchers", ALICE, "presence", "0").returncode == 0

        stats = ctl(sock, "--json", "stats")
        assert stats.returncode == 0
        figures = json.loads(stats.stdout)
        assert figures["transport"]["requests"]["SUBSCRIBE"] == 1
        assert figures["subscriptions"] == {"presence:active": 1}

        wrong = ctl(sock, "nosuchmethod")
        assert wrong.returncode == 1
        assert "unknown method" in wrong.stderr
        bad_args = ctl(sock, "refreshWatchers", ALICE)
        assert bad_args.returncode == 1
        assert "usage" in bad_args.stderr


def test_ctl_without_server_says_so(tmp_path: Path) -> None:
    result = ctl(tmp_path / "nothing.sock", "stats")
    assert result.returncode == 1
    assert "no server is running" in result.stderr


def test_stale_socket_is_replaced_live_one_and_files_are_not(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: stale
    sock = bind_unix_socket(str(path))
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with pytest.raises(OSError, match="another server"):
            bind_unix_socket(str(path))
    finally:
        sock.close()
    regular = tmp_path / "file"
    regular.write_text("keep me")
    with pytest.raises(OSError, match="not a socket"):
        bind_unix_socket(str(regular))
    assert regular.read_text() == "keep me"


async def test_metrics_endpoint_of_a_running_server(tmp_path: Path) -> None:
    import httpx

    from presencex.loadtest.runner import free_port

    port = free_port()
    with running_server(
        tmp_path, f'force_active = 1\nmetrics_listen = "127.0.0.1:{port}"\n'
    ) as server:
        watcher = await open_udp_peer(server.port)
        await watcher.send(
            request_bytes(
                "SUBSCRIBE",
                ALICE,
                from_uri=BOB,
                to_uri=ALICE,
                expires=600,
                contact=f"sip:bob@127.0.0.1:{watcher.port}",
                via=f"SIP/2.0/UDP 127.0.0.1:{watcher.port}",
            )
        )
        await watcher.collect(responses=1, notifies=1)
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            response = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert response.status_code == 200
        assert 'presencex_transport_requests_total{method="SUBSCRIBE"} 1' in response.text
        assert 'presencex_subscriptions{event="presence",status="active"} 1' in response.text


NOBODY_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("refused by mode 0600")
    sys.exit(0)
try:
    s.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "stats"}\\n')
except BrokenPipeError:
    pass  # refused at once: the answer was written before the server closed
print(s.recv(4096).decode())
"""


def as_nobody(sock: Path) -> str:
    result = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            NOBODY_CLIENT,
            str(sock),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(os.getuid() != 0 or shutil.which("setpriv") is None, reason="needs root")
def test_other_users_cannot_command_the_server(tmp_path: Path) -> None:
    # A directory the other user may enter, so only the socket itself decides.
    public = Path(tempfile.mkdtemp(prefix="presencex-ctl-"))
    try:
        public.chmod(0o755)
        sock = public / "ctl.sock"
        with running_server(tmp_path, control_socket=sock):
            # The file mode keeps them out...
            assert "refused by mode 0600" in as_nobody(sock)
            # ...and if an operator loosens it, SO_PEERCRED still does.
            os.chmod(sock, 0o666)
            answer = as_nobody(sock)
            assert "permission denied" in answer
            assert "transport" not in answer
    finally:
        shutil.rmtree(public, ignore_errors=True)


def test_unbindable_control_socket_is_reported_without_a_traceback(tmp_path: Path) -> None:
    # trio wraps a task's OSError in an ExceptionGroup; the CLI must still
    # say "cannot start" in one line rather than dump the group.
    regular = tmp_path / "file"
    regular.write_text("not a directory")
    config = tmp_path / "presencex.toml"
    config.write_text(
        'listen = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]\n'
        f'db_url = "sqlite:///{tmp_path / "presencex.db"}"\n'
        f'control_socket = "{regular / "x.sock"}"\n'
        'force_active = 1\nlog_level = "WARNING"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "presencex", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("presencex: cannot start:"), result.stderr
    assert "control_socket" in result.stderr
    assert "Traceback" not in result.stderr
    assert regular.read_text() == "not a directory"


async def _no_cleanup() -> object:
    return 0


@asynccontextmanager
async def control_server(path: Path) -> AsyncIterator[ControlServer]:
    """A ControlServer in this process, on ``path``, with no actors behind it."""
    server = ControlServer(
        str(path),
        deliver=lambda uri, message: None,
        presentities=list,
        stats=lambda: {"up": True},
        cleanup=_no_cleanup,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


async def _ask_stats(path: Path) -> object:
    async with await trio.open_unix_socket(str(path)) as stream:
        await stream.send_all(b'{"jsonrpc": "2.0", "id": 1, "method": "stats"}\n')
        with trio.fail_after(5):
            return json.loads(await stream.receive_some(65536))["result"]


async def test_a_silent_control_client_is_disconnected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control_module, "IDLE_TIMEOUT", 0.2)
    path = tmp_path / "c.sock"
    async with control_server(path):
        async with await trio.open_unix_socket(str(path)) as silent:
            with trio.fail_after(5):
                assert await silent.receive_some(100) == b""  # closed by the server
        # A half-sent line counts as silence too: the limit is per line.
        async with await trio.open_unix_socket(str(path)) as slow:
            await slow.send_all(b'{"jsonrpc": "2.0",')
            with trio.fail_after(5):
                assert await slow.receive_some(100) == b""
        assert await _ask_stats(path) == {"up": True}


async def test_control_connections_are_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control_module, "MAX_CONNECTIONS", 1)
    path = tmp_path / "c.sock"
    async with control_server(path):
        async with await trio.open_unix_socket(str(path)) as first:
            await first.send_all(b'{"jsonrpc": "2.0", "id": 1, "method": "stats"}\n')
            with trio.fail_after(5):
                await first.receive_some(65536)  # answered: it holds the one slot
            async with await trio.open_unix_socket(str(path)) as second:
                with trio.fail_after(5):
                    refused = json.loads(await second.receive_some(65536))
                    assert refused["error"]["message"] == "too many control connections"
                    assert await second.receive_some(100) == b""
        # The slot is freed when the first one leaves.
        with trio.fail_after(5):
            while True:
                try:
                    assert await _ask_stats(path) == {"up": True}
                    break
                except KeyError:  # the first one's slot not yet released
                    await trio.sleep(0.01)


async def test_a_client_gone_before_its_reply_does_not_stop_the_server(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    async with control_server(path):
        for _ in range(3):
            gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            gone.connect(str(path))
            gone.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "stats"}\n')
            gone.close()  # the reply meets a closed socket: EPIPE
        await trio.sleep(0.1)
        assert await _ask_stats(path) == {"up": True}
