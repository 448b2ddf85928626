"""SIP messages to bytes, responses from requests, fresh identifiers.

Facts:
- ``serialize`` always writes Content-Length from the body it sends
  (RFC 3261 §18.3 makes it mandatory on streams; on UDP it stops a peer from
  reading padding as body), replacing whatever a caller put in the headers.
- ``make_response`` follows RFC 3261 §8.2.6.2: Via (all, in order), From,
  To, Call-ID and CSeq are copied verbatim; only a To tag may be added.
- Tags, branches and Call-IDs come from ``secrets``: RFC 3261 §19.3 wants
  tags and Call-IDs globally unique and unguessable enough that a dialog
  cannot be hijacked by guessing them.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable

from presencex.sip.headers import Headers
from presencex.sip.message import Request, Response

# RFC 3261 §8.1.1.7: a branch starting with this cookie promises RFC 3261
# transaction matching (§17.2.3).
BRANCH_COOKIE = "z9hG4bK"
# Random bytes per identifier: 64 bits make a tag collision within one
# dialog's lifetime negligible (§19.3 asks for at least 32 bits).
_TAG_BYTES = 8
_BRANCH_BYTES = 12
_CALL_ID_BYTES = 16

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",  # RFC 6665 §8.3.1 deprecates it for SUBSCRIBE, clients still expect it
    204: "No Notification",  # RFC 5839 §7.1
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",  # RFC 3903 §11.2.1
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",  # RFC 6665 §8.3.2
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_COPIED = frozenset(("Via", "From", "Call-ID", "CSeq"))


def reason_phrase(status: int) -> str:
    """The RFC's phrase for ``status``, or its class's when the code is unknown."""
    return REASON_PHRASES.get(status) or REASON_PHRASES.get(status // 100 * 100, "Unknown")


class _RandomPool:
    """Cryptographically random bytes (RFC 3261 §19.3 wants tags and
    branches globally unique and random), read from the OS a page at a time:
    one getrandom call per NOTIFY branch cost a syscall on the hot path, and
    while it ran the store's thread could take the GIL. Used from the trio
    thread only; the server never forks after start."""

    __slots__ = ("_at", "_bytes")

    def __init__(self) -> None:
        self._bytes = b""
        self._at = 0

    def token(self, size: int) -> str:
        at = self._at
        if at + size > len(self._bytes):
            self._bytes = os.urandom(_POOL_BYTES)
            at = 0
        self._at = at + size
        return base64.urlsafe_b64encode(self._bytes[at : at + size]).rstrip(b"=").decode("ascii")


_POOL_BYTES = 4096
_random = _RandomPool()


def new_tag() -> str:
    return _random.token(_TAG_BYTES)


def new_branch() -> str:
    return BRANCH_COOKIE + _random.token(_BRANCH_BYTES)


def new_call_id() -> str:
    return _random.token(_CALL_ID_BYTES)


def serialize(msg: Request | Response) -> bytes:
    """Wire bytes: start line, headers in order, Content-Length, blank line, body."""
    if isinstance(msg, Request):
        lines = [f"{msg.method} {msg.uri} SIP/2.0"]
    else:
        reason = msg.reason
        if "\r" in reason or "\n" in reason:
            # A reason phrase may not hold CR or LF (RFC 3261 §25.1); ours can
            # quote peer input, which must not become a header of its own.
            reason = " ".join(reason.split())
        lines = [f"SIP/2.0 {msg.status} {reason}"]
    lines += [f"{name}: {value}" for name, value in msg.headers.items if name != "Content-Length"]
    lines.append(f"Content-Length: {len(msg.body)}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8") + msg.body


def make_response(
    req: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to ``req`` per RFC 3261 §8.2.6.2, then ``headers``.

    The To tag is appended to the To value as written rather than re-rendered,
    so everything else the client sent comes back byte for byte; in the
    addr-spec form ";tag=" is a header parameter there too (§20.10).
    """
    items: list[tuple[str, str]] = []
    for name, value in req.headers.items:
        if name in _COPIED:
            items.append((name, value))
        elif name == "To":
            # req.to: the parser already read it; parsing it again cost a
            # name-addr parse per response.
            if to_tag is not None and req.to.tag is None:
                value = f"{value};tag={to_tag}"
            items.append((name, value))
    # Copied names are already canonical; only the extra pairs need spelling.
    out = Headers.trusted((*items, *Headers.from_pairs(headers).items) if headers else tuple(items))
    return Response(status, reason if reason is not None else reason_phrase(status), out, body)


def build_request(
    method: str, uri: str, headers: Iterable[tuple[str, str]], body: bytes = b""
) -> Request:
    """A request from parts; header names are canonicalised, nothing is added."""
    return Request(method, uri, Headers.from_pairs(headers), body)
