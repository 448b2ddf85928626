"""RFC 5025 §3.3 filtering, checked by parsing the output, never by comparing strings."""

from __future__ import annotations

import pytest
from lxml import etree

from presencex.auth.rules import (
    ATTRIBUTES,
    Attribute,
    Provide,
    Transformations,
    UserInput,
    evaluate,
    parse_rules,
)
from presencex.auth.transform import filter_pidf
from presencex.bodies.pidf import DATA_MODEL_NS, PIDF_NS, RPID_NS, neutral_pidf, validate_pidf
from presencex.bodies.xmlparse import BodyError
from tests.auth.docs import CIPID_NS, FOO_NS, RFC5025_EXAMPLE, RPID_PIDF

ALL = Provide(all=True)
EVERY_COMPONENT = Transformations(services=ALL, persons=ALL, devices=ALL)
NS = {"p": PIDF_NS, "dm": DATA_MODEL_NS, "r": RPID_NS, "c": CIPID_NS, "foo": FOO_NS}
ENTITY = "pres:someone@example.com"


def view(transformations: Transformations, body: bytes = RPID_PIDF) -> etree._Element:
    """Filter, check the result is still a valid PIDF, and return its tree."""
    return validate_pidf(filter_pidf(body, transformations))


def elements(root: etree._Element, path: str) -> list[etree._Element]:
    found = root.xpath(path, namespaces=NS)
    assert isinstance(found, list)
    return [e for e in found if isinstance(e, etree._Element)]


def ids(root: etree._Element, path: str) -> list[str]:
    return [e.get("id", "") for e in elements(root, path)]


def count(root: etree._Element, path: str) -> int:
    return len(elements(root, path))


# ---------------------------------------------------------- components


def test_nothing_provided_leaves_an_empty_presence() -> None:
    root = view(Transformations())
    assert root.get("entity") == ENTITY
    assert len(root) == 0


def test_all_components_without_attributes() -> None:
    root = view(EVERY_COMPONENT)
    assert ids(root, "p:tuple") == ["bs35r9", "ty4658", "eg92n8", "sp0001"]
    assert ids(root, "dm:person") == ["p1", "p2"]
    assert ids(root, "dm:device") == ["pc147", "ph2"]
    # What PIDF needs stays: status/basic, contact, timestamp.
    assert count(root, "p:tuple/p:status/p:basic") == 4
    assert count(root, "p:tuple/p:contact") == 4
    assert count(root, "p:tuple/p:timestamp") == 1
    assert count(root, "dm:person/dm:timestamp") == 1
    # A device keeps the deviceID its schema requires.
    assert count(root, "dm:device/dm:deviceID") == 2
    # Every attribute goes.
    assert (
        count(root, "p:tuple/*[not(self::p:status or self::p:contact or self::p:timestamp)]") == 0
    )
    assert count(root, "p:tuple/p:status/*[not(self::p:basic)]") == 0
    assert count(root, "dm:person/*[not(self::dm:timestamp)]") == 0
    assert count(root, "dm:device/*[not(self::dm:deviceID)]") == 0
    assert count(root, "p:note") == 0
    assert count(root, "foo:top") == 0


@pytest.mark.parametrize(
    ("provide", "expected"),
    [
        (Provide(service_uri_schemes=frozenset({"mailto"})), ["ty4658", "eg92n8"]),
        (Provide(service_uri_schemes=frozenset({"sip"})), ["sp0001"]),
        # Host case and URI parameters do not change the service URI.
        (Provide(service_uris=frozenset({"sip:someone@example.com"})), ["sp0001"]),
        (Provide(service_uris=frozenset({"mailto:secretary@example.com"})), ["ty4658"]),
        (Provide(occurrence_ids=frozenset({"bs35r9"})), ["bs35r9"]),
        (Provide(classes=frozenset({"email"})), ["eg92n8"]),
        (
            Provide(occurrence_ids=frozenset({"bs35r9"}), classes=frozenset({"email"})),
            ["bs35r9", "eg92n8"],
        ),
        (Provide(device_ids=frozenset({"urn:device:0003ba4811e3"})), []),  # not for services
    ],
)
def test_provide_services(provide: Provide, expected: list[str]) -> None:
    root = view(Transformations(services=provide))
    assert ids(root, "p:tuple") == expected
    assert count(root, "dm:person | dm:device") == 0


@pytest.mark.parametrize(
    ("provide", "expected"),
    [
        (Provide(occurrence_ids=frozenset({"p2"})), ["p2"]),
        (Provide(classes=frozenset({"calendar"})), ["p1"]),
        (Provide(classes=frozenset({"calendar", "public"})), ["p1", "p2"]),
        (Provide(classes=frozenset({"email"})), []),
    ],
)
def test_provide_persons(provide: Provide, expected: list[str]) -> None:
    root = view(Transformations(persons=provide))
    assert ids(root, "dm:person") == expected
    assert count(root, "p:tuple | dm:device") == 0


@pytest.mark.parametrize(
    ("provide", "expected"),
    [
        (Provide(device_ids=frozenset({"urn:device:phone-2"})), ["ph2"]),
        (Provide(occurrence_ids=frozenset({"pc147"})), ["pc147"]),
        (Provide(classes=frozenset({"desk"})), ["pc147"]),
        (Provide(service_uri_schemes=frozenset({"sip"})), []),  # not for devices
    ],
)
def test_provide_devices(provide: Provide, expected: list[str]) -> None:
    root = view(Transformations(devices=provide))
    assert ids(root, "dm:device") == expected


# ---------------------------------------------------------- attributes

# Where each boolean attribute of RFC 5025 §3.3.2 sits in RPID_PIDF.
ATTRIBUTE_PATHS: dict[Attribute, str] = {
    "activities": "dm:person/r:activities",
    "class": "*/r:class",
    "deviceID": "p:tuple/dm:deviceID",
    "mood": "dm:person/r:mood",
    "place-is": "dm:person/r:place-is",
    "place-type": "dm:person/r:place-type",
    "privacy": "*/r:privacy",
    "relationship": "p:tuple/r:relationship",
    "status-icon": "*/r:status-icon",
    "sphere": "dm:person/r:sphere",
    "time-offset": "dm:person/r:time-offset",
    "note": "p:note | p:tuple/p:note | dm:person/dm:note | dm:device/dm:note",
}


def test_every_attribute_is_covered() -> None:
    assert set(ATTRIBUTE_PATHS) == set(ATTRIBUTES)


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_each_attribute_only_when_provided(attribute: Attribute) -> None:
    path = ATTRIBUTE_PATHS[attribute]
    everything = view(Transformations(services=ALL, persons=ALL, devices=ALL, all_attributes=True))
    assert count(everything, path) > 0
    without = view(EVERY_COMPONENT)
    assert count(without, path) == 0
    granted = view(
        Transformations(services=ALL, persons=ALL, devices=ALL, attributes=frozenset({attribute}))
    )
    assert count(granted, path) == count(everything, path)
    # The grant is for that attribute alone.
    own = set(elements(granted, path))
    for other in set(ATTRIBUTES) - {attribute}:
        leaked = [e for e in elements(granted, ATTRIBUTE_PATHS[other]) if e not in own]
        assert leaked == [], other


def test_note_covers_presence_tuple_person_device_and_rpid_notes() -> None:
    with_notes = view(
        Transformations(
            services=ALL, persons=ALL, devices=ALL, attributes=frozenset({"note", "activities"})
        )
    )
    assert count(with_notes, "p:note") == 1
    assert count(with_notes, "p:tuple/p:note") == 2
    assert count(with_notes, "dm:person/dm:note") == 1
    assert count(with_notes, "dm:device/dm:note") == 1
    assert count(with_notes, "dm:person/r:activities/r:note") == 1
    without = view(
        Transformations(
            services=ALL, persons=ALL, devices=ALL, attributes=frozenset({"activities"})
        )
    )
    # The activity stays, the free text that could explain it goes.
    assert count(without, "dm:person/r:activities/r:away") == 1
    assert count(without, "//p:note | //dm:note | //r:note") == 0


@pytest.mark.parametrize(
    ("level", "present", "idle_threshold", "last_input"),
    [
        ("false", False, False, False),
        ("bare", True, False, False),
        ("thresholds", True, True, False),
        ("full", True, True, True),
    ],
)
def test_user_input_levels(
    level: UserInput, present: bool, idle_threshold: bool, last_input: bool
) -> None:
    root = view(Transformations(persons=ALL, devices=ALL, user_input=level))
    inputs = elements(root, "//r:user-input")
    assert len(inputs) == (2 if present else 0)
    for element in inputs:
        assert (element.text or "").strip() == "idle"
        assert ("idle-threshold" in element.attrib) is idle_threshold
        assert ("last-input" in element.attrib) is last_input


def test_all_attributes_gives_full_user_input() -> None:
    root = view(Transformations(persons=ALL, all_attributes=True))
    (element,) = elements(root, "dm:person/r:user-input")
    assert {"idle-threshold", "last-input"} <= set(element.attrib)


def test_unknown_attribute_by_namespace_and_name() -> None:
    root = view(
        Transformations(
            services=ALL,
            persons=ALL,
            unknown_attributes=frozenset(
                {
                    (CIPID_NS, "homepage"),
                    ("http://id.example.com/presence/", "location"),
                    (RPID_NS, "service-class"),
                    ("urn:other", "foo"),  # right name, wrong namespace
                    (RPID_NS, "mood"),  # named permissions win
                }
            ),
        )
    )
    assert count(root, "dm:person/c:homepage") == 1
    assert count(root, "p:tuple/r:service-class") == 1
    assert count(root, "p:tuple/p:status/*[local-name()='location']") == 1
    assert count(root, "dm:person/foo:foo") == 0
    assert count(root, "dm:person/r:mood") == 0


def test_presence_level_extension_is_an_unknown_attribute() -> None:
    assert count(view(Transformations()), "foo:top") == 0
    granted = Transformations(unknown_attributes=frozenset({(FOO_NS, "top")}))
    assert count(view(granted), "foo:top") == 1
    assert count(view(Transformations(all_attributes=True)), "foo:top") == 1


def test_all_attributes_keeps_kept_components_whole() -> None:
    everything = Transformations(services=ALL, persons=ALL, devices=ALL, all_attributes=True)
    original = validate_pidf(RPID_PIDF)
    root = view(everything)
    assert sum(1 for _ in root.iter()) == sum(1 for _ in original.iter())


def test_rfc5025_example_rule_applied_to_rpid_document() -> None:
    decision = evaluate(
        parse_rules(RFC5025_EXAMPLE),
        watcher="sip:user@example.com",
        presentity=ENTITY,
        now=0.0,
        sphere=None,
    )
    root = view(decision.transformations)
    assert ids(root, "p:tuple") == ["ty4658", "eg92n8", "sp0001"]  # mailto: and sip:
    assert ids(root, "dm:person") == ["p1", "p2"]
    assert ids(root, "dm:device") == []
    assert count(root, "dm:person/r:activities") == 2
    assert count(root, "dm:person/r:mood | dm:person/r:sphere | dm:person/c:homepage") == 0
    assert count(root, "dm:person/foo:foo") == 1  # the example's vendor attribute
    (user_input,) = elements(root, "dm:person/r:user-input")
    assert len(user_input.attrib) == 0


def test_namespace_prefixes_survive_filtering() -> None:
    root = view(Transformations(persons=ALL, attributes=frozenset({"activities"})))
    (activities,) = elements(root, "dm:person[@id='p2']/r:activities")
    assert etree.QName(activities).namespace == RPID_NS


def test_filter_refuses_what_is_not_pidf() -> None:
    with pytest.raises(BodyError):
        filter_pidf(b"<x/>", EVERY_COMPONENT)
    with pytest.raises(BodyError):
        filter_pidf(b"<broken", EVERY_COMPONENT)


def test_polite_block_body_reveals_nothing() -> None:
    root = validate_pidf(neutral_pidf(ENTITY))
    assert root.get("entity") == ENTITY
    assert [b.text for b in elements(root, "p:tuple/p:status/p:basic")] == ["closed"]
    assert count(root, "dm:person | dm:device | p:note") == 0
