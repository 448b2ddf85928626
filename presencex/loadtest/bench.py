"""``presencex bench``: presencex against Kamailio 5.6 on one pinned core.

Facts:
- Each server runs pinned to CPU 1 (``taskset -c 1``), SIPp (and the latency
  probe) to CPU 0: with two cores, sharing one makes every figure
  meaningless (field notes).
- Every ladder and every memory measurement starts a fresh server with a
  fresh database, so one ladder's leftovers never weigh on the next.  A
  fan-out ladder holds its 100 x 10 subscriptions once, for all its steps.
- Ladders are interleaved (each rate on presencex, then on Kamailio), so a
  neighbour's load that comes and goes weighs on both sides alike.
- A ladder climbs the scenario's rates and stops at the first step that is
  not sustained (< 0.5 % failed calls and achieved >= 95 % of the target;
  fan-out also needs >= 99.5 % of the NOTIFYs delivered); the max sustained
  rate is the highest sustained step.  A step where SIPp itself used >= 90 %
  of its CPU is marked: there SIPp, not the server, may be the limit.
- Latency is measured in its own step at half of presencex's max sustained
  rate (Kamailio's when only Kamailio runs), on both servers: SIPp's p99
  (4 ms clock) and a probe process timing 200 exchanges with a monotonic
  clock while the load runs (``probe.py``).
- Memory per held subscription: hold a warm-up batch, let transactions end,
  sample, hold N more (``fanout_subscribe``, Expires 3600, every one
  confirmed by its 2xx and an active NOTIFY answered by a SIPp sink), let
  transactions end again, sample, divide the growth by N.  RSS is summed
  over the server's processes (it counts Kamailio's shared memory once per
  process that touched it); PSS from ``/proc/PID/smaps_rollup`` shares it
  out, so the PSS figure is the one to compare.
- All servers and SIPp instances are killed as process groups at the end,
  also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from presencex.loadtest import runner, servers
from presencex.loadtest.runner import StepResult

SIDES = ("presencex", "kamailio")
SCENARIOS = ("subscribe", "publish", "fanout")
SERVER_CPU = "1"
SIPP_CPU = "0"


def _span(low: float, high: float, by: float) -> tuple[float, ...]:
    return tuple(low + by * i for i in range(round((high - low) / by) + 1))


DEFAULT_RATES: dict[str, tuple[float, ...]] = {
    "subscribe": _span(1000, 3000, 250),
    "publish": _span(500, 2500, 250),
    # PUBLISH calls/s; each call makes 2 x watchers NOTIFYs.
    "fanout": _span(100, 600, 100),
}
QUICK_RATE = 50.0
QUICK_SECONDS = 3.0
# The CI form holds fewer subscriptions: it checks that everything runs.
QUICK_FANOUT_PRESENTITIES = 10
QUICK_MEMORY = 500
FANOUT_PRESENTITIES = 100
FANOUT_WATCHERS = 10
MEMORY_WARMUP = 1000
MEMORY_WATCHERS = 10
# Probe exchanges timed at half load, one cycle (two exchanges) every
# PROBE_INTERVAL s, starting PROBE_DELAY s into the step.
PROBE_EXCHANGES = 200
PROBE_INTERVAL = 0.04
PROBE_DELAY = 2.0
# Before sampling memory, let transactions of the hold end: presencex keeps a
# completed non-INVITE server transaction for Timer J (64 x T1 = 32 s, RFC
# 3261 §17.2.2) and reports how many it holds; Kamailio's tm keeps one for
# its wait_timer (5 s) and does not say, so it gets a fixed wait.
SETTLE_MIN = 6.0
SETTLE_MAX = 45.0
# Probe kinds per scenario: fan-out's probe publishes to presentities nobody
# watches, so it times the PUBLISH path under a fan-out load.
PROBE_KIND = {"subscribe": "subscribe", "publish": "publish", "fanout": "publish"}

KAMAILIO_DURABILITY = {
    1: "subs_db_mode = 1 (write-through): subscriptions are written to sqlite before their 2xx",
    2: "subs_db_mode = 2 (write-back): subscriptions live in memory and are written "
    "every db_update_period (100 s), so a crash loses up to 100 s of acknowledged "
    "subscriptions",
}


def durability(side: str, synchronous: str, subs_db_mode: int) -> str:
    if side == "presencex":
        power = (
            "a crash of the process or a power loss loses nothing acknowledged"
            if synchronous in ("full", "extra")
            else "a crash of the process (kill -9) loses nothing acknowledged; a power "
            "loss may lose the last commits (WAL not fsync'ed at each commit)"
        )
        return (
            f"presencex (sqlite WAL, db_synchronous = {synchronous}): a 2xx to SUBSCRIBE, "
            f"un-SUBSCRIBE or PUBLISH is sent only after the change is committed (group "
            f"commit); {power}."
        )
    return (
        f"Kamailio 5.6 (db_sqlite, WAL, sqlite's default synchronous = FULL; "
        f"{KAMAILIO_DURABILITY.get(subs_db_mode, f'subs_db_mode = {subs_db_mode}')}; "
        "publ_cache = 1: each PUBLISH is written to the presentity table, autocommit, "
        "before its 200)."
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Benchmark presencex against Kamailio 5.6 (presence + presence_xml, sqlite, "
        "force_active) with the bundled SIPp scenarios: each server pinned to CPU 1, "
        "SIPp to CPU 0, stepped rates; prints max sustained rates, their ratio, latency "
        "at half load (SIPp's and a monotonic-clock probe's), memory per held "
        "subscription and what each side guarantees on durability."
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated from {', '.join(SCENARIOS)} (default all)",
    )
    parser.add_argument("--only", choices=SIDES, help="run one side only")
    parser.add_argument(
        "--step-seconds", type=float, default=15.0, help="seconds per step (default 15)"
    )
    parser.add_argument(
        "--rates", help="override the stepped rates for every scenario, e.g. 200,400,800"
    )
    parser.add_argument(
        "--memory",
        default="10000,50000",
        help="held-subscription counts to measure memory at ('' to skip; default 10000,50000)",
    )
    parser.add_argument(
        "--hold-rate", type=float, default=1000.0, help="SUBSCRIBE/s while holding (default 1000)"
    )
    parser.add_argument(
        "--db-synchronous",
        choices=("full", "normal"),
        default="full",
        help="presencex's db_synchronous (default full)",
    )
    parser.add_argument(
        "--subs-db-mode",
        type=int,
        choices=(1, 2),
        default=2,
        help="Kamailio's subs_db_mode (default 2, its default)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"CI form: {QUICK_SECONDS:g} s per scenario at {QUICK_RATE:g}/s, "
        "1000 held subscriptions, no latency step",
    )
    parser.add_argument("--workdir", type=Path, help="keep logs and databases here")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")


@dataclass
class Report:
    synchronous: str = "full"
    subs_db_mode: int = 2
    ladders: dict[str, dict[str, list[StepResult]]] = field(default_factory=dict)
    half: dict[str, dict[str, StepResult]] = field(default_factory=dict)
    probes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    memory: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)

    def max_rate(self, scenario: str, side: str) -> float | None:
        steps = self.ladders.get(scenario, {}).get(side)
        if steps is None:
            return None
        return max((s.target_rate for s in steps if s.sustained), default=0.0)

    def max_step(self, scenario: str, side: str) -> StepResult | None:
        steps = self.ladders.get(scenario, {}).get(side, [])
        return max((s for s in steps if s.sustained), key=lambda s: s.target_rate, default=None)

    def limit_note(self, scenario: str, side: str) -> str:
        """Why the ladder stopped."""
        steps = self.ladders.get(scenario, {}).get(side, [])
        if not steps:
            return "not run"
        last = steps[-1]
        if last.sustained:
            return "every step sustained: the max is at least this"
        why = (
            f"{last.target_rate:g}/s failed: achieved {last.achieved_rate:.0f}/s, "
            f"{last.failed} failed calls"
        )
        if last.expected_notifies:
            why += f", {last.notifies} of {last.expected_notifies} NOTIFYs"
        if last.client_bound:
            why += " (SIPp used >= 90 % of its CPU: it may be the limit)"
        return why

    def durability(self, side: str) -> str:
        return durability(side, self.synchronous, self.subs_db_mode)

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": machine(),
            "ladders": {
                sc: {side: [s.as_dict() for s in steps] for side, steps in by.items()}
                for sc, by in self.ladders.items()
            },
            "max_sustained": {
                sc: {side: self.max_rate(sc, side) for side in by}
                for sc, by in self.ladders.items()
            },
            "at_half": {
                sc: {side: s.as_dict() for side, s in by.items()} for sc, by in self.half.items()
            },
            "probes": self.probes,
            "memory_per_subscription": {
                side: {str(n): v for n, v in by.items()} for side, by in self.memory.items()
            },
            "durability": {side: self.durability(side) for side in SIDES},
        }


def machine() -> dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sipp": _version(["sipp", "-v"], "SIPp"),
        "kamailio": _version([servers.find_kamailio() or "kamailio", "-v"], "version:"),
    }


def _version(cmd: list[str], marker: str) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    for line in (out.stdout + out.stderr).splitlines():
        if marker in line:
            return line.strip()[:80]
    return "?"


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, report: Report) -> None:
        self.args = args
        self.work = work
        self.report = report

    def server(self, side: str, name: str) -> AbstractContextManager[servers.RunningServer]:
        workdir = self.work / name
        if side == "kamailio":
            return servers.kamailio_server(
                workdir, pin_cpu=SERVER_CPU, subs_db_mode=self.report.subs_db_mode
            )
        return servers.presencex_server(
            workdir,
            pin_cpu=SERVER_CPU,
            extra=f'db_synchronous = "{self.report.synchronous}"\n',
        )

    def ladders(
        self, scenario: str, sides: list[str], rates: tuple[float, ...], seconds: float
    ) -> dict[str, list[StepResult]]:
        """Climb ``rates`` on every side, interleaved: rate r on presencex,
        then r on Kamailio, then the next rate, so a neighbour's load that
        comes and goes on this noisy machine weighs on both sides alike.  A
        side's server is stopped right after its first unsustained step: an
        overloaded server still burning the shared CPU would weigh on the
        other side's next steps."""
        steps: dict[str, list[StepResult]] = {side: [] for side in sides}
        with ExitStack() as outer:
            running: dict[
                str, tuple[ExitStack, servers.RunningServer, runner.FanoutSession | None]
            ] = {}
            for side in sides:
                stack = outer.enter_context(ExitStack())
                server = stack.enter_context(self.server(side, f"{scenario}-{side}-ladder"))
                session = self._session(stack, scenario, server, seconds * len(rates))
                running[side] = (stack, server, session)
            for rate in rates:
                for side in list(running):
                    stack, server, session = running[side]
                    step = self._step(scenario, server, session, rate, seconds)
                    steps[side].append(step)
                    if not step.sustained:
                        stack.close()
                        del running[side]
                if not running:
                    break
        return steps

    def _session(
        self, stack: ExitStack, scenario: str, server: servers.RunningServer, seconds: float
    ) -> runner.FanoutSession | None:
        if scenario != "fanout":
            return None
        quick = self.args.quick
        return stack.enter_context(
            runner.fanout_session(
                server.target,
                # Room for every step plus the waits around it.
                seconds=seconds * 1.5 + 60,
                presentities=QUICK_FANOUT_PRESENTITIES if quick else FANOUT_PRESENTITIES,
                watchers=FANOUT_WATCHERS,
                pin_cpu=SIPP_CPU,
                progress=_progress,
            )
        )

    def _step(
        self,
        scenario: str,
        server: servers.RunningServer,
        session: runner.FanoutSession | None,
        rate: float,
        seconds: float,
    ) -> StepResult:
        if session is not None:
            return session.step(rate, seconds, server_pid=server.pid)
        return runner.run_scenario(
            scenario,
            server.target,
            rate=rate,
            seconds=seconds,
            users=max(1000, int(rate * 2)),
            server_pid=server.pid,
            pin_cpu=SIPP_CPU,
            progress=_progress,
        )

    def half(self, scenario: str, side: str, rate: float, seconds: float) -> None:
        """A step at ``rate`` with the latency probe running alongside."""
        with ExitStack() as stack:
            server = stack.enter_context(self.server(side, f"{scenario}-{side}-half"))
            session = self._session(stack, scenario, server, seconds)
            probe = start_probe(server.target, PROBE_KIND[scenario], self.work)
            try:
                step = self._step(scenario, server, session, rate, seconds)
            finally:
                result = finish_probe(probe)
        self.report.half.setdefault(scenario, {})[side] = step
        self.report.probes.setdefault(scenario, {})[side] = result

    def memory(self, side: str, count: int) -> dict[str, float]:
        hold_rate = self.args.hold_rate
        with (
            self.server(side, f"memory-{side}-{count}") as server,
            runner.notify_sink(
                port := runner.free_port(),
                seconds=(count + MEMORY_WARMUP) / hold_rate + 2 * (SETTLE_MIN + SETTLE_MAX) + 180,
                pin_cpu=SIPP_CPU,
            ) as sink,
        ):

            def hold(n: int, prefix: str, confirmed_before: int) -> StepResult:
                held = runner.hold_subscriptions(
                    server.target,
                    presentities=max(1, n // MEMORY_WATCHERS),
                    watchers=MEMORY_WATCHERS,
                    notify_port=port,
                    rate=hold_rate,
                    expires=servers.MAX_EXPIRES,
                    prefix=prefix,
                    pin_cpu=SIPP_CPU,
                    progress=_progress,
                )
                want = confirmed_before + held.successful
                confirmed = runner.wait_for_count(sink, want, timeout=60)
                if held.failed or confirmed < want:
                    raise RuntimeError(
                        f"{side}: {held.failed} of {held.calls} held subscriptions failed, "
                        f"{confirmed - confirmed_before} confirmed active "
                        f"(see {held.workdir}, {sink.workdir})"
                    )
                if not self.args.quick:
                    _settle(server)
                return held

            warm = hold(QUICK_MEMORY if self.args.quick else MEMORY_WARMUP, "warm", 0)
            before = runner.sample_process(server.pid)
            held = hold(count, "held", warm.successful)
            after = runner.sample_process(server.pid)
            active = _active_subscriptions(server)
        if before is None or after is None:
            raise RuntimeError(f"{side}: could not sample memory (server gone?)")
        out = {
            "held": float(held.successful),
            "warmup": float(warm.successful),
            "failed": float(held.failed),
            "rss_bytes_per_subscription": (after.rss_kb - before.rss_kb) * 1024 / held.successful,
            "rss_mb_after": after.rss_kb / 1024,
            "processes": float(after.processes),
        }
        if active is not None:
            out["server_reports_active"] = float(active)
        if before.pss_kb is not None and after.pss_kb is not None:
            out["pss_bytes_per_subscription"] = (
                (after.pss_kb - before.pss_kb) * 1024 / held.successful
            )
            out["pss_mb_after"] = after.pss_kb / 1024
        return out


def _ctl_stats(server: servers.RunningServer) -> dict[str, Any] | None:
    if server.control_socket is None:
        return None
    from presencex.control.client import call

    try:
        answer = call(str(server.control_socket), "stats", [])
    except (OSError, ValueError):
        return None
    result = answer.get("result")
    return result if isinstance(result, dict) else None


def _settle(server: servers.RunningServer) -> None:
    """Wait for the transactions of a hold to end (see SETTLE_*)."""
    time.sleep(SETTLE_MIN)
    deadline = time.monotonic() + SETTLE_MAX
    while time.monotonic() < deadline:
        stats = _ctl_stats(server)
        if stats is None:
            return
        transport = stats.get("transport", {})
        if not transport.get("server_transactions") and not transport.get("client_transactions"):
            return
        time.sleep(1.0)


def _active_subscriptions(server: servers.RunningServer) -> int | None:
    stats = _ctl_stats(server)
    if stats is None:
        return None
    subscriptions = stats.get("subscriptions", {})
    return sum(int(v) for k, v in subscriptions.items() if str(k).endswith(":active"))


@dataclass(frozen=True, slots=True)
class RunningProbe:
    proc: subprocess.Popen[bytes]
    output: Path


def start_probe(target: str, kind: str, work: Path) -> RunningProbe:
    """The probe as its own process on SIPp's CPU."""
    cmd = [sys.executable, "-m", "presencex.loadtest.probe", target, "--kind", kind]
    cmd += ["--exchanges", str(PROBE_EXCHANGES), "--interval", str(PROBE_INTERVAL)]
    cmd += ["--delay", str(PROBE_DELAY)]
    cmd = ["taskset", "-c", SIPP_CPU, *cmd]
    out = work / f"probe-{time.monotonic_ns()}.json"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.DEVNULL, start_new_session=True)
    return RunningProbe(proc, out)


def finish_probe(probe: RunningProbe) -> dict[str, Any]:
    try:
        probe.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        runner.kill_group(probe.proc)
        return {"error": "probe did not finish in 30 s"}
    try:
        result = json.loads(probe.output.read_text())
    except (OSError, ValueError) as exc:
        return {"error": f"probe output unreadable: {exc}"}
    return result if isinstance(result, dict) else {"error": "probe output not an object"}


def _progress(line: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K" + line)
        sys.stderr.flush()


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    try:
        runner.find_sipp()
    except runner.SippMissing as exc:
        print(f"presencex bench: {exc}", file=sys.stderr)
        return 2
    sides = [args.only] if args.only else list(SIDES)
    if "kamailio" in sides and (why := servers.kamailio_missing()) is not None:
        print(f"presencex bench: {why}", file=sys.stderr)
        return 2
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if bad := [s for s in scenarios if s not in SCENARIOS]:
        print(f"presencex bench: unknown scenario(s) {bad}; known {SCENARIOS}", file=sys.stderr)
        return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="presencex-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    report = Report(synchronous=args.db_synchronous, subs_db_mode=args.subs_db_mode)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    started = time.monotonic()
    try:
        _run_all(Bench(args, work, report), sides, scenarios)
    except KeyboardInterrupt:
        print("\npresencex bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if sys.stderr.isatty():
            sys.stderr.write("\r\x1b[K")
    print_report(report, sides, scenarios, work, time.monotonic() - started)
    if args.json is not None:
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    if args.quick:
        # The CI form asserts correctness, not speed: any failed call fails it.
        steps = [s for by in report.ladders.values() for st in by.values() for s in st]
        return 1 if not steps or any(s.failed or not s.sustained for s in steps) else 0
    return 0


def _run_all(bench: Bench, sides: list[str], scenarios: list[str]) -> None:
    args, report = bench.args, bench.report
    seconds = QUICK_SECONDS if args.quick else args.step_seconds
    for scenario in scenarios:
        rates: tuple[float, ...]
        if args.quick:
            rates = (QUICK_RATE,)
        elif args.rates:
            rates = tuple(float(r) for r in args.rates.split(","))
        else:
            rates = DEFAULT_RATES[scenario]
        report.ladders[scenario] = bench.ladders(scenario, sides, rates, seconds)
        if args.quick:
            continue
        reference = report.max_rate(scenario, sides[0]) or rates[0]
        for side in sides:
            bench.half(scenario, side, max(1.0, reference / 2), seconds)
    counts = [int(c) for c in args.memory.split(",") if c.strip()]
    if args.quick:
        counts = [QUICK_MEMORY] if counts else []
    for side in sides:
        for count in counts:
            report.memory.setdefault(side, {})[count] = bench.memory(side, count)


def _ms(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def print_report(
    report: Report, sides: list[str], scenarios: list[str], work: Path, elapsed: float
) -> None:
    info = machine()
    print(
        f"presencex bench: servers on CPU {SERVER_CPU}, SIPp and probe on CPU {SIPP_CPU}; "
        f"{elapsed / 60:.1f} min; logs in {work}"
    )
    print(
        f"machine: {info['cpu']} ({os.cpu_count()} CPUs), Linux {info['kernel']}, "
        f"Python {info['python']}; {info['sipp']}; {info['kamailio']}"
    )
    print(
        f"presencex: db_synchronous = {report.synchronous}; "
        f"Kamailio: subs_db_mode = {report.subs_db_mode}, one worker (see presence.cfg)"
    )
    print(runner.TABLE_NOTES)
    for scenario in scenarios:
        print(f"\n== {scenario}")
        for side in sides:
            steps = report.ladders.get(scenario, {}).get(side, [])
            print(f"-- {side} ladder")
            print(runner.format_table(steps, notes=False))
        for side, step in report.half.get(scenario, {}).items():
            print(f"-- {side} at half of the reference max, with the latency probe")
            print(runner.format_table([step], notes=False))
    print("\n== summary (ratios within this run)")
    for scenario in scenarios:
        rates = {side: report.max_rate(scenario, side) for side in sides}
        unit = "PUBLISH calls/s" if scenario == "fanout" else "calls/s"
        print(f"{scenario}:")
        for side in sides:
            best = report.max_step(scenario, side)
            notify = ""
            if best is not None and best.notify_rate is not None:
                notify = f" ({best.notify_rate:.0f} NOTIFY/s delivered)"
            print(
                f"  max sustained {side:>9}: {rates[side] or 0:g} {unit}{notify}; "
                f"{report.limit_note(scenario, side)}"
            )
        if len(sides) == 2:
            k = rates["kamailio"] or 0.0
            ratio = f"{(rates['presencex'] or 0.0) / k:.2f}" if k else "- (Kamailio sustained none)"
            print(f"  ratio presencex/kamailio: {ratio}")
        for side, step in report.half.get(scenario, {}).items():
            probe = report.probes.get(scenario, {}).get(side, {})
            if "error" in probe:
                probed = f"probe failed: {probe['error']}"
            else:
                probed = (
                    f"probe ({probe.get('kind')}, {probe.get('answered')}/{probe.get('sent')} "
                    f"answered, {probe.get('non_2xx')} non-2xx) p50 {_ms(probe.get('p50_ms'))} "
                    f"p99 {_ms(probe.get('p99_ms'))} max {_ms(probe.get('max_ms'))} ms"
                )
            print(
                f"  at {step.target_rate:g}/s (half) {side:>9}: SIPp p99 {_ms(step.p99_ms)} ms "
                f"(4 ms clock, failed {step.failed}); {probed}"
            )
    for side, by_count in report.memory.items():
        for count, figures in by_count.items():
            pss = figures.get("pss_bytes_per_subscription")
            active = figures.get("server_reports_active")
            print(
                f"memory {side:>9} at {count} held subscriptions: "
                f"RSS {figures['rss_bytes_per_subscription']:.0f} B/sub"
                + (f", PSS {pss:.0f} B/sub" if pss is not None else "")
                + f" (held {figures['held']:.0f} + {figures['warmup']:.0f} warm-up, all confirmed active"
                + (f", server reports {active:.0f} active" if active is not None else "")
                + f"; {figures['processes']:.0f} process(es), RSS after "
                f"{figures['rss_mb_after']:.0f} MB)"
            )
    print()
    for side in sides:
        print(f"durability: {report.durability(side)}")
