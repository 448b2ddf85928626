"""The incumbent, Kamailio 5.6, through the same harness: the winfo and
dialog scenarios against it, and ``presencex bench --quick`` (the CI form
of the comparison) with both servers.  Zero failed calls, not speed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from presencex.loadtest import bench, runner, servers

pytestmark = [
    pytest.mark.kamailio,
    pytest.mark.sipp,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed (sip-tester)"),
    pytest.mark.skipif(
        servers.kamailio_missing() is not None, reason=str(servers.kamailio_missing())
    ),
]

RATE = 50.0
SECONDS = 3.0


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RunningServer]:
    with servers.kamailio_server(tmp_path_factory.mktemp("kamailio")) as server:
        yield server


# subscribe, publish and fanout run against Kamailio in the bench test below.
@pytest.mark.parametrize("name", ["winfo", "dialog"])
def test_scenario_against_kamailio(
    kamailio: servers.RunningServer, tmp_path: Path, name: str
) -> None:
    result = runner.run_scenario(
        name,
        kamailio.target,
        rate=RATE,
        seconds=SECONDS,
        users=100,
        server_pid=kamailio.pid,
        workdir=tmp_path,
    )
    assert result.failed == 0, f"see {result.workdir} and {kamailio.log}"
    assert result.successful == int(RATE * SECONDS)
    assert result.server_cpu_seconds is not None


@pytest.mark.slow
def test_bench_quick_runs_both_sides_without_failures(tmp_path: Path) -> None:
    figures = tmp_path / "bench.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "presencex", "bench", "--quick"),
            *("--workdir", str(tmp_path / "work"), "--json", str(figures)),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    report = json.loads(figures.read_text())
    calls = int(bench.QUICK_RATE * bench.QUICK_SECONDS)
    for scenario in bench.SCENARIOS:
        for side in bench.SIDES:
            (step,) = report["ladders"][scenario][side]
            assert step["failed"] == 0, f"{scenario} on {side}: see {step['workdir']}"
            assert step["successful"] == calls, (scenario, side)
            if scenario == "fanout":
                assert step["notifies"] == step["expected_notifies"] > 0, side
    for side in bench.SIDES:
        (memory,) = report["memory_per_subscription"][side].values()
        assert memory["failed"] == 0
        assert memory["held"] == bench.QUICK_MEMORY
    assert set(report["durability"]) == set(bench.SIDES)
    # The printed report carries the summary and both durability lines.
    assert "ratio presencex/kamailio" in done.stdout
    assert done.stdout.count("durability: ") == 2
