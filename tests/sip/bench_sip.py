"""Micro-benchmark of the sans-IO SIP core (not a test).

    python -m tests.sip.bench_sip

Prints microseconds per operation for the hot path of one SUBSCRIBE: parse,
the accessors a handler reads, the transaction lookup, the response built and
serialised, and stream framing.
"""

from __future__ import annotations

import functools
import timeit
from collections.abc import Callable

from presencex.sip.build import make_response, serialize
from presencex.sip.message import Request
from presencex.sip.parse import StreamFramer, parse_message
from presencex.sip.transaction import ServerTransactions
from tests.sip.samples import LINPHONE_SUBSCRIBE, PUBLISH, ZOIPER_SUBSCRIBE

NUMBER = 20_000


def _per_call(func: Callable[[], object], number: int = NUMBER, per: int = 1) -> float:
    best = min(timeit.repeat(func, number=number, repeat=5))
    return best / number / per * 1e6


def main() -> None:
    for name, data in (
        ("Linphone SUBSCRIBE, 13 headers", LINPHONE_SUBSCRIBE),
        ("Zoiper SUBSCRIBE, 15 headers", ZOIPER_SUBSCRIBE),
        ("PUBLISH with PIDF body", PUBLISH),
    ):
        print(f"parse_message {name}: {_per_call(functools.partial(parse_message, data)):.1f} us")
    req = parse_message(LINPHONE_SUBSCRIBE)
    assert isinstance(req, Request)
    print(
        "accessors top_via, from_, to, event, expires: "
        f"{_per_call(lambda: (req.top_via, req.from_, req.to, req.event, req.expires)):.1f} us"
    )
    print(
        "make_response + serialize: "
        f"{_per_call(lambda: serialize(make_response(req, 202, to_tag='t', headers=[('Expires', '600')]))):.1f} us"
    )
    table = ServerTransactions()
    print(
        f"ServerTransactions.receive, new: {_per_call(lambda: ServerTransactions().receive(req, False, 0.0)):.1f} us"
    )
    table.receive(req, False, 0.0)
    print(
        f"ServerTransactions.receive, retransmission: {_per_call(lambda: table.receive(req, False, 0.0)):.1f} us"
    )
    stream = ZOIPER_SUBSCRIBE * 100
    print(
        "StreamFramer.feed, 100 messages in one read, per message: "
        f"{_per_call(lambda: StreamFramer().feed(stream), number=200, per=100):.1f} us"
    )
    total = _per_call(lambda: _full(LINPHONE_SUBSCRIBE))
    print(
        f"whole hot path (parse, transaction, accessors, response): {total:.1f} us = {1e6 / total:,.0f}/s"
    )


def _full(data: bytes) -> bytes:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    ServerTransactions().receive(msg, False, 0.0)
    _ = (msg.event, msg.expires, msg.to.tag, msg.from_.tag, msg.ruri.aor)
    return serialize(make_response(msg, 202, to_tag="t"))


if __name__ == "__main__":
    main()
