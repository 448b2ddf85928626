"""``presencex bench``: presencex against Kamailio 5.6 on one pinned core.

Facts:
- Each server runs pinned to CPU 1 (``taskset -c 1``), SIPp to CPU 0: with
  two cores, sharing one makes every figure meaningless (field notes).
- Every ladder and every memory measurement starts a fresh server with a
  fresh database, so one step's leftovers never weigh on the next.
- A ladder climbs the scenario's rates and stops at the first step that is
  not sustained (< 0.5 % failed calls and achieved >= 95 % of the target);
  the max sustained rate is the highest sustained step.
- p99 is measured in its own step at half of presencex's max sustained rate
  (Kamailio's when only Kamailio runs), on both servers.
- Memory per held subscription: hold a warm-up batch, sample, hold N more
  (``fanout_subscribe``, Expires 3600, NOTIFYs answered by a SIPp sink),
  sample again, divide the growth by N.  RSS is summed over the server's
  processes (it counts Kamailio's shared memory once per process that
  touched it); PSS from ``/proc/PID/smaps_rollup`` shares it out, so the
  PSS figure is the one to compare.
- All servers and SIPp instances are killed as process groups at the end,
  also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
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
DEFAULT_RATES: dict[str, tuple[float, ...]] = {
    "subscribe": (250, 500, 1000, 1500, 2000, 2500, 3000, 4000),
    "publish": (100, 200, 400, 600, 800, 1000, 1500),
    # PUBLISH calls/s; each call makes 2 x watchers NOTIFYs.
    "fanout": (100, 200, 400, 600, 800, 1000, 1200),
}
QUICK_RATE = 50.0
QUICK_SECONDS = 3.0
FANOUT_PRESENTITIES = 100
FANOUT_WATCHERS = 10
MEMORY_WARMUP = 1000
DURABILITY = {
    "presencex": (
        "presencex (db_synchronous = full): a 2xx to SUBSCRIBE or PUBLISH is sent only "
        "after the change is committed and fsync'ed (group commit); a crash or power "
        "loss loses nothing acknowledged."
    ),
    "kamailio": (
        "Kamailio 5.6 (subs_db_mode = 2, publ_cache = 1, sqlite WAL, synchronous = FULL): "
        "a PUBLISH is written to sqlite before its 200, but subscriptions are kept in "
        "memory and written every db_update_period (100 s): a crash loses up to 100 s "
        "of acknowledged subscriptions."
    ),
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Benchmark presencex against Kamailio 5.6 (presence + presence_xml, sqlite, "
        "force_active) with the bundled SIPp scenarios: each server pinned to CPU 1, "
        "SIPp to CPU 0, stepped rates; prints max sustained rates, their ratio, p99 at "
        "half load and memory per held subscription."
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
        "--quick", action="store_true", help=f"{QUICK_SECONDS:g} s per scenario at {QUICK_RATE:g}/s"
    )
    parser.add_argument("--workdir", type=Path, help="keep logs and databases here")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")


@dataclass
class Report:
    ladders: dict[str, dict[str, list[StepResult]]] = field(default_factory=dict)
    half: dict[str, dict[str, StepResult]] = field(default_factory=dict)
    memory: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)

    def max_rate(self, scenario: str, side: str) -> float | None:
        steps = self.ladders.get(scenario, {}).get(side)
        if steps is None:
            return None
        return max((s.target_rate for s in steps if s.sustained), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ladders": {
                sc: {side: [s.as_dict() for s in steps] for side, steps in by.items()}
                for sc, by in self.ladders.items()
            },
            "max_sustained": {
                sc: {side: self.max_rate(sc, side) for side in by}
                for sc, by in self.ladders.items()
            },
            "p99_at_half": {
                sc: {side: s.as_dict() for side, s in by.items()} for sc, by in self.half.items()
            },
            "memory_per_subscription": {
                side: {str(n): v for n, v in by.items()} for side, by in self.memory.items()
            },
            "durability": DURABILITY,
        }


def _server(side: str, workdir: Path) -> AbstractContextManager[servers.RunningServer]:
    if side == "kamailio":
        return servers.kamailio_server(workdir, pin_cpu=SERVER_CPU)
    return servers.presencex_server(workdir, pin_cpu=SERVER_CPU)


def _step(scenario: str, server: servers.RunningServer, rate: float, seconds: float) -> StepResult:
    if scenario == "fanout":
        return runner.run_fanout(
            server.target,
            rate=rate,
            seconds=seconds,
            presentities=FANOUT_PRESENTITIES,
            watchers=FANOUT_WATCHERS,
            server_pid=server.pid,
            pin_cpu=SIPP_CPU,
            progress=_progress,
        )
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


def _ladder(
    scenario: str, side: str, rates: tuple[float, ...], seconds: float, work: Path
) -> Iterator[StepResult]:
    with _server(side, work / f"{scenario}-{side}-ladder") as server:
        for rate in rates:
            step = _step(scenario, server, rate, seconds)
            yield step
            if not step.sustained:
                return


def _hold_memory(side: str, count: int, hold_rate: float, work: Path) -> dict[str, float]:
    watchers = 10
    with (
        _server(side, work / f"memory-{side}-{count}") as server,
        runner.notify_sink(
            port := runner.free_port(),
            seconds=(count + MEMORY_WARMUP) / hold_rate + 120,
            pin_cpu=SIPP_CPU,
        ) as sink,
    ):

        def hold(n: int) -> StepResult:
            return runner.hold_subscriptions(
                server.target,
                presentities=max(1, n // watchers),
                watchers=watchers,
                notify_port=port,
                rate=hold_rate,
                pin_cpu=SIPP_CPU,
                progress=_progress,
            )

        warm = hold(MEMORY_WARMUP)
        runner.wait_for_count(sink, warm.successful, timeout=30)
        before = runner.sample_process(server.pid)
        held = hold(count)
        runner.wait_for_count(sink, warm.successful + held.successful, timeout=60)
        after = runner.sample_process(server.pid)
    if before is None or after is None or held.successful == 0:
        raise RuntimeError(f"{side}: could not sample memory (server gone?)")
    out = {
        "held": float(held.successful),
        "failed": float(held.failed),
        "rss_bytes_per_subscription": (after.rss_kb - before.rss_kb) * 1024 / held.successful,
    }
    if before.pss_kb is not None and after.pss_kb is not None:
        out["pss_bytes_per_subscription"] = (after.pss_kb - before.pss_kb) * 1024 / held.successful
    return out


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
    report = Report()
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        _run_all(args, sides, scenarios, work, report)
    except KeyboardInterrupt:
        print("\npresencex bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if sys.stderr.isatty():
            sys.stderr.write("\r\x1b[K")
    _print_report(report, sides, scenarios, work)
    if args.json is not None:
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return 0


def _run_all(
    args: argparse.Namespace, sides: list[str], scenarios: list[str], work: Path, report: Report
) -> None:
    seconds = QUICK_SECONDS if args.quick else args.step_seconds
    for scenario in scenarios:
        rates: tuple[float, ...]
        if args.quick:
            rates = (QUICK_RATE,)
        elif args.rates:
            rates = tuple(float(r) for r in args.rates.split(","))
        else:
            rates = DEFAULT_RATES[scenario]
        by_side = report.ladders.setdefault(scenario, {})
        for side in sides:
            by_side[side] = list(_ladder(scenario, side, rates, seconds, work))
        if args.quick:
            continue
        reference = report.max_rate(scenario, sides[0]) or rates[0]
        half = max(1.0, reference / 2)
        for side in sides:
            with _server(side, work / f"{scenario}-{side}-half") as server:
                report.half.setdefault(scenario, {})[side] = _step(scenario, server, half, seconds)
    counts = [int(c) for c in args.memory.split(",") if c.strip()]
    if args.quick:
        counts = [1000] if counts else []
    for side in sides:
        for count in counts:
            report.memory.setdefault(side, {})[count] = _hold_memory(
                side, count, args.hold_rate, work
            )


def _print_report(report: Report, sides: list[str], scenarios: list[str], work: Path) -> None:
    print(f"presencex bench: servers on CPU {SERVER_CPU}, SIPp on CPU {SIPP_CPU}; logs in {work}")
    for scenario in scenarios:
        print(f"\n== {scenario}")
        for side in sides:
            steps = report.ladders.get(scenario, {}).get(side, [])
            print(f"-- {side}")
            print(runner.format_table(steps))
        rates = {side: report.max_rate(scenario, side) for side in sides}
        for side in sides:
            print(f"max sustained {side:>9}: {rates[side]:g} calls/s")
        if len(sides) == 2 and rates["kamailio"]:
            ratio = (rates["presencex"] or 0.0) / (rates["kamailio"] or 1.0)
            print(f"ratio presencex/kamailio: {ratio:.2f}")
        for side, step in report.half.get(scenario, {}).items():
            print(
                f"p99 at {step.target_rate:g}/s (half of max) {side:>9}: {step.p99_ms} ms "
                f"(failed {step.failed}, SIPp clock {runner.SIPP_CLOCK_MS} ms)"
            )
    for side, by_count in report.memory.items():
        for count, figures in by_count.items():
            pss = figures.get("pss_bytes_per_subscription")
            print(
                f"memory {side:>9} at {count} held subscriptions: "
                f"RSS {figures['rss_bytes_per_subscription']:.0f} B/sub"
                + (f", PSS {pss:.0f} B/sub" if pss is not None else "")
                + f" (held {figures['held']:.0f}, failed {figures['failed']:.0f})"
            )
    print()
    for side in sides:
        print(f"durability: {DURABILITY[side]}")
