"""RFC 5025 §3.3 transformations: what one watcher may see of a PIDF document.

Pure code: an aggregated PIDF and a ``Transformations`` in, bytes out.

Facts and invariants:
- Default deny (RFC 5025 §3.3): a tuple, person or device stays only if a
  ``provide-services``/``-persons``/``-devices`` selects it (RFC 5025
  §3.3.1), and within what stays an attribute stays only if a permission
  provides it (§3.3.2). ``Transformations()`` leaves ``<presence entity=…/>``.
- What PIDF and the data model need for the document to mean anything is
  not an attribute and always stays in a kept component: a tuple's
  ``status`` with its ``basic``, ``contact`` and ``timestamp``; a person's or
  device's ``timestamp``; a device's ``deviceID``, which RFC 4479's schema
  requires and which identifies the device the watcher was given
  (``provide-deviceID`` governs the ``deviceID`` of tuples).
- Elements are classified by namespace and local name. Anything not named
  by RFC 5025 (CIPID, capabilities, vendor elements, status extensions) is
  an "unknown attribute": it stays only if a ``provide-unknown-attribute``
  names its namespace and name, or with ``provide-all-attributes``.
- ``provide-note`` governs every free-text note: PIDF's ``note`` (presence
  and tuple level), the data model's ``note`` (person, device) and RPID's
  ``note`` inside activities, mood, place-is and the like, because a note
  can say what the withheld attributes would have said.
- The output is still a valid PIDF: elements are only removed, never
  added or renamed, so the entity stays, ids stay unique, and no tuple
  loses its ``status``. The output depends on the body and the
  transformations only, never on the watcher, so callers may cache it.
"""

from __future__ import annotations

from collections.abc import Iterator

from lxml import etree

from presencex.auth.rules import Attribute, Provide, Transformations, uri_key
from presencex.bodies.pidf import (
    BASIC,
    CONTACT,
    DATA_MODEL_NS,
    DEVICE,
    NOTE,
    PERSON,
    PIDF_NS,
    PRESENCE,
    RPID_NS,
    STATUS,
    TUPLE,
    parse_aggregate,
)
from presencex.bodies.xmlparse import BodyError, serialize_xml

__all__ = ["filter_pidf"]


def _dm(name: str) -> str:
    return f"{{{DATA_MODEL_NS}}}{name}"


def _rpid(name: str) -> str:
    return f"{{{RPID_NS}}}{name}"


TIMESTAMP = f"{{{PIDF_NS}}}timestamp"
DEVICE_ID = _dm("deviceID")
USER_INPUT = _rpid("user-input")
RPID_CLASS = _rpid("class")

# The note elements of PIDF (RFC 3863 §4.1.6), the data model (RFC 4479
# §3.4) and RPID (RFC 4480 §3.1, inside each RPID element).
_NOTES = frozenset({NOTE, _dm("note"), _rpid("note")})

# RPID elements (RFC 4480 §3) that an RFC 5025 §3.3.2 boolean provides.
_RPID_ATTRIBUTES: dict[str, Attribute] = {
    _rpid("activities"): "activities",
    _rpid("class"): "class",
    _rpid("mood"): "mood",
    _rpid("place-is"): "place-is",
    _rpid("place-type"): "place-type",
    _rpid("privacy"): "privacy",
    _rpid("relationship"): "relationship",
    _rpid("status-icon"): "status-icon",
    _rpid("sphere"): "sphere",
    _rpid("time-offset"): "time-offset",
}

# The components RFC 5025 §3.3.1 selects, by tag, with the kind that names
# their entry in _ALWAYS_KEPT.
_COMPONENT_KINDS = {TUPLE: "tuple", PERSON: "person", DEVICE: "device"}

# What each kind of component keeps whatever the permissions (see above).
_ALWAYS_KEPT = {
    "tuple": frozenset({STATUS, CONTACT, TIMESTAMP}),
    "person": frozenset({_dm("timestamp")}),
    "device": frozenset({_dm("timestamp"), DEVICE_ID}),
    "status": frozenset({BASIC}),
}

# RPID user-input (RFC 4480 §3.17) attributes that each level of RFC 5025
# §3.3.2 provide-user-input withholds: "bare" gives only active/idle,
# "thresholds" adds the idle-threshold, "full" gives everything.
_USER_INPUT_HIDDEN: dict[str, tuple[str, ...]] = {
    "false": ("idle-threshold", "last-input"),  # unreachable: the element goes
    "bare": ("idle-threshold", "last-input"),
    "thresholds": ("last-input",),
    "full": (),
}


def filter_pidf(body: bytes, transformations: Transformations) -> bytes:
    """``body`` (a valid, aggregated PIDF) as RFC 5025 §3.3 lets a watcher see it.

    The watcher is not an argument: the transformations already carry
    everything that depends on it (see the module docstring on caching).
    """
    # The aggregate of several publications may be larger than one untrusted
    # body may be: parse_xml's limits for a PUBLISH body would refuse it
    # ("document too large") and fail every NOTIFY of the presentity.
    root = parse_aggregate(body)
    if root.tag != PRESENCE:
        raise BodyError(f"root element must be {PRESENCE}")
    t = transformations
    provides = {TUPLE: t.services, PERSON: t.persons, DEVICE: t.devices}
    for child in list(_children(root)):
        tag = child.tag
        kind = _COMPONENT_KINDS.get(tag)
        if kind is not None:
            if _selected(child, provides[tag], kind):
                _filter_component(child, kind, t)
            else:
                root.remove(child)
            continue
        if tag in _NOTES:
            kept = t.provides("note")
        else:
            # A presence-level extension is an unknown attribute of the
            # presentity itself.
            kept = t.all_attributes or _qname(tag) in t.unknown_attributes
        if not kept:
            root.remove(child)
    return serialize_xml(root)


def _children(element: etree._Element) -> Iterator[etree._Element]:
    # The parser drops comments and PIs; skip anything else that is not an element.
    for child in element:
        if isinstance(child.tag, str):
            yield child


def _qname(tag: str) -> tuple[str, str]:
    name = etree.QName(tag)
    return (name.namespace or "", name.localname)


def _child_texts(element: etree._Element, tag: str) -> set[str]:
    return {(child.text or "").strip() for child in element.iterchildren(tag)}


def _selected(element: etree._Element, provide: Provide, kind: str) -> bool:
    """RFC 5025 §3.3.1: does one criterion of ``provide`` pick this component?"""
    if provide.all:
        return True
    if element.get("id") in provide.occurrence_ids:
        return True
    # <class> matches the component's RPID class (RFC 4480 §3.3).
    if provide.classes & _child_texts(element, RPID_CLASS):
        return True
    if kind == "device" and provide.device_ids & _child_texts(element, DEVICE_ID):
        return True
    if kind == "tuple":
        # The service URI of a tuple is its <contact> (RFC 4479 §3.1.1).
        for contact in _child_texts(element, CONTACT):
            if uri_key(contact) in provide.service_uris:
                return True
            scheme, colon, _ = contact.partition(":")
            if colon and scheme.lower() in provide.service_uri_schemes:
                return True
    return False


def _filter_component(element: etree._Element, kind: str, t: Transformations) -> None:
    """RFC 5025 §3.3.2: drop the attributes of a kept component that ``t`` withholds."""
    if t.all_attributes:
        return
    _filter_attributes(element, kind, t)
    for status in element.iterchildren(STATUS):
        _filter_attributes(status, "status", t)
    if not t.provides("note"):
        for note in [e for e in element.iter() if e.tag in _NOTES]:
            parent = note.getparent()
            if parent is not None:
                parent.remove(note)


def _filter_attributes(element: etree._Element, kind: str, t: Transformations) -> None:
    for child in list(_children(element)):
        if not _attribute_kept(child.tag, kind, t):
            element.remove(child)
        elif child.tag == USER_INPUT:
            for attribute in _USER_INPUT_HIDDEN[t.user_input_level]:
                if attribute in child.attrib:
                    del child.attrib[attribute]


def _attribute_kept(tag: str, kind: str, t: Transformations) -> bool:
    if tag in _ALWAYS_KEPT[kind]:
        return True
    if tag in _NOTES:
        return t.provides("note")
    if tag == DEVICE_ID:
        return t.provides("deviceID")
    attribute = _RPID_ATTRIBUTES.get(tag)
    if attribute is not None:
        return t.provides(attribute)
    if tag == USER_INPUT:
        return t.user_input_level != "false"
    # Named permissions win over provide-unknown-attribute: it only covers
    # what RFC 5025 gives no permission of its own.
    return _qname(tag) in t.unknown_attributes
