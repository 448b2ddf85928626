"""Parsers for SIP URIs and for the structured header values presence needs.

Facts:
- Every parser raises ``SipError(400, "Bad <Header> header")`` (or "Bad URI"
  for a bare URI) and nothing else, whatever the input: the transport answers
  the 400 and the operator learns which header the phone got wrong.
- Parameter names are case-insensitive (RFC 3261 §7.3.1, §19.1.4) and are
  stored lower-cased; values are kept as written, quotes included, so a value
  renders back unchanged (``+sip.instance="<urn:uuid:...>"``).
- A ``tel:`` URI (RFC 3966) parses to a ``SipUri`` with ``scheme="tel"``, the
  number in ``user`` and ``host=""``: presence never routes to one, but a
  From or P-Asserted-Identity may hold one and must not be a parse error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from presencex.sip.errors import SipError
from presencex.sip.headers import is_token, split_outside

Params = tuple[tuple[str, str | None], ...]

# RFC 3261 §19.1.1: hostname / IPv4address / IPv6reference. Deliberately
# loose about label syntax (underscores appear in real deployments) but
# without anything that could end a header or start a parameter.
_HOST_RE = re.compile(r"[A-Za-z0-9._\-]+|\[[0-9A-Fa-f:.]+\]")
_PORT_MAX = 65535
# CSeq numbers are 32-bit but "MUST be less than 2**31" (RFC 3261 §8.1.1.5).
CSEQ_MAX = 2**31 - 1
# delta-seconds (RFC 3261 §25.1, §20.19): a 32-bit unsigned value.
DELTA_SECONDS_MAX = 2**32 - 1


def _bad(what: str) -> SipError:
    return SipError(400, f"Bad {what}")


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double-quoted strings (RFC 3261 §25.1 quoted-string)."""
    if '"' not in text:
        return text.split(sep)
    parts, unterminated = split_outside(text, sep, angles=False)
    if unterminated:
        raise ValueError("unterminated quoted string")
    return parts


def parse_params(text: str, what: str) -> Params:
    """``;name[=value]`` pairs, ``text`` starting after the first ``;``."""
    try:
        pieces = _split_outside_quotes(text, ";")
    except ValueError:
        raise _bad(what) from None
    out: list[tuple[str, str | None]] = []
    for piece in pieces:
        name, eq, value = piece.partition("=")
        name = name.strip().lower()
        if not is_token(name):
            raise _bad(what)
        if eq:
            value = value.strip()
            if not value:
                raise _bad(what)
            out.append((name, value))
        else:
            out.append((name, None))
    return tuple(out)


def _render_params(params: Params) -> str:
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


def _find_param(params: Params, name: str) -> str | None:
    name = name.lower()
    for key, value in params:
        if key == name:
            return value
    return None


def _has_param(params: Params, name: str) -> bool:
    name = name.lower()
    return any(key == name for key, _ in params)


def _parse_port(text: str, what: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5:
        raise _bad(what)
    port = int(text)
    if port > _PORT_MAX:
        raise _bad(what)
    return port


def parse_hostport(text: str, what: str) -> tuple[str, int | None]:
    """``host[:port]`` with IPv6 references in brackets (RFC 3261 §25.1)."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise _bad(what)
        host, rest = text[: close + 1], text[close + 1 :]
        if not rest:
            port = None
        elif rest.startswith(":"):
            port = _parse_port(rest[1:], what)
        else:
            raise _bad(what)
    else:
        host, colon, port_text = text.partition(":")
        port = _parse_port(port_text, what) if colon else None
    if not _HOST_RE.fullmatch(host):
        raise _bad(what)
    return host, port


@dataclass(frozen=True, slots=True)
class SipUri:
    """A sip:, sips: or tel: URI (RFC 3261 §19.1, RFC 3966)."""

    scheme: str
    user: str | None
    host: str
    port: int | None
    params: Params
    headers: str
    password: str | None = None

    def param(self, name: str) -> str | None:
        return _find_param(self.params, name)

    def has_param(self, name: str) -> bool:
        return _has_param(self.params, name)

    @property
    def aor(self) -> str:
        """The address of record: scheme, user and lower-cased host only.

        RFC 3261 §10.3 step 5 compares AORs this way; the user part stays
        case-sensitive (§19.1.4).
        """
        if self.scheme == "tel":
            return f"tel:{self.user}"
        host = self.host.lower()
        return f"{self.scheme}:{self.user}@{host}" if self.user else f"{self.scheme}:{host}"

    @property
    def transport(self) -> str:
        """The transport a request to this URI would use (RFC 3263 §4.1 default)."""
        value = self.param("transport")
        if value:
            return value.lower()
        return "tls" if self.scheme == "sips" else "udp"

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{_render_params(self.params)}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out += [":", str(self.port)]
        out.append(_render_params(self.params))
        if self.headers:
            out += ["?", self.headers]
        return "".join(out)


def parse_uri(text: str, what: str = "URI") -> SipUri:
    """Parse a sip:/sips:/tel: URI; errors say ``Bad <what>``."""
    scheme, colon, rest = text.strip().partition(":")
    scheme = scheme.lower()
    if not colon or not rest:
        raise _bad(what)
    if scheme == "tel":
        number, _, param_text = rest.partition(";")
        if not number or any(c in number for c in ' \t<>"'):
            raise _bad(what)
        params = parse_params(param_text, what) if param_text else ()
        return SipUri("tel", number, "", None, params, "")
    if scheme not in ("sip", "sips"):
        raise _bad(what)
    if any(c in rest for c in " \t<>\r\n"):
        raise _bad(what)
    # The userinfo ends at the '@' (RFC 3261 §25.1 userinfo); a '?' before it
    # means the '@' belongs to the URI headers of a user-less URI.
    at = rest.find("@")
    question = rest.find("?")
    user: str | None = None
    password: str | None = None
    if at >= 0 and (question < 0 or at < question):
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, pcolon, pw = userinfo.partition(":")
        if pcolon:
            password = pw
        if not user:
            raise _bad(what)
    rest, _, uri_headers = rest.partition("?")
    hostport, semi, param_text = rest.partition(";")
    host, port = parse_hostport(hostport, what)
    params = parse_params(param_text, what) if semi else ()
    return SipUri(scheme, user, host, port, params, uri_headers, password)


def _unquote(text: str) -> str:
    """The content of a quoted-string with its quoted-pairs resolved (§25.1)."""
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    return re.sub(r"\\(.)", r"\1", inner, flags=re.DOTALL)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _end_of_quoted(text: str) -> int:
    """Index of the closing quote of the quoted-string opening ``text``, or -1."""
    index = 1
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == '"':
            return index
        index += 1
    return -1


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From, To, Contact, Route...: ``[display] <uri>;params`` (RFC 3261 §20.10).

    ``uri`` is kept as text and parsed with ``parse_uri`` on demand; ``*`` is
    the wildcard Contact of RFC 3261 §10.2.2.
    """

    display: str | None
    uri: str
    params: Params

    def param(self, name: str) -> str | None:
        return _find_param(self.params, name)

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def with_tag(self, tag: str) -> NameAddr:
        kept = tuple(item for item in self.params if item[0] != "tag")
        return NameAddr(self.display, self.uri, (*kept, ("tag", tag)))

    def __str__(self) -> str:
        if self.uri == "*":
            return "*"
        display = f"{_quote(self.display)} " if self.display is not None else ""
        return f"{display}<{self.uri}>{_render_params(self.params)}"


def parse_name_addr(value: str, header: str = "address") -> NameAddr:
    """name-addr or addr-spec with header parameters (RFC 3261 §20.10, §25.1).

    In the addr-spec form (no angle brackets) everything after the first ``;``
    is a header parameter, not a URI parameter: "sip:b@x;tag=1" has tag 1.
    """
    what = f"{header} header"
    text = value.strip()
    if text == "*":
        return NameAddr(None, "*", ())
    display: str | None = None
    if text.startswith('"'):
        end = _end_of_quoted(text)
        if end < 0:
            raise _bad(what)
        display = _unquote(text[: end + 1])
        text = text[end + 1 :].lstrip()
        if not text.startswith("<"):
            raise _bad(what)
    lt = text.find("<")
    if lt >= 0:
        if display is None:
            # RFC 3261 §25.1 wants tokens or a quoted-string, but phones send
            # unquoted UTF-8 names; only a quote is ambiguous enough to refuse.
            words = text[:lt].split()
            if '"' in text[:lt]:
                raise _bad(what)
            display = " ".join(words) or None
        gt = text.find(">", lt)
        if gt < 0:
            raise _bad(what)
        uri = text[lt + 1 : gt].strip()
        rest = text[gt + 1 :].strip()
        if rest and not rest.startswith(";"):
            raise _bad(what)
        param_text = rest[1:]
        has_params = bool(rest)
    else:
        uri, semi, param_text = text.partition(";")
        uri = uri.strip()
        has_params = bool(semi)
        if any(c in uri for c in ' \t,"?'):
            raise _bad(what)
    scheme, colon, rest_of_uri = uri.partition(":")
    if not colon or not rest_of_uri or not is_token(scheme) or any(c in uri for c in " \t<>\r\n"):
        raise _bad(what)
    params = parse_params(param_text, what) if has_params else ()
    return NameAddr(display, uri, params)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (RFC 3261 §20.42), RFC 3581 ``rport`` included."""

    protocol: str
    transport: str
    host: str
    port: int | None
    params: Params

    def param(self, name: str) -> str | None:
        return _find_param(self.params, name)

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def received(self) -> str | None:
        return self.param("received")

    @property
    def rport(self) -> int | None:
        """The port a server filled in (RFC 3581 §4), when it is a number."""
        value = self.param("rport")
        if value is None or not value.isdigit() or not value.isascii() or len(value) > 5:
            return None
        return int(value)

    @property
    def has_rport(self) -> bool:
        """True when the client asked for symmetric response routing (RFC 3581 §3).

        Any ``rport`` parameter counts, with or without a value: a request
        re-stamped by a proxy still wants its response sent back to the
        source port.
        """
        return _has_param(self.params, "rport")

    @property
    def sent_by(self) -> str:
        """``host:port`` with the transport's default port filled in (§18.2.1)."""
        port = self.port or (5061 if self.transport == "TLS" else 5060)
        return f"{self.host.lower()}:{port}"

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{_render_params(self.params)}"


def parse_via(value: str) -> Via:
    """One Via value, "SIP/2.0/UDP host:port;branch=z9hG4bK..." (§20.42)."""
    what = "Via header"
    head, semi, param_text = value.partition(";")
    parts = head.split("/", 2)
    if len(parts) != 3:
        raise _bad(what)
    name, version, rest = parts
    name = name.strip().upper()
    version = version.strip()
    transport_and_host = rest.split(None, 1)
    if len(transport_and_host) != 2 or not is_token(name) or not is_token(version):
        raise _bad(what)
    transport = transport_and_host[0].upper()
    if not is_token(transport):
        raise _bad(what)
    # sent-by allows LWS around the colon (§25.1 COLON = SWS ":" SWS).
    sent_by = transport_and_host[1].strip()
    if " " in sent_by or "\t" in sent_by:
        sent_by = ":".join(part.strip() for part in sent_by.split(":"))
    host, port = parse_hostport(sent_by, what)
    params = parse_params(param_text, what) if semi else ()
    return Via(f"{name}/{version}", transport, host, port, params)


def parse_cseq(value: str) -> tuple[int, str]:
    """CSeq: sequence number and method (RFC 3261 §20.16, §8.1.1.5)."""
    parts = value.split()
    if len(parts) != 2:
        raise _bad("CSeq header")
    number, method = parts
    if not number.isdigit() or not number.isascii() or len(number) > 10:
        raise _bad("CSeq header")
    seq = int(number)
    if seq > CSEQ_MAX or not is_token(method):
        raise _bad("CSeq header")
    return seq, method


@dataclass(frozen=True, slots=True)
class EventHeader:
    """Event (RFC 6665 §8.2.1): package name, lower-cased, and parameters."""

    package: str
    params: Params

    def param(self, name: str) -> str | None:
        return _find_param(self.params, name)

    @property
    def id(self) -> str | None:
        return self.param("id")

    def __str__(self) -> str:
        return self.package + _render_params(self.params)


def parse_event(value: str) -> EventHeader:
    """``presence``, ``presence.winfo``, ``dialog;sla``, ``presence;id=7``."""
    package, semi, param_text = value.partition(";")
    package = package.strip().lower()
    # event-type = event-package *( "." event-template ), all token-nodot.
    if not is_token(package) or package.startswith(".") or package.endswith(".") or ".." in package:
        raise _bad("Event header")
    params = parse_params(param_text, "Event header") if semi else ()
    return EventHeader(package, params)


def parse_subscription_state(value: str) -> tuple[str, Params]:
    """Subscription-State (RFC 6665 §8.2.3): substate lower-cased, params."""
    state, semi, param_text = value.partition(";")
    state = state.strip().lower()
    if not is_token(state):
        raise _bad("Subscription-State header")
    params = parse_params(param_text, "Subscription-State header") if semi else ()
    return state, params


def parse_expires(value: str, header: str = "Expires") -> int:
    """delta-seconds, 0 to 2**32-1 (RFC 3261 §20.19, §25.1)."""
    text = value.strip()
    if not text.isdigit() or not text.isascii() or len(text) > 10:
        raise _bad(f"{header} header")
    seconds = int(text)
    if seconds > DELTA_SECONDS_MAX:
        raise _bad(f"{header} header")
    return seconds


def parse_content_type(value: str) -> tuple[str, Params]:
    """Content-Type (RFC 3261 §20.15): ``type/subtype`` lower-cased, params."""
    media, semi, param_text = value.partition(";")
    # SLASH = SWS "/" SWS (§25.1): "text / plain" is allowed.
    main, slash, sub = media.lower().partition("/")
    main, sub = main.strip(), sub.strip()
    if not slash or not is_token(main) or not is_token(sub):
        raise _bad("Content-Type header")
    params = parse_params(param_text, "Content-Type header") if semi else ()
    return f"{main}/{sub}", params
