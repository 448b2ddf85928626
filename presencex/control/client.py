"""``presencex ctl``: send one JSON-RPC command to the control socket, print the answer."""

from __future__ import annotations

import argparse
import json
import socket
import sys

from presencex.config import ConfigError, load_config

TIMEOUT = 10.0


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", help="control socket path (default: from --config)")
    parser.add_argument("--config", help="server configuration file, to find the socket")
    parser.add_argument("--json", action="store_true", help="print the raw JSON result")
    parser.add_argument(
        "method",
        help="refreshWatchers, updateWatchers, presentity_list, "
        "subscriptions, publications, cleanup, stats",
    )
    parser.add_argument("params", nargs="*", help="the method's arguments")


def call(path: str, method: str, params: list[object]) -> dict[str, object]:
    request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        sock.sendall((json.dumps(request) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data)
    assert isinstance(answer, dict)
    return answer


def _print(value: object, indent: str = "") -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                print(f"{indent}{key}:")
                _print(item, indent + "  ")
            else:
                print(f"{indent}{key}: {item}")
    elif isinstance(value, list):
        if not value:
            print(f"{indent}(none)")
        for item in value:
            if isinstance(item, dict):
                print(f"{indent}- " + ", ".join(f"{k}={v}" for k, v in item.items()))
            else:
                print(f"{indent}{item}")
    else:
        print(f"{indent}{value}")


def run(args: argparse.Namespace) -> int:
    path = args.socket
    if path is None:
        try:
            path = load_config(args.config).control_socket
        except ConfigError as exc:
            print(f"presencex ctl: {exc}", file=sys.stderr)
            return 2
    params: list[object] = [int(p) if p.isdigit() else p for p in args.params]
    try:
        answer = call(path, args.method, params)
    except (FileNotFoundError, ConnectionRefusedError):
        print(
            f"presencex ctl: no server is running on {path} (is `presencex serve` up?)",
            file=sys.stderr,
        )
        return 1
    except TimeoutError:
        print(
            f"presencex ctl: the server on {path} did not answer within {TIMEOUT} s",
            file=sys.stderr,
        )
        return 1
    except (OSError, ValueError) as exc:
        print(f"presencex ctl: {exc}", file=sys.stderr)
        return 1
    if "error" in answer:
        error = answer["error"]
        message = error.get("message") if isinstance(error, dict) else error
        print(f"presencex ctl: {message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer.get("result"), indent=2))
    else:
        _print(answer.get("result"))
    return 0
