"""The bundled scenarios against Kamailio 5.6 (the incumbent), through the
harness the benchmark uses: a short run at a modest rate, zero failed calls."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from presencex.loadtest import runner, servers

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


@pytest.mark.parametrize("name", ["subscribe", "publish", "winfo", "dialog"])
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


def test_fanout_against_kamailio(kamailio: servers.RunningServer) -> None:
    result = runner.run_fanout(
        kamailio.target, rate=RATE, seconds=SECONDS, presentities=10, watchers=5
    )
    assert result.failed == 0, result.workdir
    assert result.notifies == result.expected_notifies == 2 * 5 * int(RATE * SECONDS)
