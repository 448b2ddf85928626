"""PIDF bodies (RFC 3863) with the RFC 4479 data model and RFC 4480 RPID.

Facts and invariants:
- A presence document is ``<presence entity=...>`` holding ``tuple*``,
  ``note*`` and then extension elements of other namespaces (RFC 3863 §4.1,
  schema §4.4), such as RFC 4479 ``dm:person`` and ``dm:device``.
- Tuples, persons and devices carry an ``id`` of type xs:ID, so the three
  share one id space and an id appears once per document (RFC 3863 §4.1.2,
  RFC 4479 §3.4 and its schema).
- Aggregating the publications of one presentity (RFC 3903 §2, RFC 4479
  §4.3.5 "composition") yields one valid document: each id once, the newest
  publication winning. Kamailio concatenates whole documents and repeats
  ids, which strict watchers reject; we do not.
- Extension elements (RPID activities, CIPID, capabilities, geopriv ...)
  are moved, never rebuilt, so unknown extensions reach watchers intact
  with their namespace URIs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from lxml import etree

from presencex.bodies.xmlparse import (
    MAX_BODY_BYTES,
    MAX_ELEMENTS,
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
    "DATA_MODEL_NS",
    "PIDF_CONTENT_TYPE",
    "PIDF_NS",
    "RPID_NS",
    "aggregate_pidf",
    "closed_pidf",
    "neutral_pidf",
    "offline_pidf",
    "parse_aggregate",
    "pidf_ids",
    "tuple_statuses",
    "validate_pidf",
]

logger = logging.getLogger(__name__)

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
DATA_MODEL_NS = "urn:ietf:params:xml:ns:pidf:data-model"
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
PIDF_CONTENT_TYPE = "application/pidf+xml"

XML_NS = "http://www.w3.org/XML/1998/namespace"

PRESENCE = f"{{{PIDF_NS}}}presence"
TUPLE = f"{{{PIDF_NS}}}tuple"
STATUS = f"{{{PIDF_NS}}}status"
BASIC = f"{{{PIDF_NS}}}basic"
CONTACT = f"{{{PIDF_NS}}}contact"
NOTE = f"{{{PIDF_NS}}}note"
PERSON = f"{{{DATA_MODEL_NS}}}person"
DEVICE = f"{{{DATA_MODEL_NS}}}device"
_LANG = f"{{{XML_NS}}}lang"

# The elements whose ids share the xs:ID space, with the word used in reasons.
_ID_KINDS = {TUPLE: "tuple", PERSON: "person", DEVICE: "device"}
_BASIC_VALUES = ("open", "closed")

# The tuple id of canned documents. Offline and polite-block documents are
# the same on purpose: RFC 5025 §3.2.1 polite-block must not let the watcher
# tell that it is blocked rather than looking at an offline presentity.
OFFLINE_TUPLE_ID = "offline"

# xs:ID is an NCName (Namespaces in XML 1.0 §3, XML 1.0 §2.3 Name without ':').
_NAME_START = (
    "A-Z_a-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02ff\u0370-\u037d\u037f-\u1fff"
    "\u200c-\u200d\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd"
    "\U00010000-\U000effff"
)
_NAME_CHAR = _NAME_START + r"\-.0-9\u00b7\u0300-\u036f\u203f-\u2040"
_NCNAME = re.compile(f"[{_NAME_START}][{_NAME_CHAR}]*")


def is_xml_id(value: str) -> bool:
    """True when ``value`` has the lexical form of xs:ID (an NCName)."""
    return _NCNAME.fullmatch(value) is not None


def validate_pidf(data: bytes) -> etree._Element:
    """Parse a PUBLISH body and check the structure RFC 3863/4479 require."""
    root = parse_xml(data)
    if root.tag != PRESENCE:
        raise BodyError(f"root element must be {PRESENCE}")
    if not root.get("entity"):
        raise BodyError("presence without entity")
    seen: set[str] = set()
    for child in root:
        kind = _ID_KINDS.get(child.tag)
        if kind is None:
            continue
        ident = child.get("id")
        if ident is None:
            raise BodyError(f"{kind} without id")
        if not is_xml_id(ident):
            raise BodyError(f"{kind} id {show_value(ident)} is not an XML ID")
        if ident in seen:
            raise BodyError(f"duplicate id {show_value(ident)}")
        seen.add(ident)
        if kind == "tuple":
            _check_tuple(child, ident)
    return root


def _check_tuple(tup: etree._Element, ident: str) -> None:
    # RFC 3863 §4.1.3/§4.1.4: exactly one <status>, holding at most one
    # <basic> whose value is "open" or "closed". Surrounding whitespace is
    # tolerated (pretty-printing publishers) though xs:string keeps it.
    statuses = tup.findall(STATUS)
    if not statuses:
        raise BodyError(f"tuple {show_value(ident)} without status")
    if len(statuses) > 1:
        raise BodyError(f"tuple {show_value(ident)} with more than one status")
    basics = statuses[0].findall(BASIC)
    if len(basics) > 1:
        raise BodyError(f"tuple {show_value(ident)} with more than one basic")
    if basics and (basics[0].text or "").strip() not in _BASIC_VALUES:
        raise BodyError(f"tuple {show_value(ident)}: basic must be open or closed")


def pidf_ids(body: bytes) -> dict[str, str]:
    """Id → kind ("tuple", "person", "device") of a PIDF body, in document order."""
    root = parse_xml(body)
    out: dict[str, str] = {}
    for child in root:
        kind = _ID_KINDS.get(child.tag)
        ident = child.get("id")
        if kind is not None and ident is not None:
            out[ident] = kind
    return out


def tuple_statuses(body: bytes) -> dict[str, str | None]:
    """Tuple id → basic status ("open", "closed") or None when it has no <basic>."""
    root = parse_xml(body)
    out: dict[str, str | None] = {}
    for tup in root.iterchildren(TUPLE):
        basic = tup.find(f"{STATUS}/{BASIC}")
        out[tup.get("id", "")] = None if basic is None else (basic.text or "").strip()
    return out


def parse_aggregate(body: bytes) -> etree._Element:
    """Parse an ``aggregate_pidf`` result: a document we built from
    publications that each passed ``validate_pidf``.

    Together they may hold more bytes and elements than any one untrusted
    body may (up to max_publications_per_presentity of them), so the size
    and element limits are scaled to the document: they were applied to each
    publication already, and an element takes at least four bytes. Depth is
    unchanged by aggregation and still checked, and so is everything else
    ``parse_xml`` refuses.
    """
    return parse_xml(
        body,
        max_bytes=max(MAX_BODY_BYTES, len(body)),
        max_elements=max(MAX_ELEMENTS, len(body) // 4),
    )


class _Picker:
    """Collects top-level elements newest publication first; the first seen wins."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.keys: set[object] = set()

    def first_id(self, element: etree._Element) -> bool:
        ident = element.get("id")
        if ident is None or ident in self.ids:
            return False
        self.ids.add(ident)
        return True

    def first_key(self, key: object) -> bool:
        if key in self.keys:
            return False
        self.keys.add(key)
        return True


def aggregate_pidf(bodies: Sequence[bytes], entity: str) -> bytes | None:
    """One valid PIDF document from the live publications of ``entity``.

    ``bodies`` are ordered oldest → newest and were validated when
    published. Every tuple, person and device appears once per id, the
    newest publication winning (RFC 4479 §4.3.5 leaves composition policy
    to the server; "latest wins" is what RFC 3903 publishers expect).
    Within each kind the newest publication comes first: many clients only
    read the first tuple or person, and that should be the current state.
    Presence-level notes are kept one per xml:lang (newest wins), and other
    extension elements once each (by id if they have one, else by content).
    Order follows the schema of RFC 3863 §4.4: tuple*, note*, then the
    extensions (persons, devices, others).
    """
    roots = [root for body in bodies if (root := parse_stored(body, PRESENCE)) is not None]
    if not roots:
        return None
    picker = _Picker()
    tuples: list[etree._Element] = []
    notes: list[etree._Element] = []
    persons: list[etree._Element] = []
    devices: list[etree._Element] = []
    others: list[etree._Element] = []
    for root in reversed(roots):
        for child in root:
            tag = child.tag
            if tag == TUPLE:
                if picker.first_id(child):
                    tuples.append(child)
            elif tag == PERSON:
                if picker.first_id(child):
                    persons.append(child)
            elif tag == DEVICE:
                if picker.first_id(child):
                    devices.append(child)
            elif tag == NOTE:
                if picker.first_key((NOTE, child.get(_LANG))):
                    notes.append(child)
            elif child.get("id") is not None:
                if picker.first_id(child):
                    others.append(child)
            elif picker.first_key(etree.tostring(child, with_tail=False)):
                others.append(child)
    out = new_root(PRESENCE, merged_nsmap(roots, PIDF_NS))
    out.set("entity", xml_text(entity))
    out.text = "\n"
    for child in (*tuples, *notes, *persons, *devices, *others):
        # Appending moves the element (with its subtree and the namespace
        # declarations it needs) out of its parsed source, which we own.
        child.tail = "\n"
        out.append(child)
    return serialize_xml(out)


def _single_closed_tuple(entity: str, tuple_id: str) -> etree._Element:
    out = new_root(PRESENCE, {None: PIDF_NS})
    out.set("entity", xml_text(entity))
    _closed_tuple(out, tuple_id)
    return out


def _closed_tuple(parent: etree._Element, tuple_id: str) -> etree._Element:
    tup = etree.SubElement(parent, TUPLE)
    tup.set("id", tuple_id)
    status = etree.SubElement(tup, STATUS)
    etree.SubElement(status, BASIC).text = "closed"
    return tup


def closed_pidf(body: bytes) -> bytes:
    """The publication ``body`` with every tuple closed: its final state.

    Sent when a publication is removed or expires (as Kamailio and OpenSIPS
    do), so watchers are not left showing it open. Each tuple keeps its id,
    so watchers match it to what they showed, and its <contact>; everything
    else goes: status extensions, tuple notes and timestamps, presence-level
    notes, dm:person and dm:device elements all describe a state that no
    longer holds (an "on the phone" activity must not outlive the phone's
    publication). A publication without tuples closes to an empty document.
    """
    src = parse_xml(body)
    if src.tag != PRESENCE:
        raise BodyError(f"root element must be {PRESENCE}")
    out = new_root(PRESENCE, {None: PIDF_NS})
    out.set("entity", src.get("entity", ""))
    for tup in src.iterchildren(TUPLE):
        ident = tup.get("id")
        if ident is None:
            continue
        closed = _closed_tuple(out, ident)
        contact = tup.find(CONTACT)
        if contact is not None:
            # RFC 3863 §4.4 schema: contact follows status in a tuple.
            contact.tail = None
            closed.append(contact)
    return serialize_xml(out)


def offline_pidf(entity: str) -> bytes:
    """A canned "offline" document: one tuple, basic closed.

    What Kamailio's ``force_dummy_presence`` and OpenSIPS send to a watcher
    of a presentity that has no publication.
    """
    return serialize_xml(_single_closed_tuple(entity, OFFLINE_TUPLE_ID))


def neutral_pidf(entity: str) -> bytes:
    """The document a polite-blocked watcher gets (RFC 5025 §3.2.1).

    It reveals nothing, not even the blocking: byte for byte the offline
    document, so the watcher cannot tell it from an absent presentity.
    """
    return offline_pidf(entity)


RPID_SPHERE = f"{{{RPID_NS}}}sphere"


def pidf_sphere(body: bytes) -> str | None:
    """The presentity's current sphere (RFC 4480 §3.12), from the first
    ``rpid:sphere`` of a person element: what pres-rules ``sphere`` conditions
    are matched against (RFC 4745 §7.2, RFC 5025 §3.1.2).  ``body`` is an
    aggregate, which may be larger than one publication may be."""
    try:
        root = parse_aggregate(body)
    except BodyError as e:
        logger.warning("aggregate does not parse, no sphere: %s", e)
        return None
    for person in root.iter(PERSON):
        for sphere in person.iter(RPID_SPHERE):
            # The sphere's value is its text, or the name of an empty child
            # element such as <rpid:work/> (RFC 4480 §3.12).
            text = (sphere.text or "").strip()
            if text:
                return text
            for child in sphere:
                if isinstance(child.tag, str):
                    return etree.QName(child).localname
    return None
