"""Start presencex and Kamailio on loopback for a load test, and stop them.

Facts:
- Each server runs in its own process group (``start_new_session``) and is
  killed as a group on the way out of its context manager, whatever ends the
  block (an error, Ctrl-C).
- Kamailio gets a fresh sqlite database made from Kamailio's own
  ``{standard,presence}-create.sql`` in WAL mode, and the bundled
  ``kamailio/presence.cfg`` (its header says why one worker).
- A server is ready when it answers an OPTIONS over UDP (any response).
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from presencex.loadtest.runner import free_port, kill_group

KAMAILIO_CFG = Path(__file__).parent / "kamailio" / "presence.cfg"
KAMAILIO_SQL = Path("/usr/share/kamailio/db_sqlite")
START_TIMEOUT = 15.0
MIN_EXPIRES = 30
MAX_EXPIRES = 3600


@dataclass(frozen=True, slots=True)
class RunningServer:
    name: str
    port: int
    pid: int
    workdir: Path
    log: Path
    control_socket: Path | None = None  # presencex's

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def find_kamailio() -> str | None:
    found = shutil.which("kamailio")
    if found is None and Path("/usr/sbin/kamailio").exists():
        found = "/usr/sbin/kamailio"
    return found


def kamailio_missing() -> str | None:
    """Why Kamailio cannot be started here, or ``None``."""
    if find_kamailio() is None:
        return "kamailio is not installed (Debian: kamailio, kamailio-presence-modules, …)"
    for sql in ("standard-create.sql", "presence-create.sql"):
        if not (KAMAILIO_SQL / sql).exists():
            return f"{KAMAILIO_SQL / sql} is missing (Debian: kamailio-sqlite-modules)"
    return None


def answers_options(port: int, timeout: float = 0.5) -> bool:
    """Send one OPTIONS to 127.0.0.1:``port`` over UDP; True on any response."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        stamp = f"{time.monotonic_ns()}"
        msg = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-ready-{stamp};rport\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=ready{stamp}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: ready-{stamp}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        sock.settimeout(timeout)
        sock.sendto(msg.encode(), ("127.0.0.1", port))
        try:
            data = sock.recv(65535)
        except OSError:
            return False
        return data.startswith(b"SIP/2.0 ")


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{name} exited at start:\n{log.read_text(errors='replace')[-3000:]}"
            )
        if answers_options(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer within {START_TIMEOUT:g} s; see {log}")


@contextmanager
def _process(
    cmd: list[str], port: int, workdir: Path, name: str, pin_cpu: str | None
) -> Iterator[RunningServer]:
    if pin_cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", pin_cpu, *cmd]
    log = workdir / f"{name}.log"
    (workdir / f"{name}.command").write_text(" ".join(cmd) + "\n")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_ready(proc, port, log, name)
        # taskset execs the server, so the pid is the server's.
        yield RunningServer(name, port, proc.pid, workdir, log)
    finally:
        kill_group(proc)


def make_kamailio_db(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        for sql in ("standard-create.sql", "presence-create.sql"):
            db.executescript((KAMAILIO_SQL / sql).read_text())
        db.execute("PRAGMA journal_mode=WAL")
    return path


@contextmanager
def kamailio_server(
    workdir: Path,
    *,
    port: int | None = None,
    pin_cpu: str | None = None,
    shm_mb: int = 512,
    subs_db_mode: int = 2,
) -> Iterator[RunningServer]:
    """Kamailio 5.6 with the bundled presence.cfg on 127.0.0.1:``port``."""
    kamailio = find_kamailio()
    if kamailio is None:
        raise RuntimeError(kamailio_missing() or "kamailio is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    db = make_kamailio_db(workdir / "kamailio.db")
    cmd = [
        kamailio,
        *("-f", str(KAMAILIO_CFG), "-DD", "-E", "-m", str(shm_mb), "-M", "16"),
        *("-l", f"udp:127.0.0.1:{port}", "-l", f"tcp:127.0.0.1:{port}"),
        *("-P", str(workdir / "kamailio.pid"), "-Y", str(workdir)),
        *("-A", f'DBURL="sqlite:///{db}"', "-A", f'SERVER_ADDRESS="sip:127.0.0.1:{port}"'),
        *("-A", f"SUBS_DB_MODE={subs_db_mode}"),
        *("-A", f"MIN_EXPIRES={MIN_EXPIRES}", "-A", f"MAX_EXPIRES={MAX_EXPIRES}"),
    ]
    with _process(cmd, port, workdir, "kamailio", pin_cpu) as server:
        yield server


# sockaddr_un holds 108 bytes: a deep work directory (pytest's) gets its
# control socket in a short temporary directory instead.
MAX_SOCKET_PATH = 100


def control_socket_path(workdir: Path) -> Path:
    path = workdir / "presencex.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    return Path(tempfile.mkdtemp(prefix="pxctl-")) / "presencex.sock"


def presencex_config(workdir: Path, port: int, extra: str = "", socket: Path | None = None) -> Path:
    config = workdir / "presencex.toml"
    socket = socket or control_socket_path(workdir)
    config.write_text(
        f'listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]\n'
        f'db_url = "sqlite:///{workdir / "presencex.db"}"\n'
        f'control_socket = "{socket}"\n'
        "force_active = 1\n"
        f"min_expires = {MIN_EXPIRES}\n"
        f"max_expires = {MAX_EXPIRES}\n"
        'log_level = "WARNING"\n' + extra
    )
    return config


@contextmanager
def presencex_server(
    workdir: Path, *, port: int | None = None, pin_cpu: str | None = None, extra: str = ""
) -> Iterator[RunningServer]:
    """``presencex serve --config <generated>`` on 127.0.0.1:``port``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    socket = control_socket_path(workdir)
    config = presencex_config(workdir, port, extra, socket)
    cmd = [sys.executable, "-m", "presencex", "serve", "--config", str(config)]
    try:
        with _process(cmd, port, workdir, "presencex", pin_cpu) as server:
            yield replace(server, control_socket=socket)
    finally:
        if socket.parent != workdir:
            shutil.rmtree(socket.parent, ignore_errors=True)
