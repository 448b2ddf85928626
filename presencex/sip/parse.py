"""Bytes to SIP messages: datagrams whole, streams through ``StreamFramer``.

Facts:
- RFC 3261 §7 grammar, read leniently where phones are sloppy (bare LF line
  ends, leading CRLFs, compact and oddly-cased names, folded lines) and
  strictly where a mistake would mislead us (start line, the five headers
  every request needs, Content-Length).
- Only ``SipError`` leaves this module, whatever the bytes: the transport
  answers it (or drops the datagram) and carries on.
- Header values are stored unparsed; only the headers that identify the
  message and its transaction (Via, From, To, Call-ID, CSeq, Content-Length)
  are validated here, so a bad one is answered before a handler runs.
"""

from __future__ import annotations

from typing import Any

from presencex.sip.errors import SipError
from presencex.sip.headers import NAME_CACHE as _names
from presencex.sip.headers import Headers, canonical_name, is_token, split_list, wire_name
from presencex.sip.message import Request, Response
from presencex.sip.uri import parse_cseq, parse_name_addr, parse_via

# A UDP datagram cannot carry more than 65,535 bytes (RFC 768 length field),
# so nothing larger is a SIP message we could have received whole or could
# answer on the same transport. Also the stream limit: one message may not
# hold a TCP connection's buffer hostage beyond what a datagram could be.
MAX_MESSAGE_SIZE = 65535
# Real requests carry 10 to 30 header fields; 200 leaves room for long Route
# and Record-Route sets while bounding the work a hostile message can cause.
MAX_HEADERS = 200
# Status-Code is three digits (RFC 3261 §25.1) and the classes defined are
# 1xx to 6xx (§21); anything else cannot be interpreted.
_STATUS_MIN = 100
_STATUS_MAX = 699

# Request and response both need these to be matched to a transaction and
# answered (RFC 3261 §8.1.1, §8.2.6.2); Via is checked separately because it
# may repeat.
_SINGLE_MANDATORY = ("From", "To", "Call-ID", "CSeq")

_SIP_VERSION = "SIP/2.0"
# RFC 5626 §3.5.1 keep-alive ping on a stream.
_PING = b"\r\n\r\n"


def _split_head(data: bytes) -> tuple[int, int]:
    """(end of the header block, start of the body), or (len, len) if no blank line."""
    crlf = data.find(b"\r\n\r\n")
    # Bare-LF messages (RFC 3261 §7.5 says CRLF, but some stacks send LF):
    # look for "\n\n" only before the first CRLFCRLF, which is usually nowhere.
    lf = data.find(b"\n\n", 0, crlf if crlf >= 0 else len(data))
    if lf >= 0:
        return lf, lf + 2
    if crlf >= 0:
        return crlf, crlf + 4
    # No blank line: a datagram with headers only. RFC 3261 §7 requires the
    # empty line, but the message is unambiguous without it; accept it.
    return len(data), len(data)


def _decode(head: bytes) -> str:
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        # Display names from old phones arrive in Latin-1; a header we cannot
        # read exactly is still better answered than dropped.
        return head.decode("latin-1")


def _parse_start_line(line: str) -> tuple[str, str, str]:
    """("request", method, uri) or ("response", code, reason)."""
    if line.startswith("SIP/"):
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if version != _SIP_VERSION:
            raise SipError(505, "Version Not Supported")
        if len(code) != 3 or not code.isdigit() or not code.isascii():
            raise SipError(400, "Bad status line")
        if not _STATUS_MIN <= int(code) <= _STATUS_MAX:
            raise SipError(400, "Bad status line")
        return "response", code, reason.strip()
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipError(400, "Bad request line")
    method, uri, version = parts
    if version.upper() != _SIP_VERSION:
        if version.upper().startswith("SIP/"):
            # RFC 3261 §8.2.2.x, §21.5.6: an unsupported version is a 505.
            raise SipError(505, "Version Not Supported")
        raise SipError(400, "Bad request line")
    if not is_token(method) or ":" not in uri or not uri.isprintable():
        raise SipError(400, "Bad request line")
    return "request", method, uri


def _parse_header_lines(lines: list[str], max_headers: int) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for line in lines:
        name, colon, value = line.partition(":")
        canonical = _names.get(name)
        if canonical is None or not colon:
            # Off the fast path: empty, folded, nameless or unusual lines.
            if not line:
                continue
            if line[0] in " \t":
                # RFC 3261 §7.3.1: a line starting with whitespace continues
                # the previous value; the fold becomes a single space.
                if not items:
                    raise SipError(400, "Bad header line")
                prev_name, prev_value = items[-1]
                items[-1] = (prev_name, f"{prev_value} {line.strip()}".strip())
                continue
            canonical = wire_name(name) if colon else None
            if canonical is None:
                raise SipError(400, "Bad header line")
        items.append((canonical, value.strip()))
    if len(items) > max_headers:
        raise SipError(400, "Too many header fields")
    return items


# Canonical names of the headers the parser validates, for a quick token check.
_KNOWN_VALID = frozenset(("Via", "From", "To", "Call-ID", "CSeq", "Content-Length"))


def _validate(
    items: list[tuple[str, str]], method: str | None, parsed: dict[str, Any]
) -> int | None:
    """Check the mandatory headers; return Content-Length if present.  What
    the checks parse is kept in ``parsed``, the message's accessor memo."""
    seen: dict[str, str] = {}
    have_via = False
    content_length: int | None = None
    for name, value in items:
        if name == "Via":
            have_via = True
        elif name in _KNOWN_VALID:
            if name in seen:
                raise SipError(400, f"Duplicate {name} header")
            seen[name] = value
            if name == "Content-Length":
                if not value.isdigit() or not value.isascii() or len(value) > 10:
                    raise SipError(400, "Bad Content-Length header")
                content_length = int(value)
    if not have_via:
        raise SipError(400, "Missing Via header")
    for name in _SINGLE_MANDATORY:
        if name not in seen:
            raise SipError(400, f"Missing {name} header")
    for name, value in items:
        if name == "Via":
            # Only the top Via must be sound for us (§8.2.6.2 copies the rest
            # verbatim), but a malformed Via list is a malformed message.
            for via in split_list(value) or [value]:
                parsed_via = parse_via(via)
                parsed.setdefault("Via", parsed_via)
    if method is not None:
        # A response's From and To are only ever copied, never read: they are
        # parsed on first use (the accessors raise the same SipError), which
        # spares the answers to our NOTIFYs, the bulk of a fan-out's input.
        parsed["From"] = parse_name_addr(seen["From"], "From")
        parsed["To"] = parse_name_addr(seen["To"], "To")
    call_id = seen["Call-ID"]
    if not call_id or any(c in call_id for c in " \t"):
        raise SipError(400, "Bad Call-ID header")
    cseq = parsed["CSeq"] = parse_cseq(seen["CSeq"])
    cseq_method = cseq[1]
    if method is not None and cseq_method != method:
        # RFC 3261 §8.1.1.5: the CSeq method MUST match the request method.
        raise SipError(400, "Bad CSeq header: method does not match request")
    return content_length


def parse_message(
    data: bytes, *, max_size: int = MAX_MESSAGE_SIZE, max_headers: int = MAX_HEADERS
) -> Request | Response:
    """One SIP message from a datagram or a frame cut by ``StreamFramer``."""
    if len(data) > max_size:
        raise SipError(513, "Message Too Large")
    # RFC 3261 §7.5: ignore CRLFs before the start line (keep-alives, §18.1.1
    # RFC 5626 pings on a datagram transport).
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    if not data:
        raise SipError(400, "Empty message")
    head_end, body_start = _split_head(data)
    head = _decode(data[:head_end])
    if "\r" in head:
        head = head.replace("\r\n", "\n")
        if "\r" in head:
            # A bare CR is a line break to some parsers and not to others;
            # echoing such a value back could split a header in two.
            raise SipError(400, "Bad header line: bare CR")
    lines = head.split("\n")
    kind, first, second = _parse_start_line(lines[0])
    if len(lines) - 1 > max_headers:
        raise SipError(400, "Too many header fields")
    items = _parse_header_lines(lines[1:], max_headers)
    method = first if kind == "request" else None
    parsed: dict[str, Any] = {}
    content_length = _validate(items, method, parsed)
    body = data[body_start:]
    if content_length is not None:
        if content_length > len(body):
            raise SipError(400, "Content-Length larger than datagram")
        # RFC 3261 §18.3: octets beyond Content-Length are discarded.
        body = body[:content_length]
    # _parse_header_lines spells every name canonically already.
    headers = Headers.trusted(tuple(items))
    if kind == "request":
        return Request(first, second, headers, body, parsed)
    return Response(int(first), second, headers, body, parsed)


class StreamFramer:
    """Cuts a TCP/TLS byte stream into whole SIP messages (RFC 3261 §18.3).

    - Content-Length delimits the body on a stream. When it is missing the
      message is framed with no body, unless it has a Content-Type: then a
      body was surely sent and cannot be found, so ``SipError(400, "Missing
      Content-Length header")``. ``feed`` does not raise it: it returns the
      messages framed before the fault, and ``failure`` holds the error and
      ``failed_head`` the bytes of the message that could not be framed, so
      the transport can answer it (a 400 or 513 names what is wrong) before
      it closes the connection; the stream is out of step and every later
      ``feed`` returns nothing.
    - CRLFs between messages are skipped; each double-CRLF ping (RFC 5626
      §3.5.1) is counted so the transport can answer a single-CRLF pong
      (``take_pings``).
    - The header block is searched for its end from where the last search
      stopped, so feeding one byte at a time stays linear.
    """

    __slots__ = (
        "_buffer",
        "_max_size",
        "_need",
        "_ping_state",
        "_pings",
        "_scan",
        "failed_head",
        "failure",
    )

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self.failure: SipError | None = None
        self.failed_head = b""
        self._buffer = bytearray()
        self._max_size = max_size
        self._pings = 0
        # How much of b"\r\n\r\n" the CRLFs skipped so far have matched, so a
        # ping fed one byte at a time is still counted once.
        self._ping_state = 0
        # Where the search for the blank line resumes, relative to the buffer.
        self._scan = 0
        # Total length of the message at the buffer's start, once known.
        self._need: int | None = None

    def take_pings(self) -> int:
        """Double-CRLF keep-alives seen since the last call (RFC 5626 §3.5.1)."""
        pings, self._pings = self._pings, 0
        return pings

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes from the stream; return every message they complete."""
        if self.failure is not None:
            return []
        buffer = self._buffer
        buffer += data
        out: list[bytes] = []
        start = 0
        while True:
            if self._need is None:
                start = self._skip_crlf(start)
                try:
                    need = self._find_frame(start)
                except SipError as exc:
                    self.failure = exc
                    self.failed_head = bytes(buffer[start : start + self._max_size])
                    buffer.clear()
                    return out
                if need is None:
                    break
                self._need = need
            if len(buffer) - start < self._need:
                break
            end = start + self._need
            out.append(bytes(buffer[start:end]))
            start = end
            self._need = None
            self._scan = start
        if start:
            del buffer[:start]
            self._scan = max(0, self._scan - start)
        return out

    def _skip_crlf(self, start: int) -> int:
        buffer = self._buffer
        length = len(buffer)
        begin = start
        while start < length and buffer[start] in (13, 10):
            start += 1
        if start > begin:
            state = self._ping_state
            for byte in buffer[begin:start]:
                if byte == _PING[state]:
                    state += 1
                    if state == len(_PING):
                        self._pings += 1
                        state = 0
                else:
                    state = 1 if byte == _PING[0] else 0
            self._ping_state = state
            self._scan = max(self._scan, start)
        if start < length:
            self._ping_state = 0
        return start

    def _find_frame(self, start: int) -> int | None:
        """Length of the message starting at ``start``, or None if its headers are incomplete."""
        buffer = self._buffer
        # Back up three bytes: the blank line may straddle two reads.
        scan_from = max(start, self._scan - 3)
        crlf = buffer.find(b"\r\n\r\n", scan_from)
        lf = buffer.find(b"\n\n", scan_from, crlf if crlf >= 0 else len(buffer))
        if lf >= 0:
            head_end, body_start = lf, lf + 2
        elif crlf >= 0:
            head_end, body_start = crlf, crlf + 4
        else:
            self._scan = len(buffer)
            if len(buffer) - start > self._max_size:
                raise SipError(513, "Message Too Large")
            return None
        length = _stream_content_length(bytes(buffer[start:head_end]))
        total = body_start - start + length
        if total > self._max_size:
            raise SipError(513, "Message Too Large")
        return total


def _stream_content_length(head: bytes) -> int:
    lower = head.lower()
    at = lower.find(b"\ncontent-length")
    if at >= 0 and b"\nl" not in lower.replace(b"\ncontent-length", b""):
        # Fast path: one long-form Content-Length and no compact "l" line.
        end = lower.find(b"\n", at + 1)
        line = head[at + 1 : end if end >= 0 else len(head)]
        following = head[end + 1 : end + 2] if end >= 0 else b""
        name, colon, raw = line.partition(b":")
        if (
            colon
            and following not in (b" ", b"\t")
            and lower.count(b"\ncontent-length") == 1
            and name.rstrip(b" \t").lower() == b"content-length"
        ):
            return _content_length_value(raw.strip().decode("latin-1"))
    return _stream_content_length_slow(head)


def _content_length_value(value: str) -> int:
    if not value.isdigit() or not value.isascii() or len(value) > 10:
        raise SipError(400, "Bad Content-Length header")
    return int(value)


def _stream_content_length_slow(head: bytes) -> int:
    value: str | None = None
    has_type = False
    for line in head.decode("latin-1").replace("\r\n", "\n").split("\n")[1:]:
        name, colon, rest = line.partition(":")
        if not colon or line[:1] in (" ", "\t"):
            continue
        canonical = canonical_name(name)
        if canonical == "Content-Length":
            if value is not None:
                raise SipError(400, "Duplicate Content-Length header")
            value = rest.strip()
        elif canonical == "Content-Type":
            has_type = True
    if value is None:
        if has_type:
            raise SipError(400, "Missing Content-Length header")
        return 0
    return _content_length_value(value)
