"""Configuration: one TOML file, keys named after the module parameters.

Facts:
- Keys keep the seed's names (``db_url``, ``xcap_table``, ``force_active``,
  ``pidf_manipulation``, ``integrated_xcap_server``, ``xcap_server``) and
  Kamailio presence's where one exists (``min_expires``, ``max_expires``,
  ``disable_winfo``, ``disable_bla``, ``force_dummy_presence``…).
- A wrong value or an unknown key stops start-up: ``ConfigError`` names the
  key and says what is allowed; the CLI exits with status 2.
- The defaults run on one machine with the embedded sqlite database and need
  no other service.  The seed's default ``integrated_xcap_server = 0`` would
  need an HTTP XCAP server, so with no ``xcap_server`` given and
  ``force_active = 0`` (or ``pidf_manipulation = 1``, whose document comes
  from the same place) the server refuses to start, as the XCAP issue asks;
  the shipped quick-start file sets ``integrated_xcap_server = 1``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from presencex.xcap.uris import XcapServer, parse_xcap_server


class ConfigError(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"configuration key '{key}': {message}")
        self.key = key


@dataclass(frozen=True, slots=True)
class ListenAddress:
    transport: str  # "udp" | "tcp"
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Config:
    listen: tuple[ListenAddress, ...] = (
        ListenAddress("udp", "127.0.0.1", 5060),
        ListenAddress("tcp", "127.0.0.1", 5060),
    )
    db_url: str = "sqlite:///presencex.db"
    # FULL: a 2xx is sent only after an fsync'ed commit, so even a power loss
    # keeps what was acknowledged; NORMAL (WAL) survives kill -9 but not power loss.
    db_synchronous: str = "full"
    # Group commit: how long the store writer waits for more writes before a
    # transaction. A millisecond adds that much to a 2xx and lets one commit
    # (one fsync) back the writes of every request of a burst.
    db_group_commit: float = 0.001
    xcap_table: str = "xcap"
    force_active: bool = False
    pidf_manipulation: bool = False
    integrated_xcap_server: bool = False
    xcap_server: tuple[XcapServer, ...] = ()
    xcap_root_path: str = "/xcap-root"
    xcap_pres_rules_auid: str = "pres-rules"
    xcap_pres_rules_document: str = "index"
    xcap_pidf_manipulation_auid: str = "pidf-manipulation"
    xcap_pidf_manipulation_document: str = "index"
    xcap_revalidate_period: float = 60.0
    xcap_timeout: float = 3.0
    xcapauth_userdel_reason: str = "probation"
    enable_sphere_check: bool = False
    min_expires: int = 30
    max_expires: int = 3600
    # RFC 3856 §6.4 and RFC 3903 §4: an absent Expires means one hour.
    default_expires: int = 3600
    force_dummy_presence: bool = False
    disable_presence: bool = False
    disable_winfo: bool = False
    disable_bla: bool = False
    disable_dialog: bool = False
    # Bounded actor inbox: past this, the router answers 503 rather than
    # queueing without bound (a presentity rarely has more than a handful of
    # requests in flight; 256 absorbs a burst of a busy shared line).
    inbox_size: int = 256
    retry_after: int = 5
    control_socket: str = "presencex.sock"
    # RFC 3261 §17.1.2.2 timers for our NOTIFY client transactions.
    t1: float = 0.5
    t2: float = 4.0
    # A UDP datagram cannot be larger; a SIP message on TCP larger than this
    # is hostile or broken (presence bodies are a few KB).
    max_message_size: int = 65535
    # Real clients send 10-20 headers; a few hundred is an attack on the parser.
    max_headers: int = 200
    # A PUBLISH body; larger ones get 413. PIDF from phones is 1-5 KB; the XML
    # parser has its own limits on depth and element count.
    max_body_size: int = 65535
    # Addresses of proxies whose P-Asserted-Identity (RFC 3325) is believed
    # as the sender's identity; anyone else is who their From says.
    trusted_proxies: tuple[str, ...] = ()
    # Served domains: initial requests for any other get 404. Empty: any.
    domains: tuple[str, ...] = ()
    # Per-presentity caps (403 past them): a presence document is watched by
    # dozens, published by a handful of devices; thousands is abuse.
    max_subscriptions_per_presentity: int = 1000
    max_publications_per_presentity: int = 100
    # Requests handed to actors and not yet answered, server-wide. Past it,
    # new requests get 503 at once: under overload, a fast refusal keeps the
    # server answering instead of drowning in its clients' retransmissions.
    max_in_flight: int = 2000
    # How long a store write waits for a lock held by another process
    # (an integrated XCAP server writing the same database).
    db_busy_timeout: float = 5.0
    server_header: str = "presencex"
    log_level: str = "INFO"
    # Prometheus text endpoint, "127.0.0.1:9090"; empty: off. Loopback is the
    # sensible place: the figures say how many watch whom.
    metrics_listen: str = ""

    @property
    def db_path(self) -> str:
        from presencex.store.load import parse_db_url

        return parse_db_url(self.db_url)


_BOOL_KEYS = {f.name for f in dataclasses.fields(Config) if f.type in ("bool", bool)}
_INT_KEYS = {f.name for f in dataclasses.fields(Config) if f.type in ("int", int)}
_FLOAT_KEYS = {f.name for f in dataclasses.fields(Config) if f.type in ("float", float)}
_MAY_BE_ZERO = {"db_group_commit"}
_STR_KEYS = {f.name for f in dataclasses.fields(Config) if f.type in ("str", str)}


def parse_listen(key: str, value: object) -> tuple[ListenAddress, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, 'must be a non-empty list such as ["udp:127.0.0.1:5060"]')
    out: list[ListenAddress] = []
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(key, f"{item!r} is not a string like 'udp:127.0.0.1:5060'")
        transport, _, rest = item.partition(":")
        host, _, port_text = rest.rpartition(":")
        host = host.strip("[]")
        if transport not in ("udp", "tcp") or not host or not port_text.isdigit():
            raise ConfigError(
                key,
                f"{item!r} must be 'udp:HOST:PORT' or 'tcp:HOST:PORT' (e.g. udp:127.0.0.1:5060)",
            )
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ConfigError(key, f"port {port} out of range 0..65535")
        out.append(ListenAddress(transport, host, port))
    return tuple(out)


def _coerce(key: str, value: object) -> object:
    if key in _BOOL_KEYS:
        # The seed writes these as ints (modparam(..., "force_active", 1)).
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(key, "must be 0 or 1 (or true/false)")
    if key in _INT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(key, "must be a non-negative integer")
        return value
    if key in _FLOAT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(key, "must be a number of seconds, not negative")
        if value == 0 and key not in _MAY_BE_ZERO:
            raise ConfigError(key, "must be a positive number of seconds")
        return float(value)
    if key in _STR_KEYS:
        if not isinstance(value, str) or not value:
            raise ConfigError(key, "must be a non-empty string")
        return value
    raise ConfigError(key, "unknown key")  # pragma: no cover - guarded by caller


def config_from_mapping(data: dict[str, Any]) -> Config:
    known = {f.name for f in dataclasses.fields(Config)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(key, f"unknown key; known keys are: {', '.join(sorted(known))}")
        if key == "listen":
            values[key] = parse_listen(key, value)
        elif key == "metrics_listen":
            if not isinstance(value, str):
                raise ConfigError(key, 'must be "HOST:PORT", e.g. "127.0.0.1:9090", or "" for off')
            if value:
                host, _, port = value.rpartition(":")
                if not host or not port.isdigit() or not 0 < int(port) < 65536:
                    raise ConfigError(key, 'must be "HOST:PORT", e.g. "127.0.0.1:9090"')
            values[key] = value
        elif key in ("trusted_proxies", "domains"):
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(key, 'must be a list of strings, e.g. ["127.0.0.1"]')
            values[key] = tuple(v.lower() for v in value)
        elif key == "xcap_server":
            items = value if isinstance(value, list) else [value]
            try:
                values[key] = tuple(parse_xcap_server(str(item)) for item in items)
            except ValueError as exc:
                raise ConfigError(key, str(exc)) from None
        else:
            values[key] = _coerce(key, value)
    config = Config(**values)
    _check(config)
    return config


def _check(config: Config) -> None:
    from presencex.store.load import check_table_name, parse_db_url

    try:
        parse_db_url(config.db_url)
    except ValueError as exc:
        raise ConfigError("db_url", str(exc)) from None
    if config.db_synchronous.lower() not in ("full", "normal", "extra"):
        raise ConfigError("db_synchronous", "must be 'full', 'normal' or 'extra'")
    # The same rule the queries apply, so a name accepted here never fails
    # there at run time.
    try:
        check_table_name(config.xcap_table)
    except ValueError:
        raise ConfigError(
            "xcap_table", "must be a plain SQL table name (letters, digits, _; not a digit first)"
        ) from None
    if config.min_expires > config.max_expires:
        raise ConfigError("min_expires", f"must not exceed max_expires ({config.max_expires})")
    if not config.min_expires <= config.default_expires <= config.max_expires:
        raise ConfigError("default_expires", "must lie between min_expires and max_expires")
    for key in (
        "inbox_size",
        "max_headers",
        "max_in_flight",
        "max_subscriptions_per_presentity",
        "max_publications_per_presentity",
    ):
        if getattr(config, key) < 1:
            raise ConfigError(key, "must be at least 1")
    if not 512 <= config.max_message_size <= 1 << 20:
        raise ConfigError("max_message_size", "must lie between 512 and 1048576 bytes")
    if config.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("log_level", "must be DEBUG, INFO, WARNING or ERROR")
    # Documents are fetched over HTTP when integrated_xcap_server = 0 and
    # something needs them: the rules (force_active = 0) or the
    # pidf-manipulation document (pidf_manipulation = 1, even with
    # force_active = 1).  Only force_active = 1 with pidf_manipulation = 0
    # fetches nothing (app._start_documents).
    if (
        not config.integrated_xcap_server
        and not config.xcap_server
        and (not config.force_active or config.pidf_manipulation)
    ):
        raise ConfigError(
            "xcap_server",
            "is required when integrated_xcap_server = 0 and documents are needed "
            "(force_active = 0 or pidf_manipulation = 1): list the "
            'trusted XCAP servers (xcap_server = ["xcap.example.org"]), or set '
            "integrated_xcap_server = 1 to read documents from the xcap table, or "
            "force_active = 1 with pidf_manipulation = 0",
        )
    if (
        config.disable_presence
        and config.disable_winfo
        and config.disable_bla
        and config.disable_dialog
    ):
        raise ConfigError("disable_presence", "every event is disabled; enable at least one")


def load_config(path: str | Path | None) -> Config:
    if path is None:
        return config_from_mapping({"integrated_xcap_server": 1})
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("--config", f"file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    return config_from_mapping(data)
