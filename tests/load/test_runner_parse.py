"""The SIPp statistics parsing, on files saved from real SIPp 3.6 runs."""

from __future__ import annotations

import os
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from presencex.loadtest import runner
from presencex.loadtest.runner import StepResult

SAMPLES = Path(__file__).parent / "samples"


def test_stat_csv_of_a_clean_run() -> None:
    stats = runner.parse_stat_csv((SAMPLES / "subscribe_stat.csv").read_text())
    assert stats is not None
    assert (stats.created, stats.successful, stats.failed, stats.retransmissions) == (
        100,
        100,
        0,
        0,
    )
    assert stats.elapsed == pytest.approx(2.010639, abs=1e-5)


def test_stat_csv_of_an_overloaded_run() -> None:
    stats = runner.parse_stat_csv((SAMPLES / "publish_overload_stat.csv").read_text())
    assert stats is not None
    assert (stats.created, stats.successful, stats.failed) == (5000, 653, 4347)
    assert stats.elapsed == pytest.approx(5.003077, abs=1e-5)


@pytest.mark.parametrize("text", ["", "StartTime;LastResetTime\n", "garbage\nmore;garbage\n"])
def test_stat_csv_without_figures_is_none(text: str) -> None:
    assert runner.parse_stat_csv(text) is None


def test_rtt_csv() -> None:
    values = runner.parse_rtt_csv((SAMPLES / "subscribe_rtt.csv").read_text())
    assert len(values) == 200
    # SIPp's clock ticks in 4 ms steps on these machines.
    assert set(values) <= {0.0, 4.0, 8.0, 12.0}
    assert runner.percentile(values, 50) == 0.0
    assert runner.percentile(values, 99) == 8.0


def test_percentile_nearest_rank() -> None:
    assert runner.percentile([], 50) is None
    values = [float(v) for v in range(1, 101)]
    assert runner.percentile(values, 50) == 50.0
    assert runner.percentile(values, 95) == 95.0
    assert runner.percentile(values, 99) == 99.0
    assert runner.percentile([7.0], 99) == 7.0


def _step(**changes: object) -> StepResult:
    base: dict[str, object] = {
        "scenario": "subscribe",
        "target": "127.0.0.1:5060",
        "transport": "u1",
        "target_rate": 100.0,
        "achieved_rate": 99.0,
        "calls": 1000,
        "successful": 1000,
        "failed": 0,
        "retransmissions": 0,
        "elapsed": 10.1,
        "p50_ms": 0.0,
        "p95_ms": 4.0,
        "p99_ms": 8.0,
        "rtt_samples": 2000,
    }
    base.update(changes)
    return StepResult(**base)  # type: ignore[arg-type]


def test_sustained_needs_few_failures_and_the_rate() -> None:
    assert _step().sustained
    assert not _step(failed=5, successful=995).sustained  # 0.5 % is too many
    assert _step(failed=4, successful=996).sustained
    assert not _step(achieved_rate=94.0).sustained
    assert not _step(calls=0, successful=0).sustained
    assert not _step(notifies=900, expected_notifies=1000).sustained
    assert _step(notifies=1000, expected_notifies=1000).sustained


def test_table_has_the_figures_and_the_clock_note() -> None:
    table = runner.format_table([_step(server_cpu_seconds=1.5, server_rss_kb=20480)])
    assert "subscribe" in table
    assert "99.0" in table
    assert "20.0" in table
    assert "4 ms" in table


def test_users_file(tmp_path: Path) -> None:
    path = runner.write_users(tmp_path / "u.csv", 3)
    assert path.read_text().splitlines() == ["SEQUENTIAL", "w0;p0", "w1;p1", "w2;p2"]
    path = runner.write_users(tmp_path / "f.csv", 2, watchers=2)
    assert path.read_text().splitlines() == ["SEQUENTIAL", "w0;p0", "w1;p0", "w0;p1", "w1;p1"]


@pytest.mark.parametrize("name", runner.SCENARIOS)
def test_bundled_scenarios_are_well_formed(name: str) -> None:
    root = ET.parse(runner.scenario_path(name)).getroot()
    assert root.tag == "scenario"


def test_unknown_scenario() -> None:
    with pytest.raises(ValueError, match="bundled"):
        runner.scenario_path("nope")


def test_sipp_command_is_bounded(tmp_path: Path) -> None:
    cmd = runner.sipp_command(
        "sipp",
        runner.scenario_path("subscribe"),
        target="127.0.0.1:5060",
        local_port=5999,
        transport="u1",
        rate=100,
        calls=1000,
        timeout=20,
        injection=tmp_path / "u.csv",
        keys={"domain": "example.org"},
        rtt=True,
        pin_cpu=None,
    )
    assert cmd[cmd.index("-m") + 1] == "1000"
    assert cmd[cmd.index("-timeout") + 1] == "20s"
    assert cmd[cmd.index("-key") + 1 : cmd.index("-key") + 3] == ["domain", "example.org"]
    assert "-trace_rtt" in cmd


def test_finds_the_local_process_on_a_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert runner.find_listening_pid(port) == os.getpid()
        sample = runner.sample_process(os.getpid())
        assert sample is not None
        assert sample.rss_kb > 0
        assert sample.cpu_seconds > 0


def test_split_target() -> None:
    assert runner.split_target("127.0.0.1:5070") == ("127.0.0.1", 5070)
    assert runner.split_target("[::1]:5070") == ("::1", 5070)
    # Load runs stay on this machine.
    with pytest.raises(ValueError, match="loopback"):
        runner.split_target("192.0.2.7:5060")
    with pytest.raises(ValueError, match="HOST:PORT"):
        runner.split_target("127.0.0.1")
