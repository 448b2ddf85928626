"""Watcher information documents (RFC 3858) for the presence.winfo event (RFC 3857).

Facts and invariants:
- ``<watcherinfo version state>`` holds ``watcher-list`` elements, one per
  (resource, package); each lists ``watcher`` elements whose text is the
  watcher URI (RFC 3858 §4.2, schema §4.4).
- ``version`` counts documents sent in one subscription, from 0, so a
  subscriber can detect a lost or reordered NOTIFY (RFC 3858 §4.2).
- ``status`` and ``event`` take the values of the RFC 3857 §3.2 watcher
  state machine; the schema enumerates them, and so do we, on build and
  on parse.
- Strings from SIP (display names, URIs) may hold characters XML cannot
  carry; they are dropped rather than letting one watcher's odd header stop
  the winfo NOTIFY of every other watcher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from lxml import etree

from presencex.bodies.xmlparse import (
    DOCUMENT_STATES,
    BodyError,
    new_root,
    parse_xml,
    serialize_xml,
    xml_text,
)

__all__ = [
    "WATCHERINFO_CONTENT_TYPE",
    "WATCHERINFO_NS",
    "WATCHER_EVENTS",
    "WATCHER_STATUSES",
    "WatcherEntry",
    "WatcherInfoDoc",
    "WatcherList",
    "build_watcherinfo",
    "parse_watcherinfo",
]

WATCHERINFO_NS = "urn:ietf:params:xml:ns:watcherinfo"
WATCHERINFO_CONTENT_TYPE = "application/watcherinfo+xml"

WATCHERINFO = f"{{{WATCHERINFO_NS}}}watcherinfo"
WATCHER_LIST = f"{{{WATCHERINFO_NS}}}watcher-list"
WATCHER = f"{{{WATCHERINFO_NS}}}watcher"

# RFC 3858 §4.4 schema enumerations.
WATCHER_STATUSES = frozenset({"pending", "active", "waiting", "terminated"})
WATCHER_EVENTS = frozenset(
    {
        "subscribe",
        "approved",
        "deactivated",
        "probation",
        "rejected",
        "timeout",
        "giveup",
        "noresource",
    }
)


@dataclass(frozen=True, slots=True)
class WatcherEntry:
    """One ``<watcher>``: a subscription to the resource, as its owner may see it."""

    id: str
    status: str
    event: str
    uri: str
    display_name: str | None = None
    duration_subscribed: int | None = None
    expiration: int | None = None
    # The watched event when it is not the document's own package: a
    # presentity's winfo also lists who watches its other events, each
    # event in a watcher-list of its own (RFC 3858 §4.2).
    package: str | None = None


class WatcherList(NamedTuple):
    """One ``<watcher-list>``; unpacks as (resource, package, watchers)."""

    resource: str
    package: str
    watchers: list[WatcherEntry]


@dataclass(frozen=True, slots=True)
class WatcherInfoDoc:
    version: int
    state: str
    watcher_lists: list[WatcherList]


def _check_entry(watcher: WatcherEntry) -> None:
    if watcher.status not in WATCHER_STATUSES:
        raise ValueError(f"watcher status {watcher.status!r} is not one of RFC 3858's")
    if watcher.event not in WATCHER_EVENTS:
        raise ValueError(f"watcher event {watcher.event!r} is not one of RFC 3858's")
    for name, value in (
        ("duration_subscribed", watcher.duration_subscribed),
        ("expiration", watcher.expiration),
    ):
        if value is not None and value < 0:
            raise ValueError(f"watcher {name} must be >= 0 (xs:unsignedLong)")


def build_watcherinfo(
    *,
    version: int,
    state: str,
    resource: str,
    package: str,
    watchers: Sequence[WatcherEntry],
) -> bytes:
    """A watcherinfo document: a watcher-list for ``resource``/``package``,
    always there even when empty, then one for each other package that
    entries name, in the order they first appear.

    Raises ValueError on values the RFC 3858 schema forbids: those are bugs
    of the caller, not of a peer.
    """
    if version < 0:
        raise ValueError("watcherinfo version must be >= 0")
    if state not in DOCUMENT_STATES:
        raise ValueError(f"watcherinfo state {state!r} must be full or partial")
    for watcher in watchers:
        _check_entry(watcher)
    root = new_root(WATCHERINFO, {None: WATCHERINFO_NS})
    root.set("version", str(version))
    root.set("state", state)
    lists: dict[str, etree._Element] = {}
    for name in (package, *(w.package for w in watchers if w.package is not None)):
        if name not in lists:
            lists[name] = etree.SubElement(root, WATCHER_LIST)
            lists[name].set("resource", xml_text(resource))
            lists[name].set("package", xml_text(name))
    for watcher in watchers:
        wlist = lists[watcher.package if watcher.package is not None else package]
        element = etree.SubElement(wlist, WATCHER)
        element.set("id", xml_text(watcher.id))
        element.set("status", watcher.status)
        element.set("event", watcher.event)
        if watcher.display_name is not None:
            element.set("display-name", xml_text(watcher.display_name))
        if watcher.duration_subscribed is not None:
            element.set("duration-subscribed", str(watcher.duration_subscribed))
        if watcher.expiration is not None:
            element.set("expiration", str(watcher.expiration))
        element.text = xml_text(watcher.uri)
    return serialize_xml(root)


def _required(element: etree._Element, name: str, what: str) -> str:
    value = element.get(name)
    if value is None:
        raise BodyError(f"{what} without {name}")
    return value


def _unsigned(text: str, what: str) -> int:
    # xs:nonNegativeInteger / xs:unsignedLong: digits only, no sign.
    stripped = text.strip()
    if not stripped.isascii() or not stripped.isdigit():
        raise BodyError(f"{what} must be a non-negative integer")
    return int(stripped)


def _optional_unsigned(element: etree._Element, name: str) -> int | None:
    value = element.get(name)
    return None if value is None else _unsigned(value, f"watcher {name}")


def _parse_watcher(element: etree._Element) -> WatcherEntry:
    status = _required(element, "status", "watcher")
    if status not in WATCHER_STATUSES:
        raise BodyError("watcher status must be pending, active, waiting or terminated")
    event = _required(element, "event", "watcher")
    if event not in WATCHER_EVENTS:
        raise BodyError("watcher event is not one of RFC 3858's")
    uri = (element.text or "").strip()
    if not uri:
        raise BodyError("watcher without URI")
    return WatcherEntry(
        id=_required(element, "id", "watcher"),
        status=status,
        event=event,
        uri=uri,
        display_name=element.get("display-name"),
        duration_subscribed=_optional_unsigned(element, "duration-subscribed"),
        expiration=_optional_unsigned(element, "expiration"),
    )


def parse_watcherinfo(data: bytes) -> WatcherInfoDoc:
    """Read a watcherinfo document (a NOTIFY body) through the hardened parser."""
    root = parse_xml(data)
    if root.tag != WATCHERINFO:
        raise BodyError(f"root element must be {WATCHERINFO}")
    version = _unsigned(_required(root, "version", "watcherinfo"), "watcherinfo version")
    state = _required(root, "state", "watcherinfo")
    if state not in DOCUMENT_STATES:
        raise BodyError("watcherinfo state must be full or partial")
    lists: list[WatcherList] = []
    for wlist in root.iterchildren(WATCHER_LIST):
        watchers = [_parse_watcher(w) for w in wlist.iterchildren(WATCHER)]
        lists.append(
            WatcherList(
                resource=_required(wlist, "resource", "watcher-list"),
                package=_required(wlist, "package", "watcher-list"),
                watchers=watchers,
            )
        )
    return WatcherInfoDoc(version=version, state=state, watcher_lists=lists)
