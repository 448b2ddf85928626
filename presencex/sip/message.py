"""SIP requests and responses as frozen values.

Facts:
- A message is its start line, its ``Headers`` and its body bytes.  Accessors
  parse the header they need on first use and keep the result in ``_parsed``,
  a memo outside equality and hashing: the value never changes (the message
  is frozen), and the hot path reads From, To, CSeq and the top Via several
  times per message (parser checks, transaction key, router, actor).
- Accessors raise ``SipError(400, "Missing X header")`` for an absent
  mandatory header and ``SipError(400, "Bad X header")`` for a malformed
  one, so a handler can let them propagate to the transport.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from presencex.sip.errors import SipError
from presencex.sip.headers import Headers
from presencex.sip.uri import (
    EventHeader,
    NameAddr,
    SipUri,
    Via,
    parse_content_type,
    parse_cseq,
    parse_event,
    parse_expires,
    parse_name_addr,
    parse_uri,
    parse_via,
)


def _required(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise SipError(400, f"Missing {name} header")
    return value


class _Accessors:
    """Typed views of the headers every SIP message carries (RFC 3261 §8.1.1)."""

    __slots__ = ()
    headers: Headers
    _parsed: dict[str, Any]

    @property
    def call_id(self) -> str:
        return _required(self.headers, "Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        memo = self._parsed
        value = memo.get("CSeq")
        if value is None:
            value = memo["CSeq"] = parse_cseq(_required(self.headers, "CSeq"))
        return value

    @property
    def from_(self) -> NameAddr:
        memo = self._parsed
        value = memo.get("From")
        if value is None:
            value = memo["From"] = parse_name_addr(_required(self.headers, "From"), "From")
        return value

    @property
    def to(self) -> NameAddr:
        memo = self._parsed
        value = memo.get("To")
        if value is None:
            value = memo["To"] = parse_name_addr(_required(self.headers, "To"), "To")
        return value

    @property
    def vias(self) -> list[Via]:
        """Every Via, top (most recent hop) first."""
        values = self.headers.get_all("Via")
        if not values:
            raise SipError(400, "Missing Via header")
        return [parse_via(value) for value in values]

    @property
    def top_via(self) -> Via:
        memo = self._parsed
        via = memo.get("Via")
        if via is None:
            values = self.headers.get_all("Via")
            if not values:
                raise SipError(400, "Missing Via header")
            via = memo["Via"] = parse_via(values[0])
        return via

    @property
    def event(self) -> EventHeader | None:
        memo = self._parsed
        if "Event" not in memo:
            value = self.headers.get("Event")
            memo["Event"] = None if value is None else parse_event(value)
        event: EventHeader | None = memo["Event"]
        return event

    @property
    def expires(self) -> int | None:
        value = self.headers.get("Expires")
        return None if value is None else parse_expires(value)

    @property
    def content_type(self) -> str | None:
        """The media type alone, lower-cased: ``application/pidf+xml``."""
        value = self.headers.get("Content-Type")
        return None if value is None else parse_content_type(value)[0]


@dataclass(frozen=True, slots=True)
class Request(_Accessors):
    method: str
    uri: str
    headers: Headers
    body: bytes = b""
    _parsed: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ruri(self) -> SipUri:
        memo = self._parsed
        value = memo.get("ruri")
        if value is None:
            value = memo["ruri"] = parse_uri(self.uri, "Request-URI")
        return value


@dataclass(frozen=True, slots=True)
class Response(_Accessors):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    _parsed: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


Message = Request | Response
