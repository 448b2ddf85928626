"""The bundled subscribe-like scenarios accept a NOTIFY that overtakes the
2xx (RFC 6665 §4.1.2.4 allows it): a fake SIPp notifier sends it first,
every time.  subscribe.xml, which the benchmark drives hardest, also
answers a NOTIFY of the active subscription that arrives after its
un-SUBSCRIBE (a retransmission, or one crossing it) and waits on for the
terminated one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from presencex.loadtest import runner

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed (sip-tester)"),
]

CALLS = 20


@pytest.mark.parametrize("name", ["subscribe", "winfo", "dialog"])
def test_notify_before_2xx(tmp_path: Path, name: str) -> None:
    _against_fake(tmp_path, name, "notify_first_uas.xml")


@pytest.mark.parametrize("fake", ["stale_before_2xx_uas.xml", "stale_after_2xx_uas.xml"])
def test_active_notify_after_unsubscribe(tmp_path: Path, fake: str) -> None:
    _against_fake(tmp_path, "subscribe", fake)


def _against_fake(tmp_path: Path, name: str, fake_scenario: str) -> None:
    port = runner.free_port()
    uas = tmp_path / "uas"
    uas.mkdir()
    uas_cmd = runner.sipp_command(
        runner.find_sipp(),
        Path(__file__).parent / fake_scenario,
        target=None,
        local_port=port,
        transport="u1",
        rate=None,
        calls=CALLS,
        timeout=20,
        injection=None,
        keys={},
        rtt=False,
        pin_cpu=None,
    )
    with runner.sipp_process(uas_cmd, uas) as fake:
        result = runner.run_scenario(
            name,
            f"127.0.0.1:{port}",
            rate=20,
            calls=CALLS,
            seconds=2,
            users=5,
            workdir=tmp_path / "uac",
        )
        try:
            fake.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("the fake notifier did not finish its calls")
    assert result.failed == 0, result.workdir
    assert result.successful == CALLS
    fake_stats = runner.read_stats(uas)
    assert fake_stats is not None
    assert fake_stats.successful == CALLS
