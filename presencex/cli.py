"""The ``presencex`` command: serve, ctl, loadtest, bench."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys

import trio

from presencex import __version__
from presencex.config import Config, ConfigError, load_config

log = logging.getLogger("presencex")

GC_THRESHOLDS = (10_000, 50, 50)


def _describe(config: Config) -> str:
    if config.force_active:
        auth = "force_active = 1: every subscription is active, no rules consulted"
    elif config.integrated_xcap_server:
        auth = f"rules from the '{config.xcap_table}' table (integrated_xcap_server = 1)"
    else:
        servers = ", ".join(str(s) for s in config.xcap_server)
        auth = f"rules fetched over HTTP from trusted XCAP servers: {servers}"
    return auth


async def _serve(config: Config) -> None:
    from presencex.app import serve

    # The cyclic collector at its default gen0 threshold (700 allocations)
    # ran ~65 times a second under load, and each full collection paused the
    # loop ~30 ms (p99 36 ms at 1,800 subscribe cycles/s, 8 ms with this
    # tuning, measured with SIPp). State is acyclic records freed by refcount;
    # what the start-up loaded is frozen out of the collector's scans.
    gc.set_threshold(*GC_THRESHOLDS)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, config)
        gc.collect()
        gc.freeze()
        for local in server.listening:
            log.info("listening on %s", local)
        log.info("database %s (synchronous=%s)", config.db_path, config.db_synchronous)
        log.info("authorization: %s", _describe(config))
        log.info("control socket %s", config.control_socket)
        if config.metrics_listen:
            log.info("metrics on http://%s/metrics", config.metrics_listen)
        log.info("events: %s", server.router.registry.allow_events)
        # SIGTERM (systemd, kill) and SIGINT end the server cleanly: every
        # acknowledged write is already committed, so stopping loses nothing.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("stopping on %s", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def _add_optional(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, module: str, help_: str
) -> None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        return
    p = sub.add_parser(name, help=help_)
    mod.configure_parser(p)
    p.set_defaults(run=mod.run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="presencex", description="SIP presence server")
    parser.add_argument("--version", action="version", version=f"presencex {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the presence server")
    serve_p.add_argument("--config", help="TOML configuration file (see conf/presencex.toml)")
    ctl_p = sub.add_parser("ctl", help="send a command to a running server")
    from presencex.control import client

    client.configure_parser(ctl_p)
    _add_optional(sub, "loadtest", "presencex.loadtest.cli", "load-test a server with SIPp")
    _add_optional(sub, "bench", "presencex.loadtest.bench", "benchmark against Kamailio")
    args = parser.parse_args(argv)
    if args.command == "ctl":
        return client.run(args)
    if args.command in ("loadtest", "bench"):
        return int(args.run(args))
    if args.command == "serve":
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"presencex: {exc}", file=sys.stderr)
            return 2
        logging.basicConfig(
            level=config.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        try:
            trio.run(_serve, config)
        except KeyboardInterrupt:
            return 0
        except (OSError, ConfigError, BaseExceptionGroup) as exc:
            # trio's nurseries wrap whatever a task raised in an
            # ExceptionGroup, so a start-up failure (a control_socket that
            # cannot be bound, a port in use) reaches us nested in one.
            failures = _start_failures(exc)
            if failures is None:
                raise  # a bug, not the environment: keep the traceback
            for failure in failures:
                if isinstance(failure, ConfigError):
                    print(f"presencex: {failure}", file=sys.stderr)
                else:
                    print(f"presencex: cannot start: {failure}", file=sys.stderr)
            # ConfigError exits 2 as it does when the file is first read.
            return 2 if all(isinstance(f, ConfigError) for f in failures) else 1
    return 0


def _start_failures(exc: BaseException) -> list[OSError | ConfigError] | None:
    """The OSErrors and ConfigErrors ``exc`` consists of, flattening nested
    exception groups; None if anything else is in it."""
    if isinstance(exc, BaseExceptionGroup):
        out: list[OSError | ConfigError] = []
        for inner in exc.exceptions:
            found = _start_failures(inner)
            if found is None:
                return None
            out.extend(found)
        return out
    if isinstance(exc, OSError | ConfigError):
        return [exc]
    return None


if __name__ == "__main__":
    sys.exit(main())
