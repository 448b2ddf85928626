"""Latency probes: a few request -> final response exchanges timed with a
monotonic clock, sent while SIPp loads the server.

Facts:
- SIPp's response-time clock ticks in 4 ms steps on these machines (field
  notes), so its p99 reads 0, 4 or 8 ms.  These probes time each exchange
  with ``time.perf_counter_ns`` from the moment the request leaves to the
  moment its final response arrives (1xx ignored), to the microsecond.
- Two kinds, each a full cycle of two timed exchanges:
  ``subscribe``: SUBSCRIBE (Expires 600) -> 2xx, un-SUBSCRIBE (Expires 0)
  in the dialog -> 2xx; every NOTIFY is answered 200, whichever order it
  arrives in (RFC 6665 §4.1.2.4).
  ``publish``: initial PUBLISH -> 200 with SIP-ETag, remove (SIP-If-Match,
  Expires 0) -> 200 (RFC 3903).
- No retransmission: a probe that gets no final response within
  ``TIMEOUT`` counts as lost, and the report says how many were.
- Run it on SIPp's CPU (``taskset``), not the server's: ``presencex bench``
  starts ``python -m presencex.loadtest.probe`` as its own process so the
  probe's Python never shares a GIL with the bench's bookkeeping.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import time
from dataclasses import asdict, dataclass

from presencex.loadtest.runner import percentile, split_target

TIMEOUT = 2.0
KINDS = ("subscribe", "publish")
PIDF = (
    '<?xml version="1.0" encoding="UTF-8"?>\r\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{user}@{domain}">\r\n'
    '<tuple id="probe"><status><basic>open</basic></status></tuple>\r\n'
    "</presence>\r\n"
)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    kind: str
    sent: int
    answered: int
    lost: int
    non_2xx: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _header(message: str, name: str) -> str | None:
    prefix = name.lower() + ":"
    for line in message.split("\r\n")[1:]:
        if not line:
            break
        if line.lower().startswith(prefix):
            return line.split(":", 1)[1].strip()
    return None


def _branch(message: str) -> str | None:
    via = _header(message, "Via")
    found = re.search(r";\s*branch=([^;,\s]+)", via or "")
    return found.group(1) if found else None


def _answer_notify(sock: socket.socket, message: str, peer: tuple[str, int]) -> None:
    """200 to a NOTIFY, echoing the headers RFC 3261 §8.2.6.2 says to copy."""
    lines = ["SIP/2.0 200 OK"]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        lines += [
            line
            for line in message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
            if line.lower().startswith(name.lower() + ":")
        ]
    lines += ["Content-Length: 0", "", ""]
    sock.sendto("\r\n".join(lines).encode(), peer)


class Prober:
    """One UDP socket, one exchange at a time."""

    def __init__(self, target: str, domain: str, tag: str) -> None:
        host, port = split_target(target)
        self.peer = (host, port)
        self.domain = domain
        self.tag = tag
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.local = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.sequence = 0

    def close(self) -> None:
        self.sock.close()

    def exchange(self, request: str) -> tuple[float | None, str | None]:
        """Send ``request``; (milliseconds to its final response, the response)
        or (None, None) when none came within ``TIMEOUT``.  NOTIFYs met on the
        way are answered."""
        branch = _branch(request)
        started = time.perf_counter_ns()
        self.sock.sendto(request.encode(), self.peer)
        deadline = time.monotonic() + TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                break
            arrived = time.perf_counter_ns()
            message = data.decode("utf-8", "replace")
            if message.startswith("NOTIFY "):
                _answer_notify(self.sock, message, peer)
                continue
            if not message.startswith("SIP/2.0 ") or _branch(message) != branch:
                continue  # a late answer to an earlier probe
            status = int(message[8:11])
            if status >= 200:
                return (arrived - started) / 1e6, message
        return None, None

    def drain(self, seconds: float) -> None:
        """Answer NOTIFYs still on their way for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                return
            if data.startswith(b"NOTIFY "):
                _answer_notify(self.sock, data.decode("utf-8", "replace"), peer)

    def _request(
        self, method: str, user: str, call_id: str, cseq: int, extra: list[str], body: str = ""
    ) -> str:
        self.sequence += 1
        branch = f"z9hG4bK-probe-{self.tag}-{self.sequence}"
        lines = [
            f"{method} sip:{user}@{self.domain} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.local};branch={branch}",
            "Max-Forwards: 70",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            *extra,
            "User-Agent: presencex-probe",
            f"Content-Length: {len(body.encode())}",
            "",
            body,
        ]
        return "\r\n".join(lines)

    def subscribe_cycle(self, n: int) -> list[tuple[float | None, int]]:
        user, watcher = f"probe{n % 50}", f"probew{self.tag}"
        call_id = f"probe-{self.tag}-{n}@127.0.0.1"
        from_ = f"From: <sip:{watcher}@{self.domain}>;tag=pf{self.tag}{n}"
        common = [
            f"Contact: <sip:{watcher}@{self.local}>",
            "Event: presence",
            "Accept: application/pidf+xml",
        ]
        first = self._request(
            "SUBSCRIBE",
            user,
            call_id,
            1,
            [from_, f"To: <sip:{user}@{self.domain}>", *common, "Expires: 600"],
        )
        ms, answer = self.exchange(first)
        out = [(ms, _status(answer))]
        to_tag = _header(answer, "To") if answer is not None else None
        if to_tag is None or ";tag=" not in to_tag:
            return out
        second = self._request(
            "SUBSCRIBE", user, call_id, 2, [from_, f"To: {to_tag}", *common, "Expires: 0"]
        )
        ms, answer = self.exchange(second)
        return [*out, (ms, _status(answer))]

    def publish_cycle(self, n: int) -> list[tuple[float | None, int]]:
        user = f"probep{self.tag}{n % 50}"
        call_id = f"probe-{self.tag}-{n}@127.0.0.1"
        ident = [
            f"From: <sip:{user}@{self.domain}>;tag=pf{self.tag}{n}",
            f"To: <sip:{user}@{self.domain}>",
            "Event: presence",
        ]
        body = PIDF.format(user=user, domain=self.domain)
        first = self._request(
            "PUBLISH",
            user,
            call_id,
            1,
            [*ident, "Expires: 600", "Content-Type: application/pidf+xml"],
            body,
        )
        ms, answer = self.exchange(first)
        out = [(ms, _status(answer))]
        etag = _header(answer, "SIP-ETag") if answer is not None else None
        if etag is None:
            return out
        second = self._request(
            "PUBLISH", user, call_id, 2, [*ident, "Expires: 0", f"SIP-If-Match: {etag}"]
        )
        ms, answer = self.exchange(second)
        return [*out, (ms, _status(answer))]


def _status(answer: str | None) -> int:
    return 0 if answer is None else int(answer[8:11])


def run_probe(
    target: str,
    kind: str,
    *,
    exchanges: int = 200,
    interval: float = 0.05,
    delay: float = 0.0,
    domain: str = "example.com",
) -> ProbeResult:
    """About ``exchanges`` timed exchanges (cycles of two), one cycle every
    ``interval`` seconds, after ``delay`` seconds (let the load ramp up)."""
    if kind not in KINDS:
        raise ValueError(f"probe kind {kind!r}: one of {', '.join(KINDS)}")
    time.sleep(delay)
    prober = Prober(target, domain, tag=f"{os.getpid()}")
    times: list[float] = []
    sent = lost = non_2xx = 0
    try:
        cycle = prober.subscribe_cycle if kind == "subscribe" else prober.publish_cycle
        n = 0
        while sent < exchanges:
            start = time.monotonic()
            for ms, status in cycle(n):
                sent += 1
                if ms is None:
                    lost += 1
                else:
                    times.append(ms)
                    non_2xx += not 200 <= status < 300
            n += 1
            prober.drain(max(0.0, interval - (time.monotonic() - start)))
    finally:
        prober.close()
    return ProbeResult(
        kind=kind,
        sent=sent,
        answered=len(times),
        lost=lost,
        non_2xx=non_2xx,
        p50_ms=percentile(times, 50),
        p95_ms=percentile(times, 95),
        p99_ms=percentile(times, 99),
        max_ms=max(times, default=None),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m presencex.loadtest.probe",
        description="Time SIP exchanges with a monotonic clock; print JSON.",
    )
    parser.add_argument("target", help="HOST:PORT")
    parser.add_argument("--kind", choices=KINDS, default="subscribe")
    parser.add_argument("--exchanges", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between cycles")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before the first")
    parser.add_argument("--domain", default="example.com")
    args = parser.parse_args(argv)
    result = run_probe(
        args.target,
        args.kind,
        exchanges=args.exchanges,
        interval=args.interval,
        delay=args.delay,
        domain=args.domain,
    )
    json.dump(result.as_dict(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
