"""Configuration: every key checked, every mistake named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from presencex import __version__
from presencex.config import ConfigError, config_from_mapping, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_quick_start_config_loads() -> None:
    config = load_config(ROOT / "conf" / "presencex.toml")
    assert config.integrated_xcap_server
    assert not config.force_active
    assert [str(a) for a in config.listen] == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]


def test_seed_style_integers_are_flags() -> None:
    config = config_from_mapping({"force_active": 1, "pidf_manipulation": 0})
    assert config.force_active is True
    assert config.pidf_manipulation is False


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"force_active": 2}, "force_active", "0 or 1"),
        ({"listen": ["sctp:1.2.3.4:5060"]}, "listen", "udp:HOST:PORT"),
        ({"listen": []}, "listen", "non-empty"),
        ({"min_expires": -1, "force_active": 1}, "min_expires", "non-negative"),
        ({"min_expires": 7200, "force_active": 1}, "min_expires", "max_expires"),
        ({"db_url": "mysql://x", "force_active": 1}, "db_url", "sqlite"),
        ({"xcap_table": "x; drop", "force_active": 1}, "xcap_table", "table name"),
        ({"forse_active": 1}, "forse_active", "unknown key"),
        ({"integrated_xcap_server": 0, "force_active": 0}, "xcap_server", "trusted XCAP"),
        ({"xcap_server": ["ftp://x"], "force_active": 1}, "xcap_server", "http"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data)
    assert info.value.key == key
    assert words in str(info.value)


def test_pidf_manipulation_over_http_needs_xcap_server_even_with_force_active() -> None:
    # force_active = 1 skips the rules, but pidf_manipulation = 1 still
    # fetches a document: without a server the fetcher would fail at run time.
    with pytest.raises(ConfigError, match="trusted XCAP") as info:
        config_from_mapping(
            {"integrated_xcap_server": 0, "force_active": 1, "pidf_manipulation": 1}
        )
    assert info.value.key == "xcap_server"
    # Each way out of it is accepted.
    config_from_mapping({"integrated_xcap_server": 0, "force_active": 1, "pidf_manipulation": 0})
    config_from_mapping({"integrated_xcap_server": 1, "force_active": 1, "pidf_manipulation": 1})
    config_from_mapping(
        {
            "integrated_xcap_server": 0,
            "force_active": 1,
            "pidf_manipulation": 1,
            "xcap_server": ["xcap.example.org"],
        }
    )


@pytest.mark.parametrize(
    "table", ["xcap", "Xcap_2", "_x", "tablé", "1xcap", "x y", "x-y", 'x"y', "xcap\n"]
)
def test_xcap_table_is_checked_by_the_rule_the_queries_use(table: str) -> None:
    from presencex.store.load import check_table_name

    try:
        check_table_name(table)
    except ValueError:
        with pytest.raises(ConfigError, match="table name") as info:
            config_from_mapping({"xcap_table": table, "force_active": 1})
        assert info.value.key == "xcap_table"
    else:
        assert config_from_mapping({"xcap_table": table, "force_active": 1}).xcap_table == table


def test_start_failures_are_found_inside_nested_exception_groups() -> None:
    from presencex.cli import _start_failures

    bind = OSError(98, "Address already in use")
    missing = ConfigError("xcap_server", "is required")
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [bind]), missing])
    assert _start_failures(nested) == [bind, missing]
    assert _start_failures(bind) == [bind]
    # Anything else is a bug: the caller re-raises it with its traceback.
    assert _start_failures(ExceptionGroup("g", [bind, RuntimeError("bug")])) is None


def test_xcap_server_may_be_given_several_times() -> None:
    config = config_from_mapping(
        {"xcap_server": ["xcap.example.org", "xcap2.example.org:8080", "https://x.org/root"]}
    )
    roots = [s.root("/xcap-root") for s in config.xcap_server]
    assert roots == [
        "http://xcap.example.org/xcap-root",
        "http://xcap2.example.org:8080/xcap-root",
        "https://x.org/root",
    ]


def test_cli_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("force_active = 5\n")
    result = subprocess.run(
        [sys.executable, "-m", "presencex", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "force_active" in result.stderr
    assert "0 or 1" in result.stderr


def test_cli_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "presencex", "--version"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"presencex {__version__}"


def test_disable_keys_switch_events_off_and_allow_events_says_so() -> None:
    from presencex.app import build_registry

    everything = build_registry(config_from_mapping({"force_active": 1}))
    assert everything.allow_events == "presence, presence.winfo, dialog;sla, dialog;ma, dialog"
    fewer = build_registry(
        config_from_mapping({"force_active": 1, "disable_winfo": 1, "disable_bla": 1})
    )
    assert fewer.allow_events == "presence, dialog"
    only_dialog = build_registry(
        config_from_mapping({"force_active": 1, "disable_presence": 1, "disable_winfo": 1})
    )
    assert only_dialog.names() == ("dialog;sla", "dialog;ma", "dialog")
