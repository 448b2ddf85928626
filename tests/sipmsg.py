"""Builders of SIP requests as bytes for tests: real wire text, parsed by the
real parser, so tests exercise what a client would send."""

from __future__ import annotations

import itertools

from presencex.sip.message import Request
from presencex.sip.parse import parse_message

_counter = itertools.count(1)

PIDF = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">
  <tuple id="{tuple_id}"><status><basic>{basic}</basic></status><contact>{contact}</contact></tuple>
</presence>
"""


def pidf(entity: str, tuple_id: str, basic: str = "open", contact: str = "sip:dev@h") -> bytes:
    return PIDF.format(entity=entity, tuple_id=tuple_id, basic=basic, contact=contact).encode()


def request_bytes(
    method: str,
    ruri: str,
    *,
    from_uri: str,
    to_uri: str,
    from_tag: str = "ft1",
    to_tag: str | None = None,
    call_id: str | None = None,
    cseq: int = 1,
    event: str | None = "presence",
    expires: int | None = None,
    contact: str | None = "sip:watcher@127.0.0.1:5070",
    body: bytes = b"",
    content_type: str | None = None,
    extra: list[tuple[str, str]] | None = None,
    via: str = "SIP/2.0/UDP 127.0.0.1:5070",
    branch: str | None = None,
) -> bytes:
    n = next(_counter)
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: {via};branch={branch or f'z9hG4bK-test-{n}'}",
        "Max-Forwards: 70",
        f"From: <{from_uri}>;tag={from_tag}",
        f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id or f'call-{n}@test'}",
        f"CSeq: {cseq} {method}",
    ]
    if event is not None:
        lines.append(f"Event: {event}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if contact is not None:
        lines.append(f"Contact: <{contact}>")
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    for name, value in extra or []:
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def request(method: str, ruri: str, **kwargs: object) -> Request:
    msg = parse_message(request_bytes(method, ruri, **kwargs))  # type: ignore[arg-type]
    assert isinstance(msg, Request)
    return msg
