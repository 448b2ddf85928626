"""Header names and the immutable header list of a SIP message.

Facts:
- Header names are case-insensitive and several have compact forms
  (RFC 3261 §7.3.3, §20; RFC 3265/6665 "o"/"u", RFC 3515 "r", RFC 3892 "b",
  RFC 4028 "x"). ``Headers`` stores canonical spellings only, so a lookup is
  a string comparison.
- Values are stored unfolded (RFC 3261 §7.3.1) and stripped, unparsed: the
  parsers in ``uri`` run only when somebody asks, because most headers of a
  message are never looked at.
- List-valued headers may be split over several lines or joined with commas
  (RFC 3261 §7.3.1); ``get_all`` hides the difference.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# RFC 3261 §7.3.3 plus the compact forms of later extensions.
COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID",
    "f": "From",
    "t": "To",
    "v": "Via",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "e": "Content-Encoding",
    "k": "Supported",
    "o": "Event",  # RFC 6665 §8.2.1
    "u": "Allow-Events",  # RFC 6665 §8.2.2
    "s": "Subject",
    "r": "Refer-To",  # RFC 3515 §2.1
    "b": "Referred-By",  # RFC 3892 §3
    "x": "Session-Expires",  # RFC 4028 §4
    "a": "Accept-Contact",  # RFC 3841 §9.2
    "j": "Reject-Contact",  # RFC 3841 §9.2
    "d": "Request-Disposition",  # RFC 3841 §9.2
    "y": "Identity",  # RFC 8224 §4
}

# Names whose usual spelling is not Title-Case-per-dash.
_WELL_KNOWN = (
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reply-To",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
)

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1, §20, and
# RFC 6665 §8.2.2 for Allow-Events), so "a, b" means two values.
LIST_HEADERS: frozenset[str] = frozenset(
    (
        "Via",
        "Route",
        "Record-Route",
        "Path",
        "Contact",
        "Allow-Events",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
    )
)

# Canonical names cached per spelling seen on the wire. Bounded because the
# spellings come from the network: a peer inventing a new header name per
# message must not grow memory without limit. 4096 covers every real name in
# every case variant phones use, many times over.
MAX_NAME_CACHE = 4096

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")

# Read by the parser for its fast path; written only here.
NAME_CACHE: dict[str, str] = {}
_canonical_names: set[str] = set()


def _seed_cache() -> None:
    for name in _WELL_KNOWN:
        NAME_CACHE[name] = name
        NAME_CACHE[name.lower()] = name
        NAME_CACHE[name.upper()] = name
        _canonical_names.add(name)
    for short, name in COMPACT_FORMS.items():
        NAME_CACHE[short] = name
        NAME_CACHE[short.upper()] = name
        _canonical_names.add(name)


_seed_cache()


def is_token(text: str) -> bool:
    """RFC 3261 §25.1 ``token``: one or more of the token characters."""
    return bool(text) and _TOKEN_CHARS.issuperset(text)


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name, in any case or compact form."""
    try:
        return NAME_CACHE[name]
    except KeyError:
        pass
    stripped = name.strip()
    lower = stripped.lower()
    canonical = NAME_CACHE.get(lower)
    if canonical is None:
        canonical = COMPACT_FORMS.get(lower) or "-".join(
            part[:1].upper() + part[1:].lower() for part in lower.split("-")
        )
    # Only spellings that are valid on the wire as they stand (a token, maybe
    # followed by whitespace) are cached: the parser takes a cache hit as
    # proof that a header line is well-formed.
    if len(NAME_CACHE) < MAX_NAME_CACHE and is_token(name.rstrip(" \t")):
        NAME_CACHE[name] = canonical
        _canonical_names.add(canonical)
    return canonical


def wire_name(name: str) -> str | None:
    """The canonical name for a header name as read off the wire, or None.

    None means ``name`` is not a token (RFC 3261 §7.3.1: field-name = token,
    optionally followed by whitespace before the colon). Cached: the parser
    calls this once per header line.
    """
    try:
        return NAME_CACHE[name]
    except KeyError:
        pass
    stripped = name.rstrip(" \t")
    if not is_token(stripped):
        return None
    return canonical_name(name)


def _is_canonical(name: str) -> bool:
    if name in _canonical_names:
        return True
    return canonical_name(name) == name


def split_list(value: str) -> list[str]:
    """Split a list-valued header on commas outside quoted strings and ``<...>``.

    RFC 3261 §7.3.1: a comma inside a quoted display name or an angle-bracketed
    URI does not separate values. Empty elements are dropped (§7.3.1 allows
    none, but a stray trailing comma should not become a value to parse).
    """
    if '"' not in value and "<" not in value:
        return [part for part in (p.strip() for p in value.split(",")) if part]
    parts, _ = split_outside(value, ",", angles=True)
    return [part for part in (p.strip() for p in parts) if part]


def split_outside(text: str, sep: str, *, angles: bool) -> tuple[list[str], bool]:
    """Split on ``sep`` outside quoted strings (RFC 3261 §25.1), and outside
    ``<...>`` when ``angles``; also say whether a quoted string was left open."""
    parts: list[str] = []
    start = 0
    quoted = False
    angle = False
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif angles and char == "<":
            angle = True
        elif angles and char == ">":
            angle = False
        elif char == sep and not angle:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts, quoted


@dataclass(frozen=True, slots=True)
class Headers:
    """The ordered header fields of one message: (canonical name, value) pairs."""

    items: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # Callers may build a Headers from hand-written pairs; lookups compare
        # canonical names only, so spell them canonically once, here.
        items = self.items
        if not isinstance(items, tuple):
            items = tuple(items)
            object.__setattr__(self, "items", items)
        if _canonical_names.issuperset([name for name, _ in items]):
            return
        if not all(_is_canonical(name) for name, _ in items):
            fixed = tuple((canonical_name(n), v) for n, v in items)
            object.__setattr__(self, "items", fixed)

    @classmethod
    def trusted(cls, items: tuple[tuple[str, str], ...]) -> Headers:
        """Headers whose names are known canonical (the parser's output):
        skips the per-name check of ``__post_init__`` on the hot path."""
        headers = object.__new__(cls)
        object.__setattr__(headers, "items", items)
        return headers

    @classmethod
    def of(cls, *pairs: tuple[str, str]) -> Headers:
        return cls(tuple((canonical_name(name), value) for name, value in pairs))

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Headers:
        return cls(tuple((canonical_name(name), value) for name, value in pairs))

    def get(self, name: str) -> str | None:
        """The value of the first header called ``name``, or None."""
        name = canonical_name(name)
        for key, value in self.items:
            if key == name:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order; list-valued headers comma-split."""
        name = canonical_name(name)
        values = [value for key, value in self.items if key == name]
        if name not in LIST_HEADERS:
            return values
        out: list[str] = []
        for value in values:
            out.extend(split_list(value))
        return out

    def with_header(self, name: str, value: str) -> Headers:
        return Headers((*self.items, (canonical_name(name), value)))

    def without(self, name: str) -> Headers:
        name = canonical_name(name)
        return Headers(tuple(item for item in self.items if item[0] != name))

    def replace(self, name: str, value: str) -> Headers:
        name = canonical_name(name)
        kept = tuple(item for item in self.items if item[0] != name)
        return Headers((*kept, (name, value)))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        name = canonical_name(name)
        return any(key == name for key, _ in self.items)

    def __len__(self) -> int:
        return len(self.items)
