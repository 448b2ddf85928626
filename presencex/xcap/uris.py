"""XCAP server addresses and document URIs (RFC 4825 §6).

Facts:
- ``xcap_server`` entries are trusted XCAP roots: ``host``, ``host:port`` or a
  full ``http(s)://host[:port]/path`` xcap-root.  A bare host means
  ``http://host/xcap-root`` (the root most servers, Kamailio's xcap_server
  and OpenXCAP among them, use; ``xcap_root_path`` overrides it).
- A document URI is ``<xcap-root>/<auid>/users/<XUI>/<document>`` where the
  XUI is the SIP AOR, percent-encoded as a path segment (RFC 4825 §6.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit


@dataclass(frozen=True, slots=True)
class XcapServer:
    scheme: str
    host: str
    port: int | None
    root_path: str | None  # None: use the configured xcap_root_path

    def root(self, default_path: str) -> str:
        path = self.root_path if self.root_path is not None else default_path
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc = host if self.port is None else f"{host}:{self.port}"
        return f"{self.scheme}://{netloc}{path.rstrip('/')}"

    def __str__(self) -> str:
        return self.root(self.root_path or "")


def parse_xcap_server(text: str) -> XcapServer:
    text = text.strip()
    if not text:
        raise ValueError("an empty XCAP server entry")
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{text!r}: an xcap-root URL must be http:// or https:// with a host")
        return XcapServer(parts.scheme, parts.hostname, parts.port, parts.path or "/")
    host, sep, port_text = text.rpartition(":")
    if sep and port_text.isdigit() and "]" not in port_text:
        port = int(port_text)
        if not 0 < port <= 65535:
            raise ValueError(f"{text!r}: port out of range")
        return XcapServer("http", host.strip("[]"), port, None)
    if any(c in text for c in "/?#@ "):
        raise ValueError(f"{text!r}: give host, host:port or an http(s):// xcap-root URL")
    return XcapServer("http", text.strip("[]"), None, None)


def document_uri(root: str, auid: str, xui: str, document: str) -> str:
    return f"{root}/{auid}/users/{quote(xui, safe='@:')}/{document}"
