"""Issue 2's check: the bundled scenarios against ``presencex serve`` on
loopback at 50 calls/s for 10 s, with zero failed calls."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from presencex.loadtest import runner, servers

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed (sip-tester)"),
]

RATE = 50.0
SECONDS = 10.0


@pytest.fixture(scope="module")
def presencex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RunningServer]:
    with servers.presencex_server(tmp_path_factory.mktemp("presencex")) as server:
        yield server


@pytest.mark.parametrize("name", ["subscribe", "publish", "winfo", "dialog"])
def test_scenario_against_presencex(
    presencex: servers.RunningServer, tmp_path: Path, name: str
) -> None:
    result = runner.run_scenario(
        name,
        presencex.target,
        rate=RATE,
        seconds=SECONDS,
        users=200,
        server_pid=presencex.pid,
        workdir=tmp_path,
    )
    assert result.failed == 0, f"see {result.workdir} and {presencex.log}"
    assert result.successful == int(RATE * SECONDS)


def test_fanout_against_presencex(presencex: servers.RunningServer) -> None:
    result = runner.run_fanout(
        presencex.target, rate=RATE, seconds=3.0, presentities=10, watchers=5
    )
    assert result.failed == 0, result.workdir
    assert result.notifies == result.expected_notifies
