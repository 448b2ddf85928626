"""Run the bundled SIPp scenarios against a SIP presence server and measure.

Facts:
- SIPp is an open-loop generator: it starts calls at the target rate whatever
  the server does, so a server that cannot keep up shows failed calls, timed
  out calls or an achieved rate below the target; a step is *sustained* when
  fewer than 0.5 % of its calls failed and it achieved at least 95 % of the
  target (issue 6).
- Figures come from SIPp's own files, never from its screen: ``-trace_stat``
  (cumulative counters, one row a second and one at the end) and
  ``-trace_rtt`` (every response time, in ms).  SIPp's clock ticks in 4 ms
  steps on these machines, so its response times read 0, 4, 8 ms...:
  percentiles are that coarse, and the output says so.
- Every run is bounded: ``-m`` calls, ``-timeout`` seconds, and the process is
  killed (its whole process group) if it overruns even that.
- A call that neither succeeded nor failed when the run stopped (SIPp's
  global timeout) counts as failed.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

SCENARIOS = (
    "subscribe",
    "publish",
    "winfo",
    "dialog",
    "fanout_subscribe",
    "fanout_publish",
    "fanout_uas",
)
# Scenarios a plain ``presencex loadtest --scenario`` runs as one client.
CLIENT_SCENARIOS = ("subscribe", "publish", "winfo", "dialog", "fanout_subscribe", "fanout_publish")
SIPP_CLOCK_MS = 4
SUSTAINED_MAX_FAILED = 0.005
SUSTAINED_MIN_ACHIEVED = 0.95
# Time SIPp gets beyond the nominal step to finish calls still in flight,
# and our own margin beyond SIPp's global timeout before we kill it.
GRACE_SECONDS = 10.0
KILL_MARGIN_SECONDS = 10.0
# SIPp busier than this (CPU seconds per second) is the bottleneck itself.
CLIENT_BOUND_CPU = 0.9
# A call waits at most this long for any one message before it fails.
RECV_TIMEOUT_MS = 5000

Progress = Callable[[str], None]


class SippMissing(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            "SIPp is not installed (no 'sipp' on PATH): install Debian's 'sip-tester' "
            "package (apt-get install sip-tester)"
        )


def find_sipp() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise SippMissing()
    return path


def scenario_path(name: str) -> Path:
    """The bundled scenario file ``name`` (without ``.xml``)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; bundled: {', '.join(SCENARIOS)}")
    ref = resources.files("presencex.loadtest") / "scenarios" / f"{name}.xml"
    return Path(str(ref))


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True, slots=True)
class SippStats:
    """The last row of a ``-trace_stat`` file: cumulative counters."""

    created: int
    successful: int
    failed: int
    retransmissions: int
    elapsed: float  # seconds, CurrentTime - StartTime


def _epoch(value: str) -> float:
    # "2026-11-27\t00:23:58.723496\t1795739038.723496": the last field is epoch.
    return float(value.split()[-1])


def parse_stat_csv(text: str) -> SippStats | None:
    """Counters from SIPp's ``-trace_stat`` CSV (``;``-separated, one header)."""
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=";") if row]
    if len(rows) < 2:
        return None
    header, last = rows[0], rows[-1]
    col = {name: i for i, name in enumerate(header)}
    try:
        return SippStats(
            created=int(last[col["TotalCallCreated"]]),
            successful=int(last[col["SuccessfulCall(C)"]]),
            failed=int(last[col["FailedCall(C)"]]),
            retransmissions=int(last[col["Retransmissions(C)"]]),
            elapsed=_epoch(last[col["CurrentTime"]]) - _epoch(last[col["StartTime"]]),
        )
    except (KeyError, IndexError, ValueError):
        return None


def parse_rtt_csv(text: str) -> list[float]:
    """Response times (ms) from SIPp's ``-trace_rtt`` file:
    ``Date_ms;response_time_ms;rtd_no`` rows after a header."""
    values: list[float] = []
    for line in text.splitlines():
        parts = line.split(";")
        if len(parts) < 2:
            continue
        try:
            values.append(float(parts[1]))
        except ValueError:
            continue  # the header
    return values


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


# ---------------------------------------------------------- server process


@dataclass(frozen=True, slots=True)
class ProcSample:
    cpu_seconds: float
    rss_kb: int
    pss_kb: int | None
    processes: int


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Kamailio runs as several processes)."""
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _pss_kb(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def sample_process(pid: int) -> ProcSample | None:
    """CPU seconds, RSS and PSS summed over ``pid`` and its descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpu, rss, pss, count, pss_ok = 0.0, 0, 0, 0, True
    for p in process_tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            cpu += (int(fields[11]) + int(fields[12])) / ticks
            rss += _status_kb(p, "VmRSS")
        except (OSError, ValueError, IndexError):
            continue
        one = _pss_kb(p)
        if one is None:
            pss_ok = False
        else:
            pss += one
        count += 1
    if count == 0:
        return None
    return ProcSample(cpu, rss, pss if pss_ok else None, count)


def _socket_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    want = f":{port:04X}"
    for table in ("/proc/net/udp", "/proc/net/tcp"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            # UDP sockets are "07" (unconnected); TCP listeners are "0A".
            if local.endswith(want) and state in ("07", "0A") and inode != "0":
                inodes.add(inode)
    return inodes


def find_listening_pid(port: int) -> int | None:
    """The local process (the root of its tree) listening on ``port``."""
    inodes = _socket_inodes(port)
    if not inodes:
        return None
    owners: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                owners.add(int(entry))
                break
    for pid in sorted(owners):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid not in owners:
            return pid
    return min(owners) if owners else None


# ------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class StepResult:
    """One SIPp run at one target rate."""

    scenario: str
    target: str
    transport: str
    target_rate: float
    achieved_rate: float
    calls: int  # created
    successful: int
    failed: int
    retransmissions: int
    elapsed: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    rtt_samples: int
    sipp_clock_ms: int = SIPP_CLOCK_MS
    server_pid: int | None = None
    server_cpu_seconds: float | None = None
    server_rss_kb: int | None = None
    server_pss_kb: int | None = None
    client_cpu_seconds: float | None = None  # SIPp's own CPU (all SIPp processes of the step)
    notifies: int | None = None  # fan-out: NOTIFYs the sink answered
    expected_notifies: int | None = None
    workdir: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed_ratio(self) -> float:
        return self.failed / self.calls if self.calls else 1.0

    @property
    def sustained(self) -> bool:
        notified = (
            self.notifies is None
            or not self.expected_notifies
            or self.notifies >= (1 - SUSTAINED_MAX_FAILED) * self.expected_notifies
        )
        return (
            self.calls > 0
            and notified
            and self.failed_ratio < SUSTAINED_MAX_FAILED
            and self.achieved_rate >= SUSTAINED_MIN_ACHIEVED * self.target_rate
        )

    @property
    def client_bound(self) -> bool:
        """SIPp itself used >= 90 % of its CPU: the step measured SIPp, not
        the server."""
        cpu = self.client_cpu_seconds
        return cpu is not None and self.elapsed > 0 and cpu >= CLIENT_BOUND_CPU * self.elapsed

    @property
    def notify_rate(self) -> float | None:
        if self.notifies is None or self.elapsed <= 0:
            return None
        return self.notifies / self.elapsed

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed_ratio"] = self.failed_ratio
        data["sustained"] = self.sustained
        data["notify_rate"] = self.notify_rate
        data["client_bound"] = self.client_bound
        return data


# ------------------------------------------------------------------- users


def write_users(path: Path, users: int, *, watchers: int = 1, prefix: str = "") -> Path:
    """A SEQUENTIAL injection file ``watcher;presentity``: ``users``
    presentities, each with ``watchers`` watchers (one line per pair); user
    parts start with ``prefix``."""
    width = len(str(max(users, watchers)))
    with open(path, "w", encoding="ascii") as out:
        out.write("SEQUENTIAL\n")
        for p in range(users):
            for w in range(watchers):
                watcher = f"{prefix}w{p:0{width}d}" if watchers == 1 else f"{prefix}w{w:0{width}d}"
                out.write(f"{watcher};{prefix}p{p:0{width}d}\n")
    return path


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def split_target(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"target {target!r} must be HOST:PORT, e.g. 127.0.0.1:5060")
    host = host.strip("[]")
    # SIPp and the NOTIFY sink bind loopback (-i 127.0.0.1), and a bounded
    # load run is meant for a server on this machine: refuse anything else
    # up front rather than fail every call.
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"target {target!r} must be a loopback address (127.0.0.0/8 or ::1)")
    return host, int(port)


# ------------------------------------------------------------------ running


def kill_group(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """End ``proc`` and its process group: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def sipp_command(
    sipp: str,
    scenario: Path,
    *,
    target: str | None,
    local_port: int,
    transport: str,
    rate: float | None,
    calls: int,
    timeout: float,
    injection: Path | None,
    keys: dict[str, str],
    rtt: bool,
    pin_cpu: str | None,
) -> list[str]:
    cmd = [sipp] if target is None else [sipp, target]
    cmd += ["-sf", str(scenario), "-i", "127.0.0.1", "-p", str(local_port), "-t", transport]
    cmd += ["-m", str(calls), "-timeout", f"{math.ceil(timeout)}s", "-nostdin"]
    cmd += ["-trace_stat", "-stf", "stat.csv", "-fd", "1", "-trace_err"]
    if target is not None:
        cmd += ["-recv_timeout", str(RECV_TIMEOUT_MS)]
    if rate is not None:
        # Room for 5 s of calls in flight: a server slower than that fails
        # the step through its achieved rate, not through SIPp's own limit.
        limit = max(200, math.ceil(rate * 5))
        cmd += ["-r", f"{rate:g}", "-rp", "1000", "-l", str(limit)]
    if injection is not None:
        cmd += ["-inf", str(injection)]
    for key, value in keys.items():
        cmd += ["-key", key, value]
    if rtt:
        cmd += ["-trace_rtt", "-rtt_freq", "1"]
    if pin_cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", pin_cpu, *cmd]
    return cmd


@contextmanager
def sipp_process(cmd: list[str], workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """SIPp in its own process group, killed on the way out whatever happens."""
    with open(workdir / "sipp.out", "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        kill_group(proc)


def read_stats(workdir: Path) -> SippStats | None:
    try:
        return parse_stat_csv((workdir / "stat.csv").read_text(errors="replace"))
    except OSError:
        return None


def read_rtts(workdir: Path) -> list[float]:
    values: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        values.extend(parse_rtt_csv(path.read_text(errors="replace")))
    return values


def _cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait(
    proc: subprocess.Popen[bytes],
    workdir: Path,
    deadline: float,
    label: str,
    progress: Progress | None,
) -> float | None:
    """Wait for SIPp to end (or kill it at ``deadline``); its CPU seconds as
    last seen (sampled every 0.5 s: /proc forgets a process once reaped)."""
    start = time.monotonic()
    cpu: float | None = None
    while proc.poll() is None:
        # SIPp runs under taskset, which execs it: the pid is SIPp's.
        cpu = _cpu_seconds(proc.pid) or cpu
        if time.monotonic() > deadline:
            kill_group(proc)
            break
        if progress is not None:
            stats = read_stats(workdir)
            done = f"{time.monotonic() - start:5.1f}s"
            if stats is not None:
                done += (
                    f"  created {stats.created}  ok {stats.successful}"
                    f"  failed {stats.failed}  retrans {stats.retransmissions}"
                )
            progress(f"{label}  {done}")
        time.sleep(0.5)
    return cpu


def run_scenario(
    name: str,
    target: str,
    *,
    rate: float,
    calls: int | None = None,
    seconds: float = 10.0,
    users: int = 1000,
    domain: str = "example.com",
    transport: str = "u1",
    watchers: int = 1,
    keys: dict[str, str] | None = None,
    server_pid: int | None = None,
    pin_cpu: str | None = None,
    workdir: Path | None = None,
    progress: Progress | None = None,
    user_prefix: str = "",
) -> StepResult:
    """Run bundled scenario ``name`` against ``target`` (``HOST:PORT``) at
    ``rate`` calls/s for at most ``calls`` calls (default rate x seconds) and
    ``seconds`` (plus a grace for calls in flight), and measure."""
    sipp = find_sipp()
    split_target(target)
    scenario = scenario_path(name)
    total = calls if calls is not None else max(1, round(rate * seconds))
    total = min(total, max(1, round(rate * seconds)))
    work = workdir or Path(tempfile.mkdtemp(prefix=f"presencex-{name}-"))
    work.mkdir(parents=True, exist_ok=True)
    injection = write_users(work / "users.csv", users, watchers=watchers, prefix=user_prefix)
    sipp_timeout = seconds + GRACE_SECONDS
    cmd = sipp_command(
        sipp,
        scenario,
        target=target,
        local_port=free_port(),
        transport=transport,
        rate=rate,
        calls=total,
        timeout=sipp_timeout,
        injection=injection,
        keys={"domain": domain, **(keys or {})},
        rtt=True,
        pin_cpu=pin_cpu,
    )
    (work / "command").write_text(" ".join(cmd) + "\n")
    before = sample_process(server_pid) if server_pid is not None else None
    with sipp_process(cmd, work) as proc:
        deadline = time.monotonic() + sipp_timeout + KILL_MARGIN_SECONDS
        client_cpu = _wait(proc, work, deadline, f"{name} @ {rate:g}/s", progress)
    after = sample_process(server_pid) if server_pid is not None else None
    result = _result(name, target, transport, rate, work, server_pid, before, after)
    return replace(result, client_cpu_seconds=client_cpu)


def _result(
    name: str,
    target: str,
    transport: str,
    rate: float,
    work: Path,
    server_pid: int | None,
    before: ProcSample | None,
    after: ProcSample | None,
) -> StepResult:
    stats = read_stats(work) or SippStats(0, 0, 0, 0, 0.0)
    rtts = read_rtts(work)
    # A call neither successful nor failed when SIPp stopped was cut off by
    # the bound: it failed.
    failed = max(stats.failed, stats.created - stats.successful)
    achieved = stats.successful / stats.elapsed if stats.elapsed > 0 else 0.0
    cpu = (
        after.cpu_seconds - before.cpu_seconds if before is not None and after is not None else None
    )
    return StepResult(
        scenario=name,
        target=target,
        transport=transport,
        target_rate=rate,
        achieved_rate=achieved,
        calls=stats.created,
        successful=stats.successful,
        failed=failed,
        retransmissions=stats.retransmissions,
        elapsed=stats.elapsed,
        p50_ms=percentile(rtts, 50),
        p95_ms=percentile(rtts, 95),
        p99_ms=percentile(rtts, 99),
        rtt_samples=len(rtts),
        server_pid=server_pid,
        server_cpu_seconds=cpu,
        server_rss_kb=after.rss_kb if after is not None else None,
        server_pss_kb=after.pss_kb if after is not None else None,
        workdir=str(work),
    )


@dataclass(frozen=True, slots=True)
class Sink:
    """A running NOTIFY sink: call it for its counters so far (one successful
    call = one NOTIFY with ``Subscription-State: active`` answered)."""

    pid: int
    workdir: Path

    def __call__(self) -> SippStats | None:
        return read_stats(self.workdir)

    def cpu_seconds(self) -> float | None:
        return _cpu_seconds(self.pid)


@contextmanager
def notify_sink(
    port: int,
    *,
    seconds: float,
    max_notifies: int = 10_000_000,
    pin_cpu: str | None = None,
    workdir: Path | None = None,
) -> Iterator[Sink]:
    """A SIPp UAS on 127.0.0.1:``port`` answering every NOTIFY 200 (the
    ``fanout_uas`` scenario, with ``-deadcall_wait 0``: see its header), for
    at most ``seconds``."""
    sipp = find_sipp()
    work = workdir or Path(tempfile.mkdtemp(prefix="presencex-notify-sink-"))
    work.mkdir(parents=True, exist_ok=True)
    cmd = sipp_command(
        sipp,
        scenario_path("fanout_uas"),
        target=None,
        local_port=port,
        transport="u1",
        rate=None,
        calls=max_notifies,
        timeout=seconds,
        injection=None,
        keys={},
        rtt=False,
        pin_cpu=pin_cpu,
    )
    cmd += ["-deadcall_wait", "0"]
    with sipp_process(cmd, work) as proc:
        time.sleep(0.3)  # let it bind before anyone sends it a NOTIFY
        if proc.poll() is not None:
            out = (work / "sipp.out").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the NOTIFY sink (SIPp) exited at once:\n{out}")
        yield Sink(proc.pid, work)


def wait_for_count(
    read: Callable[[], SippStats | None], want: int, *, timeout: float, settle: float = 1.5
) -> int:
    """Wait until ``read()`` reports ``want`` successful calls, or it stops
    growing for ``settle`` s (the stat file is written once a second), or
    ``timeout`` passes; return the last count."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        stats = read()
        count = stats.successful if stats is not None else 0
        if count >= want:
            return count
        if count != last:
            last, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > settle and count > 0:
            return count
        time.sleep(0.25)
    return max(last, 0)


def hold_subscriptions(
    target: str,
    *,
    presentities: int,
    watchers: int,
    notify_port: int,
    rate: float = 500.0,
    expires: int = 3600,
    domain: str = "example.com",
    prefix: str = "",
    server_pid: int | None = None,
    pin_cpu: str | None = None,
    progress: Progress | None = None,
) -> StepResult:
    """Subscribe ``watchers`` watchers to each of ``presentities``
    presentities and leave them subscribed (``fanout_subscribe``); their
    Contact is the NOTIFY sink on ``notify_port``.  ``prefix`` keeps the
    presentities of two holds on one server apart."""
    total = presentities * watchers
    return run_scenario(
        "fanout_subscribe",
        target,
        rate=rate,
        calls=total,
        seconds=math.ceil(total / rate) + 1,
        users=presentities,
        watchers=watchers,
        domain=domain,
        keys={"notify_port": str(notify_port), "expires": str(expires)},
        user_prefix=prefix,
        server_pid=server_pid,
        pin_cpu=pin_cpu,
        progress=progress,
    )


class FanoutSession:
    """``watchers`` x ``presentities`` subscriptions held once on a server,
    their NOTIFYs answered (and counted) by one sink, for a whole ladder of
    fan-out steps.  Holding them again for every step would leave the
    previous step's watchers behind, pointing at a sink that is gone, and
    every later step would pay for NOTIFYs to nowhere."""

    def __init__(
        self,
        target: str,
        sink: Sink,
        *,
        presentities: int,
        watchers: int,
        domain: str,
        pin_cpu: str | None,
        progress: Progress | None,
    ) -> None:
        self.target = target
        self.sink = sink
        self.presentities = presentities
        self.watchers = watchers
        self.domain = domain
        self.pin_cpu = pin_cpu
        self.progress = progress

    def step(
        self,
        rate: float,
        seconds: float,
        *,
        calls: int | None = None,
        server_pid: int | None = None,
    ) -> StepResult:
        """``fanout_publish`` (initial PUBLISH + removal: two NOTIFY rounds a
        call) at ``rate``; the NOTIFYs delivered while it ran counted."""
        base = self._settled()
        sink_cpu = self.sink.cpu_seconds()
        step = run_scenario(
            "fanout_publish",
            self.target,
            rate=rate,
            calls=calls,
            seconds=seconds,
            users=self.presentities,
            domain=self.domain,
            server_pid=server_pid,
            pin_cpu=self.pin_cpu,
            progress=self.progress,
        )
        expected = 2 * self.watchers * step.successful
        final = wait_for_count(self.sink, base + expected, timeout=GRACE_SECONDS)
        sink_after = self.sink.cpu_seconds()
        client_cpu = step.client_cpu_seconds
        if client_cpu is not None and sink_cpu is not None and sink_after is not None:
            # The sink shares SIPp's CPU: both together are the client side.
            client_cpu += sink_after - sink_cpu
        return replace(
            step,
            notifies=final - base,
            expected_notifies=expected,
            client_cpu_seconds=client_cpu,
            extra={"presentities": self.presentities, "watchers": self.watchers},
        )

    def _settled(self) -> int:
        """The sink's count once it stopped moving (NOTIFYs of an earlier
        step still arriving would be counted in this one)."""
        stats = self.sink()
        last = stats.successful if stats is not None else 0
        return wait_for_count(self.sink, last + 10_000_000, timeout=2 * 1.5 + 1, settle=1.5)


@contextmanager
def fanout_session(
    target: str,
    *,
    seconds: float,
    presentities: int = 100,
    watchers: int = 10,
    domain: str = "example.com",
    subscribe_rate: float = 500.0,
    pin_cpu: str | None = None,
    progress: Progress | None = None,
) -> Iterator[FanoutSession]:
    """Hold the fan-out subscriptions and a sink for at most ``seconds`` of
    steps; every subscription is confirmed (2xx and its first NOTIFY, with
    ``Subscription-State: active``, answered by the sink) before a step."""
    sink_port = free_port()
    hold_seconds = presentities * watchers / subscribe_rate + seconds + 3 * GRACE_SECONDS
    with notify_sink(sink_port, seconds=hold_seconds, pin_cpu=pin_cpu) as sink:
        held = hold_subscriptions(
            target,
            presentities=presentities,
            watchers=watchers,
            notify_port=sink_port,
            rate=subscribe_rate,
            expires=max(60, math.ceil(hold_seconds + 30)),
            domain=domain,
            pin_cpu=pin_cpu,
            progress=progress,
        )
        if held.failed:
            raise RuntimeError(
                f"fan-out: {held.failed} of {held.calls} subscriptions failed (see {held.workdir})"
            )
        confirmed = wait_for_count(sink, held.successful, timeout=GRACE_SECONDS)
        if confirmed < held.successful:
            raise RuntimeError(
                f"fan-out: {confirmed} of {held.successful} subscriptions confirmed active "
                f"by a NOTIFY (see {sink.workdir})"
            )
        yield FanoutSession(
            target,
            sink,
            presentities=presentities,
            watchers=watchers,
            domain=domain,
            pin_cpu=pin_cpu,
            progress=progress,
        )


def run_fanout(
    target: str,
    *,
    rate: float,
    seconds: float,
    presentities: int = 100,
    watchers: int = 10,
    calls: int | None = None,
    domain: str = "example.com",
    subscribe_rate: float = 500.0,
    server_pid: int | None = None,
    pin_cpu: str | None = None,
    progress: Progress | None = None,
) -> StepResult:
    """One fan-out step on its own: hold the subscriptions, publish at
    ``rate`` for ``seconds``, count the NOTIFYs."""
    with fanout_session(
        target,
        seconds=seconds,
        presentities=presentities,
        watchers=watchers,
        domain=domain,
        subscribe_rate=subscribe_rate,
        pin_cpu=pin_cpu,
        progress=progress,
    ) as session:
        return session.step(rate, seconds, calls=calls, server_pid=server_pid)


# ------------------------------------------------------------------ output


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _row(r: StepResult) -> tuple[str, ...]:
    return (
        r.scenario,
        f"{r.target_rate:g}",
        f"{r.achieved_rate:.1f}",
        str(r.successful),
        f"{r.failed}" + (f" ({100 * r.failed_ratio:.2f}%)" if r.failed else ""),
        str(r.retransmissions),
        _ms(r.p50_ms),
        _ms(r.p95_ms),
        _ms(r.p99_ms),
        "-" if r.notify_rate is None else f"{r.notify_rate:.0f}",
        "-" if r.server_cpu_seconds is None else f"{r.server_cpu_seconds:.2f}",
        "-" if r.client_cpu_seconds is None else f"{r.client_cpu_seconds:.2f}",
        "-" if r.server_rss_kb is None else f"{r.server_rss_kb / 1024:.1f}",
    )


TABLE_NOTES = (
    f"Response times are SIPp's (request -> final response); its clock ticks in "
    f"{SIPP_CLOCK_MS} ms steps here, so 0 means under {SIPP_CLOCK_MS} ms. Server CPU is "
    "seconds used during the step, SIPp CPU likewise for SIPp (and the NOTIFY sink); "
    "RSS is at the step's end, summed over the server's processes."
)


def format_table(results: Sequence[StepResult], *, notes: bool = True) -> str:
    """The figures as an aligned text table, with the notes they need."""
    head = (
        "scenario",
        "target/s",
        "achieved/s",
        "ok",
        "failed",
        "retrans",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "NOTIFY/s",
        "srv CPU s",
        "SIPp CPU s",
        "srv RSS MB",
    )
    rows = [head, *(_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    if notes:
        lines.append(TABLE_NOTES)
    return "\n".join(lines)
