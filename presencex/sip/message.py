"""SIP requests and responses as frozen values.

Facts:
- A message is its start line, its ``Headers`` and its body bytes; nothing
  else is stored. Accessors parse the header they need on every call, which
  is cheap for the few a handler reads and keeps the objects truly immutable.
- Accessors raise ``SipError(400, "Missing X header")`` for an absent
  mandatory header and ``SipError(400, "Bad X header")`` for a malformed
  one, so a handler can let them propagate to the transport.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def call_id(self) -> str:
        return _required(self.headers, "Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(_required(self.headers, "CSeq"))

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(_required(self.headers, "From"), "From")

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(_required(self.headers, "To"), "To")

    @property
    def vias(self) -> list[Via]:
        """Every Via, top (most recent hop) first."""
        values = self.headers.get_all("Via")
        if not values:
            raise SipError(400, "Missing Via header")
        return [parse_via(value) for value in values]

    @property
    def top_via(self) -> Via:
        values = self.headers.get_all("Via")
        if not values:
            raise SipError(400, "Missing Via header")
        return parse_via(values[0])

    @property
    def event(self) -> EventHeader | None:
        value = self.headers.get("Event")
        return None if value is None else parse_event(value)

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

    @property
    def ruri(self) -> SipUri:
        return parse_uri(self.uri, "Request-URI")


@dataclass(frozen=True, slots=True)
class Response(_Accessors):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""


Message = Request | Response
