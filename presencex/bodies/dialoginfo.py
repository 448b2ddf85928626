"""Dialog state documents (RFC 4235) for the dialog event and its SLA/BLF uses.

Facts and invariants:
- ``<dialog-info version state entity>`` holds ``dialog*`` and then
  extensions (RFC 4235 §4.1, schema §4.2); each dialog has an ``id`` and
  exactly one ``<state>``, one of trying, proceeding, early, confirmed,
  terminated (RFC 4235 §3.7.1).
- Publications of one presentity (each phone of a shared line, each
  dialog) are aggregated into one ``state="full"`` document: every dialog
  once per id, the newest publication winning, as RFC 3903 publishers expect
  for the state they last sent.
- Extension children are moved, not rebuilt, so RFC 4235 participant data
  (local/remote identity, target, params) and shared-line extensions such as
  draft-anil-sipping-bla's ``sa:appearance`` / ``sa:exclusive``
  (urn:ietf:params:xml:ns:sa-dialog-info) reach watchers intact.
- With no publication the aggregate is a full document without dialogs:
  RFC 4235 §3.7 reads it as "no dialogs", i.e. the line is idle.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lxml import etree

from presencex.bodies.xmlparse import (
    DOCUMENT_STATES,
    BodyError,
    merged_nsmap,
    new_root,
    parse_stored,
    parse_xml,
    serialize_xml,
    show_value,
    xml_text,
)

__all__ = [
    "DIALOGINFO_CONTENT_TYPE",
    "DIALOGINFO_NS",
    "DIALOG_STATES",
    "SA_DIALOGINFO_NS",
    "aggregate_dialoginfo",
    "dialog_states",
    "validate_dialoginfo",
    "with_version",
]

DIALOGINFO_NS = "urn:ietf:params:xml:ns:dialog-info"
DIALOGINFO_CONTENT_TYPE = "application/dialog-info+xml"
# draft-anil-sipping-bla shared appearances (Polycom, BroadSoft SCA).
SA_DIALOGINFO_NS = "urn:ietf:params:xml:ns:sa-dialog-info"

DIALOG_INFO = f"{{{DIALOGINFO_NS}}}dialog-info"
DIALOG = f"{{{DIALOGINFO_NS}}}dialog"
STATE = f"{{{DIALOGINFO_NS}}}state"

DIALOG_STATES = frozenset({"trying", "proceeding", "early", "confirmed", "terminated"})

# The root's version attribute in the bytes serialize_xml writes for an
# aggregate_dialoginfo document: its declaration, then the unprefixed root
# start tag, namespace declarations first. Attribute values cannot hold '"'
# or '>' once serialised (libxml2 escapes them), so the first ' version="'
# inside the start tag is the root's own attribute, never part of an entity
# or a namespace URI ('xmlns:version="' has no space before "version").
# Anything else, a publisher's own document say, is parsed (see with_version).
_ROOT_VERSION = re.compile(
    rb'\A(<\?xml version="1\.0" encoding="UTF-8"\?>\n<dialog-info [^>]*? version=")[0-9]+(")'
)


def validate_dialoginfo(data: bytes) -> etree._Element:
    """Parse a PUBLISH body and check the structure RFC 4235 §4.1 requires."""
    root = parse_xml(data)
    if root.tag != DIALOG_INFO:
        raise BodyError(f"root element must be {DIALOG_INFO}")
    version = root.get("version")
    if version is None or not (version.isascii() and version.isdigit()):
        raise BodyError("dialog-info version must be a non-negative integer")
    if root.get("state") not in DOCUMENT_STATES:
        raise BodyError("dialog-info state must be full or partial")
    if not root.get("entity"):
        raise BodyError("dialog-info without entity")
    seen: set[str] = set()
    for dialog in root.iterchildren(DIALOG):
        ident = dialog.get("id")
        if ident is None:
            raise BodyError("dialog without id")
        if ident in seen:
            raise BodyError(f"duplicate dialog id {show_value(ident)}")
        seen.add(ident)
        states = dialog.findall(STATE)
        if len(states) != 1:
            raise BodyError(f"dialog {show_value(ident)} must have exactly one state")
        # Whitespace around the value is tolerated from pretty-printing phones.
        if (states[0].text or "").strip() not in DIALOG_STATES:
            raise BodyError(
                f"dialog {show_value(ident)}: state must be trying, proceeding, early, confirmed or terminated"
            )
    return root


def dialog_states(body: bytes) -> dict[str, str]:
    """Dialog id → state, in document order."""
    root = parse_xml(body)
    return {
        dialog.get("id", ""): (dialog.findtext(STATE) or "").strip()
        for dialog in root.iterchildren(DIALOG)
    }


def aggregate_dialoginfo(bodies: Sequence[bytes], entity: str, version: int) -> bytes:
    """One full dialog-info document from the live publications of ``entity``.

    ``bodies`` are oldest → newest. Every dialog appears once per id, the
    newest publication winning; the newest publication's dialogs come first
    because phones that only read one dialog should read the current one.
    Other extension children of dialog-info follow the dialogs (schema
    order), kept once each by content.
    """
    if version < 0:
        raise ValueError("dialog-info version must be >= 0")
    roots = [root for body in bodies if (root := parse_stored(body, DIALOG_INFO)) is not None]
    seen_ids: set[str] = set()
    seen_others: set[bytes] = set()
    dialogs: list[etree._Element] = []
    others: list[etree._Element] = []
    for root in reversed(roots):
        for child in root:
            if child.tag == DIALOG:
                ident = child.get("id")
                if ident is not None and ident not in seen_ids:
                    seen_ids.add(ident)
                    dialogs.append(child)
            else:
                key = etree.tostring(child, with_tail=False)
                if key not in seen_others:
                    seen_others.add(key)
                    others.append(child)
    out = new_root(DIALOG_INFO, merged_nsmap(roots, DIALOGINFO_NS))
    out.set("version", str(version))
    out.set("state", "full")
    out.set("entity", xml_text(entity))
    if dialogs or others:
        out.text = "\n"
    for child in (*dialogs, *others):
        child.tail = "\n"
        out.append(child)
    return serialize_xml(out)


def with_version(doc: bytes, version: int) -> bytes:
    """``doc``, an ``aggregate_dialoginfo`` result, with its root ``version`` set.

    RFC 4235 §4.1 numbers the documents of each subscription, so every
    watcher's NOTIFY needs its own version on one shared aggregate. Our
    aggregates start with the root's version attribute, so it is rewritten
    in the bytes (about a microsecond) instead of parsing and
    serialising the document again per watcher (tens of microseconds). A
    document of any other shape is parsed and re-serialised, with the same
    result.
    """
    if version < 0:
        raise ValueError("dialog-info version must be >= 0")
    match = _ROOT_VERSION.match(doc)
    if match is None:
        root = parse_xml(doc)
        root.set("version", str(version))
        return serialize_xml(root)
    return b"".join((doc[: match.end(1)], str(version).encode("ascii"), doc[match.start(2) :]))
