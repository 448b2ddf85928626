"""``presencex loadtest --quick`` (the CI form) against ``presencex serve`` on
loopback: every bundled client scenario for a few seconds at a modest rate,
zero failed calls.  Correctness, not speed: no timing is asserted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from presencex.loadtest import cli, servers

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed (sip-tester)"),
]

SCENARIOS = ["subscribe", "publish", "winfo", "dialog", "fanout"]


@pytest.fixture(scope="module")
def presencex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RunningServer]:
    with servers.presencex_server(tmp_path_factory.mktemp("presencex")) as server:
        yield server


def loadtest(
    presencex: servers.RunningServer, tmp_path: Path, *args: str
) -> tuple[str, dict[str, dict[str, Any]]]:
    """``presencex loadtest ARGS`` against the server, as a user runs it: its
    table, and its --json figures by scenario."""
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "presencex", "loadtest", *args),
            *("--target", presencex.target, "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\nserver log: {presencex.log}"
    return done.stdout, {r["scenario"]: r for r in json.loads(out.read_text())}


def test_loadtest_quick_every_scenario(presencex: servers.RunningServer, tmp_path: Path) -> None:
    table, results = loadtest(presencex, tmp_path, "--quick")
    # fanout reports its publishing half.
    assert sorted(results) == sorted(s if s != "fanout" else "fanout_publish" for s in SCENARIOS)
    calls = int(cli.QUICK_RATE * cli.QUICK_SECONDS)
    for name, result in results.items():
        assert result["failed"] == 0, f"{name}: see {result['workdir']}"
        assert result["successful"] == calls, name
        # The server was found on the port and sampled.
        assert result["server_pid"] == presencex.pid
        assert result["server_cpu_seconds"] is not None
    fanout = results["fanout_publish"]
    assert fanout["notifies"] == fanout["expected_notifies"] == 2 * cli.QUICK_WATCHERS * calls
    # The table names every scenario.
    for name in results:
        assert name in table


def test_subscribe_and_publish_cycles_at_50_per_second_for_10_seconds(
    presencex: servers.RunningServer, tmp_path: Path
) -> None:
    """The foundation issue's own check: the two core cycles at 50 calls/s
    for 10 s each, zero failed calls."""
    _, results = loadtest(
        presencex, tmp_path, "--scenario", "subscribe,publish", "--rate", "50", "--seconds", "10"
    )
    assert sorted(results) == ["publish", "subscribe"]
    for name, result in results.items():
        assert result["failed"] == 0, f"{name}: see {result['workdir']}"
        assert result["successful"] == 500, name
