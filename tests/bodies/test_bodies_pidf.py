"""PIDF validation and aggregation, checked by parsing the output, never by comparing strings."""

from __future__ import annotations

import pytest
from lxml import etree

from presencex.bodies.pidf import (
    BASIC,
    DATA_MODEL_NS,
    DEVICE,
    NOTE,
    PERSON,
    PIDF_NS,
    PRESENCE,
    RPID_NS,
    STATUS,
    TUPLE,
    aggregate_pidf,
    closed_pidf,
    neutral_pidf,
    offline_pidf,
    pidf_ids,
    tuple_statuses,
    validate_pidf,
)
from presencex.bodies.xmlparse import BodyError, parse_xml

ENTITY = "sip:someone@example.com"
CIPID_NS = "urn:ietf:params:xml:ns:pidf:cipid"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

# RFC 3863 §6 example: an IM tuple with extensions in status, two notes,
# and a presence-level note.
RFC3863 = b"""<?xml version="1.0" encoding="UTF-8"?>
<impp:presence xmlns:impp="urn:ietf:params:xml:ns:pidf"
    xmlns:myex="http://id.example.com/presence/"
    entity="pres:someone@example.com">
  <impp:tuple id="ck38g9">
    <impp:status>
      <impp:basic>open</impp:basic>
      <myex:location>home</myex:location>
    </impp:status>
    <impp:contact priority="0.65">tel:+09012345678</impp:contact>
  </impp:tuple>
  <impp:tuple id="md6tri">
    <impp:status>
      <impp:basic>open</impp:basic>
    </impp:status>
    <impp:contact priority="1.0">im:someone@mobilecarrier.net</impp:contact>
    <impp:note xml:lang="en">Don't Disturb Please!</impp:note>
    <impp:note xml:lang="fr">Ne derangez pas, s'il vous plait</impp:note>
    <impp:timestamp>2001-10-27T16:49:29Z</impp:timestamp>
  </impp:tuple>
  <impp:note xml:lang="en">I'll be in Tokyo next week</impp:note>
</impp:presence>
"""

# RFC 4479 §4.3 style: service, person and device, RPID and CIPID inside.
RFC4479 = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
    xmlns:c="urn:ietf:params:xml:ns:pidf:cipid"
    entity="pres:someone@example.com">
  <tuple id="sg89ae">
    <status><basic>open</basic></status>
    <dm:deviceID>mac:8asd7d7d70</dm:deviceID>
    <contact>sip:someone@example.com</contact>
  </tuple>
  <dm:person id="p1">
    <rpid:activities><rpid:on-the-phone/></rpid:activities>
    <c:homepage>http://example.com/~someone</c:homepage>
  </dm:person>
  <dm:device id="pc147">
    <rpid:user-input>idle</rpid:user-input>
    <dm:deviceID>mac:8asd7d7d70</dm:deviceID>
  </dm:device>
</presence>
"""

# RFC 4480 §3 style: activities with a note and a time range, mood, place.
RFC4480 = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
    entity="pres:someone@example.com">
  <tuple id="bs35r9">
    <status><basic>open</basic></status>
    <rpid:user-input idle-threshold="600" last-input="2004-10-21T13:20:00.000-05:00">idle</rpid:user-input>
    <contact priority="0.8">im:someone@mobile.example.net</contact>
  </tuple>
  <dm:person id="pdd">
    <rpid:activities from="2005-05-30T12:00:00+05:00" until="2005-05-30T17:00:00+05:00">
      <rpid:note>Far away</rpid:note>
      <rpid:away/>
    </rpid:activities>
    <rpid:mood><rpid:sleepy/></rpid:mood>
    <rpid:place-type><rpid:residence/></rpid:place-type>
    <dm:timestamp>2005-05-30T16:09:44+05:00</dm:timestamp>
  </dm:person>
</presence>
"""

# What Linphone publishes: one tuple for the device, one person with RPID.
LINPHONE = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@sip.example.org">
  <tuple id="gtzdro">
    <status>
      <basic>open</basic>
    </status>
    <contact>sip:alice@192.0.2.10:5060;transport=udp</contact>
    <timestamp>2024-03-02T10:11:12Z</timestamp>
  </tuple>
  <dm:person id="ozfsmi">
    <rpid:activities>
      <rpid:away/>
    </rpid:activities>
    <dm:note>Out for lunch</dm:note>
  </dm:person>
</presence>
"""


def device_body(tuple_id: str, basic: str, person_id: str, activity: str, device_id: str) -> bytes:
    """A desk phone or mobile publishing its own tuple, the shared person, and its device."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
    entity="{ENTITY}">
  <tuple id="{tuple_id}"><status><basic>{basic}</basic></status>
    <dm:deviceID>urn:uuid:{device_id}</dm:deviceID></tuple>
  <dm:person id="{person_id}"><rpid:activities><rpid:{activity}/></rpid:activities></dm:person>
  <dm:device id="{device_id}"><dm:deviceID>urn:uuid:{device_id}</dm:deviceID></dm:device>
</presence>
""".encode()


DESK = device_body("desk", "open", "me", "busy", "d-desk")
MOBILE = device_body("mobile", "open", "me", "on-the-phone", "d-mobile")
LAPTOP = device_body("laptop", "closed", "me", "away", "d-laptop")


def top_ids(root: etree._Element) -> list[str]:
    return [str(child.get("id")) for child in root if child.get("id") is not None]


def aggregate(bodies: list[bytes], entity: str = ENTITY) -> etree._Element:
    out = aggregate_pidf(bodies, entity)
    assert out is not None
    # The aggregate is itself a valid publication-shaped document.
    return validate_pidf(out)


# --- validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [RFC3863, RFC4479, RFC4480, LINPHONE, DESK],
    ids=["rfc3863", "rfc4479", "rfc4480", "linphone", "desk-phone"],
)
def test_real_world_bodies_validate(body: bytes) -> None:
    root = validate_pidf(body)
    assert root.tag == PRESENCE
    assert root.get("entity") is not None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'<presence xmlns="urn:x" entity="sip:a@b"/>', f"root element must be {PRESENCE}"),
        (b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/>', "presence without entity"),
        (
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple><status/></tuple></presence>',
            "tuple without id",
        ),
        (
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="1a"><status/></tuple></presence>',
            "tuple id '1a' is not an XML ID",
        ),
        (
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="t"/></presence>',
            "tuple 't' without status",
        ),
        (
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="t"><status/><status/></tuple></presence>',
            "tuple 't' with more than one status",
        ),
        (
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="t"><status><basic>busy</basic></status></tuple></presence>',
            "tuple 't': basic must be open or closed",
        ),
        (
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="t"><status><basic>open</basic><basic>open</basic></status></tuple></presence>',
            "tuple 't' with more than one basic",
        ),
        (
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="t"><status/></tuple><tuple id="t"><status/></tuple></presence>',
            "duplicate id 't'",
        ),
        (
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="sip:a@b"><tuple id="x"><status/></tuple><dm:person id="x"/></presence>',
            "duplicate id 'x'",
        ),
        (
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="sip:a@b"><dm:person/></presence>',
            "person without id",
        ),
        (
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="sip:a@b"><dm:device id="a b"/></presence>',
            "device id 'a b' is not an XML ID",
        ),
    ],
)
def test_invalid_structure_is_refused_with_a_precise_reason(body: bytes, expected: str) -> None:
    with pytest.raises(BodyError) as info:
        validate_pidf(body)
    assert str(info.value) == expected


def test_hostile_xml_is_refused_by_validate() -> None:
    with pytest.raises(BodyError, match="DOCTYPE"):
        validate_pidf(b'<!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]><p>&x;</p>')


def test_basic_tolerates_surrounding_whitespace_and_may_be_absent() -> None:
    body = b"""<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b">
      <tuple id="a"><status><basic> open
      </basic></status></tuple><tuple id="b"><status/></tuple></presence>"""
    validate_pidf(body)
    assert tuple_statuses(body) == {"a": "open", "b": None}


def test_helpers() -> None:
    assert tuple_statuses(RFC3863) == {"ck38g9": "open", "md6tri": "open"}
    assert pidf_ids(RFC4479) == {"sg89ae": "tuple", "p1": "person", "pc147": "device"}


# --- aggregation --------------------------------------------------------------


def test_no_bodies_means_no_document() -> None:
    assert aggregate_pidf([], ENTITY) is None


def test_one_body_is_kept_whole_under_the_given_entity() -> None:
    root = aggregate([RFC4479], entity="sip:someone@example.com")
    assert root.get("entity") == "sip:someone@example.com"
    assert top_ids(root) == ["sg89ae", "p1", "pc147"]
    activities = root.find(f"{PERSON}/{{{RPID_NS}}}activities")
    assert activities is not None
    assert activities[0].tag == f"{{{RPID_NS}}}on-the-phone"
    assert root.find(f"{PERSON}/{{{CIPID_NS}}}homepage") is not None
    assert root.find(f"{TUPLE}/{{{DATA_MODEL_NS}}}deviceID") is not None


def test_several_devices_each_id_once_newest_wins() -> None:
    root = aggregate([DESK, MOBILE, LAPTOP])
    ids = top_ids(root)
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(
        ["desk", "mobile", "laptop", "me", "d-desk", "d-mobile", "d-laptop"]
    )
    persons = root.findall(PERSON)
    assert len(persons) == 1
    # The person of the newest publication (the laptop, "away") wins.
    assert persons[0].find(f"{{{RPID_NS}}}activities/{{{RPID_NS}}}away") is not None
    assert len(root.findall(DEVICE)) == 3
    statuses = tuple_statuses(etree.tostring(root))
    assert statuses == {"laptop": "closed", "mobile": "open", "desk": "open"}


def test_newest_publication_comes_first_within_each_kind() -> None:
    root = aggregate([DESK, MOBILE, LAPTOP])
    assert [t.get("id") for t in root.findall(TUPLE)] == ["laptop", "mobile", "desk"]
    assert [d.get("id") for d in root.findall(DEVICE)] == ["d-laptop", "d-mobile", "d-desk"]


def test_same_tuple_id_in_two_publications_newest_wins() -> None:
    old = device_body("t", "open", "p-old", "busy", "dev-old")
    new = device_body("t", "closed", "p-new", "away", "dev-new")
    root = aggregate([old, new])
    tuples = root.findall(TUPLE)
    assert len(tuples) == 1
    assert tuples[0].findtext(f"{STATUS}/{BASIC}") == "closed"
    assert [p.get("id") for p in root.findall(PERSON)] == ["p-new", "p-old"]


def test_id_space_is_shared_across_kinds() -> None:
    old = b"""<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b">
      <tuple id="x"><status><basic>open</basic></status></tuple></presence>"""
    new = b"""<presence xmlns="urn:ietf:params:xml:ns:pidf"
      xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="sip:a@b">
      <dm:person id="x"/></presence>"""
    root = aggregate([old, new])
    assert [child.tag for child in root] == [PERSON]


def test_schema_order_tuples_notes_persons_devices_others() -> None:
    extra = b"""<presence xmlns="urn:ietf:params:xml:ns:pidf"
      xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" entity="sip:a@b">
      <gp:extension-thing>x</gp:extension-thing>
      <note>Gone fishing</note>
      <tuple id="late"><status><basic>open</basic></status></tuple></presence>"""
    root = aggregate([RFC4479, extra, RFC3863])
    kinds = [child.tag for child in root]
    order = [TUPLE, NOTE, PERSON, DEVICE, "{urn:ietf:params:xml:ns:pidf:geopriv10}extension-thing"]
    assert kinds == sorted(kinds, key=order.index)
    assert kinds.count(TUPLE) == 4


def test_presence_notes_one_per_language_newest_wins() -> None:
    def with_note(lang: str, text: str) -> bytes:
        return f"""<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b">
          <tuple id="t{lang}{len(text)}"><status><basic>open</basic></status></tuple>
          <note xml:lang="{lang}">{text}</note></presence>""".encode()

    root = aggregate([with_note("en", "old"), with_note("de", "alt"), with_note("en", "newer")])
    notes = {note.get(XML_LANG): note.text for note in root.findall(NOTE)}
    assert notes == {"en": "newer", "de": "alt"}


def test_identical_extension_elements_are_kept_once() -> None:
    body = b"""<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:x="urn:x" entity="sip:a@b">
      <x:flag>on</x:flag></presence>"""
    root = aggregate([body, body])
    assert len(root.findall("{urn:x}flag")) == 1


def test_namespace_prefixes_survive_the_move() -> None:
    out = aggregate_pidf([RFC4480, LINPHONE, RFC4479], ENTITY)
    assert out is not None
    root = parse_xml(out)
    assert root.nsmap[None] == PIDF_NS
    assert root.nsmap["rpid"] == RPID_NS
    assert root.nsmap["dm"] == DATA_MODEL_NS
    for element in root.iter(f"{{{RPID_NS}}}*"):
        assert element.prefix == "rpid"
    # Attributes and nested text of extensions are untouched.
    activities = root.xpath(
        "//dm:person[@id='pdd']/rpid:activities", namespaces={"dm": DATA_MODEL_NS, "rpid": RPID_NS}
    )
    assert isinstance(activities, list)
    assert len(activities) == 1
    assert isinstance(activities[0], etree._Element)
    assert activities[0].get("until") == "2005-05-30T17:00:00+05:00"
    assert activities[0].findtext(f"{{{RPID_NS}}}note") == "Far away"


def test_prefix_clash_keeps_every_namespace_uri() -> None:
    # Two publishers bind "x" to different URIs: both URIs must survive.
    one = b"""<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:x="urn:one" entity="sip:a@b">
      <tuple id="a"><status><basic>open</basic><x:s>1</x:s></status></tuple></presence>"""
    two = b"""<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:x="urn:two" entity="sip:a@b">
      <tuple id="b"><status><basic>open</basic><x:s>2</x:s></status></tuple></presence>"""
    root = aggregate([one, two])
    assert root.findtext(f"{TUPLE}/{STATUS}/{{urn:one}}s") == "1"
    assert root.findtext(f"{TUPLE}/{STATUS}/{{urn:two}}s") == "2"


def test_prefixed_pidf_namespace_is_merged_with_default_one() -> None:
    root = aggregate([RFC3863, LINPHONE], entity="sip:alice@sip.example.org")
    assert [t.get("id") for t in root.findall(TUPLE)] == ["gtzdro", "ck38g9", "md6tri"]
    assert root.find(NOTE) is not None


def test_entity_is_xml_escaped() -> None:
    root = aggregate([LINPHONE], entity='sip:"odd&<name>"@example.com')
    assert root.get("entity") == 'sip:"odd&<name>"@example.com'


def test_damaged_stored_body_is_skipped() -> None:
    root = aggregate([b"<not-closed", b'<other xmlns="urn:x"/>', LINPHONE])
    assert top_ids(root) == ["gtzdro", "ozfsmi"]
    assert aggregate_pidf([b"<not-closed"], ENTITY) is None


def test_aggregation_does_not_mutate_its_inputs() -> None:
    bodies = [DESK, MOBILE]
    aggregate(bodies)
    assert bodies == [DESK, MOBILE]
    assert pidf_ids(DESK) == {"desk": "tuple", "me": "person", "d-desk": "device"}


# --- closed, offline, neutral -------------------------------------------------


def test_closed_keeps_tuple_ids_and_contact_closes_every_tuple() -> None:
    out = closed_pidf(RFC3863)
    root = validate_pidf(out)
    assert root.get("entity") == "pres:someone@example.com"
    assert tuple_statuses(out) == {"ck38g9": "closed", "md6tri": "closed"}
    assert [t.findtext(f"{{{PIDF_NS}}}contact") for t in root.findall(TUPLE)] == [
        "tel:+09012345678",
        "im:someone@mobilecarrier.net",
    ]
    assert root.findall(f"{TUPLE}/{{{PIDF_NS}}}contact")[0].get("priority") == "0.65"
    # Stale details are gone: notes, status extensions, timestamps.
    assert root.find(NOTE) is None
    assert root.find(f"{TUPLE}/{NOTE}") is None
    assert root.find(f"{TUPLE}/{STATUS}/{{http://id.example.com/presence/}}location") is None


def test_closed_drops_person_and_device() -> None:
    out = closed_pidf(RFC4479)
    root = validate_pidf(out)
    assert [child.tag for child in root] == [TUPLE]
    assert tuple_statuses(out) == {"sg89ae": "closed"}


def test_closed_of_a_person_only_publication_is_empty() -> None:
    body = b"""<presence xmlns="urn:ietf:params:xml:ns:pidf"
      xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="sip:a@b"><dm:person id="p"/></presence>"""
    assert len(validate_pidf(closed_pidf(body))) == 0


def test_closed_refuses_a_non_pidf_body() -> None:
    with pytest.raises(BodyError, match="root element"):
        closed_pidf(b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"/>')


@pytest.mark.parametrize("make", [offline_pidf, neutral_pidf])
def test_canned_documents_are_valid_and_closed(make: object) -> None:
    assert callable(make)
    out = make('sip:"a&b"@example.com')
    assert isinstance(out, bytes)
    root = validate_pidf(out)
    assert root.get("entity") == 'sip:"a&b"@example.com'
    assert list(tuple_statuses(out).values()) == ["closed"]
    assert len(root) == 1


def test_neutral_reveals_nothing_more_than_offline() -> None:
    assert neutral_pidf(ENTITY) == offline_pidf(ENTITY)


def test_canned_document_survives_control_characters_in_entity() -> None:
    root = validate_pidf(offline_pidf("sip:a\x00b@example.com"))
    assert root.get("entity") == "sip:ab@example.com"
