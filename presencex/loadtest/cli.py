"""``presencex loadtest``: run a bundled SIPp scenario against a server.

The main CLI (``presencex/cli.py``) calls ``configure_parser`` and ``run``
for the ``loadtest`` subcommand.  Exit status: 0 when no call failed, 1 when
some did, 2 when SIPp is missing or the arguments are wrong.

``--quick`` is the CI form: every named scenario (default: all of them) for
``QUICK_SECONDS`` at ``QUICK_RATE`` calls/s, fan-out with a small
``QUICK_PRESENTITIES`` x ``QUICK_WATCHERS`` audience; it checks that nothing
fails, not how fast.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from pathlib import Path

from presencex.loadtest import runner
from presencex.loadtest.runner import StepResult

FANOUT = "fanout"
QUICK_RATE = 50.0
QUICK_SECONDS = 3.0
QUICK_USERS = 100
QUICK_PRESENTITIES = 10
QUICK_WATCHERS = 5


def _rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: rates are numbers like 100,200,400") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"{text!r}: rates must be positive")
    return rates


def _scenarios(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    allowed = (*runner.CLIENT_SCENARIOS, FANOUT)
    for name in names:
        if name not in allowed:
            raise argparse.ArgumentTypeError(f"{name!r}: scenarios are {', '.join(allowed)}")
    return names


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run a bundled SIPp scenario against a SIP presence server at a rate or stepped "
        "rates, bounded in calls and seconds, and print rates, failures, retransmissions, "
        "response times and (for a local server) its CPU and memory."
    )
    parser.add_argument(
        "--target", default="127.0.0.1:5060", help="server HOST:PORT (default %(default)s)"
    )
    parser.add_argument(
        "--scenario",
        type=_scenarios,
        help=f"comma-separated: {', '.join((*runner.CLIENT_SCENARIOS, FANOUT))} "
        "(default subscribe; with --quick subscribe, publish, winfo, dialog, fanout)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"CI form: {QUICK_SECONDS:g} s per scenario at {QUICK_RATE:g}/s, fan-out "
        f"{QUICK_PRESENTITIES}x{QUICK_WATCHERS}; exit 1 on any failed call",
    )
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--rate", type=float, help="calls per second (default 50)")
    rate.add_argument("--rates", type=_rates, help="stepped rates, e.g. 100,200,400")
    parser.add_argument("--calls", type=int, help="at most this many calls per step")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="seconds per step (default %(default)s)"
    )
    parser.add_argument(
        "--users", type=int, default=1000, help="users in the injection file (default %(default)s)"
    )
    parser.add_argument("--domain", default="example.com", help="SIP domain ([domain])")
    parser.add_argument(
        "--transport",
        default="u1",
        choices=("u1", "un", "t1", "tn"),
        help="SIPp transport mode (default %(default)s)",
    )
    parser.add_argument(
        "--watchers", type=int, default=10, help="fanout: watchers per presentity (default 10)"
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        help="server process to sample CPU/RSS of (default: the local process on the port)",
    )
    parser.add_argument("--pin-cpu", help="run SIPp under taskset -c CPUS")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")


def _server_pid(args: argparse.Namespace) -> int | None:
    if args.server_pid is not None:
        return int(args.server_pid)
    host, port = runner.split_target(args.target)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return runner.find_listening_pid(port) if loopback else None


def _progress(line: str) -> None:
    sys.stderr.write("\r\x1b[K" + line if sys.stderr.isatty() else line + "\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    try:
        runner.find_sipp()
        runner.split_target(args.target)
    except (runner.SippMissing, ValueError) as exc:
        print(f"presencex loadtest: {exc}", file=sys.stderr)
        return 2
    if args.quick:
        if args.scenario is None:
            args.scenario = ["subscribe", "publish", "winfo", "dialog", FANOUT]
        if args.rate is None and args.rates is None:
            args.rates = [QUICK_RATE]
        args.seconds = QUICK_SECONDS
        args.users = QUICK_USERS
        args.watchers = QUICK_WATCHERS
    elif args.scenario is None:
        args.scenario = ["subscribe"]
    rates = args.rates or [args.rate if args.rate is not None else 50.0]
    pid = _server_pid(args)
    results: list[StepResult] = []
    try:
        for name in args.scenario:
            for rate in rates:
                # A loop, not a comprehension: steps done before Ctrl-C are kept.
                results.append(_step(name, rate, pid, args))  # noqa: PERF401
    except KeyboardInterrupt:
        print("\npresencex loadtest: interrupted", file=sys.stderr)
    finally:
        if sys.stderr.isatty():
            sys.stderr.write("\r\x1b[K")
    print(f"target {args.target}" + (f", server pid {pid}" if pid else ""))
    print(runner.format_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    incomplete = any(
        r.expected_notifies is not None and r.notifies != r.expected_notifies for r in results
    )
    return 1 if not results or incomplete or any(r.failed for r in results) else 0


def _step(name: str, rate: float, pid: int | None, args: argparse.Namespace) -> StepResult:
    if name == FANOUT:
        return runner.run_fanout(
            args.target,
            rate=rate,
            seconds=args.seconds,
            calls=args.calls,
            presentities=QUICK_PRESENTITIES if args.quick else args.users,
            watchers=args.watchers,
            domain=args.domain,
            server_pid=pid,
            pin_cpu=args.pin_cpu,
            progress=_progress,
        )
    return runner.run_scenario(
        name,
        args.target,
        rate=rate,
        calls=args.calls,
        seconds=args.seconds,
        users=args.users,
        domain=args.domain,
        transport=args.transport,
        server_pid=pid,
        pin_cpu=args.pin_cpu,
        progress=_progress,
    )
