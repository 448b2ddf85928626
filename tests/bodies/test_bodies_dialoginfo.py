"""RFC 4235 dialog-info validation and aggregation, checked by parsing the output."""

from __future__ import annotations

import pytest
from lxml import etree

from presencex.bodies import dialoginfo
from presencex.bodies.dialoginfo import (
    DIALOG,
    DIALOG_INFO,
    DIALOGINFO_CONTENT_TYPE,
    DIALOGINFO_NS,
    SA_DIALOGINFO_NS,
    STATE,
    aggregate_dialoginfo,
    dialog_states,
    validate_dialoginfo,
    with_version,
)
from presencex.bodies.xmlparse import BodyError, parse_xml, serialize_xml

ENTITY = "sip:alice@example.com"
DI = f"{{{DIALOGINFO_NS}}}"
SA = f"{{{SA_DIALOGINFO_NS}}}"

# RFC 4235 §5 examples: an early dialog, then the same dialog confirmed with
# participant details.
RFC4235_EARLY = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"
             version="0" state="full" entity="sip:alice@example.com">
  <dialog id="as7d900as8" call-id="a84b4c76e66710"
          local-tag="1928301774" direction="initiator">
    <state>early</state>
  </dialog>
</dialog-info>
"""

RFC4235_CONFIRMED = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"
             version="1" state="full" entity="sip:alice@example.com">
  <dialog id="as7d900as8" call-id="a84b4c76e66710"
          local-tag="1928301774" remote-tag="456887766" direction="initiator">
    <state event="replaced">confirmed</state>
    <duration>274</duration>
    <local>
      <identity display="Alice">sip:alice@example.com</identity>
      <target uri="sip:alice@pc33.example.com">
        <param pname="+sip.rendering" pval="yes"/>
        <param pname="methods" pval="INVITE,ACK,BYE,CANCEL"/>
      </target>
    </local>
    <remote>
      <identity display="Bob">sip:bob@example.org</identity>
      <target uri="sip:bobster@phone21.example.org"/>
    </remote>
  </dialog>
</dialog-info>
"""

# What Kamailio's pua_dialoginfo or Asterisk publish for BLF lamps on
# Polycom/Yealink phones: a ringing call to extension 101.
BLF_RINGING = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="4" state="full" entity="sip:101@pbx.example.com">
  <dialog id="8f2d3c1a-4b" call-id="8f2d3c1a@192.0.2.5" local-tag="as5b0c" remote-tag="3471" direction="recipient">
    <state>early</state>
    <remote><identity>sip:102@pbx.example.com</identity><target uri="sip:102@pbx.example.com"/></remote>
    <local><identity>sip:101@pbx.example.com</identity><target uri="sip:101@pbx.example.com"/></local>
  </dialog>
</dialog-info>
"""

# A phone going idle publishes a document without dialogs.
IDLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="9" state="full" entity="sip:101@pbx.example.com"/>
"""


def sla_body(dialog_id: str, appearance: int, state: str, version: int = 1) -> bytes:
    """A shared-line phone's publication with draft-anil-sipping-bla appearance data."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"
    xmlns:sa="urn:ietf:params:xml:ns:sa-dialog-info"
    version="{version}" state="partial" entity="sip:shared@example.com">
  <dialog id="{dialog_id}" call-id="{dialog_id}@192.0.2.7" local-tag="{dialog_id}-l" direction="initiator">
    <sa:exclusive>false</sa:exclusive>
    <sa:appearance>{appearance}</sa:appearance>
    <state>{state}</state>
    <local><identity display="Reception">sip:shared@example.com</identity></local>
    <remote><identity>sip:+15551234567@example.com</identity></remote>
  </dialog>
</dialog-info>
""".encode()


def aggregate(bodies: list[bytes], version: int = 5) -> etree._Element:
    out = aggregate_dialoginfo(bodies, ENTITY, version)
    return validate_dialoginfo(out)


def test_content_type() -> None:
    assert DIALOGINFO_CONTENT_TYPE == "application/dialog-info+xml"


@pytest.mark.parametrize(
    "body",
    [RFC4235_EARLY, RFC4235_CONFIRMED, BLF_RINGING, IDLE, sla_body("d1", 1, "trying")],
    ids=["rfc4235-early", "rfc4235-confirmed", "blf", "idle", "sla"],
)
def test_real_world_bodies_validate(body: bytes) -> None:
    assert validate_dialoginfo(body).tag == DIALOG_INFO


HEAD = '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" entity="sip:a@b">'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '<dialog-info xmlns="urn:x" version="1" state="full" entity="sip:a@b"/>',
            "root element must be",
        ),
        (
            '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" state="full" entity="sip:a@b"/>',
            "dialog-info version must be a non-negative integer",
        ),
        (
            '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="x" state="full" entity="sip:a@b"/>',
            "dialog-info version must be a non-negative integer",
        ),
        (
            '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="all" entity="sip:a@b"/>',
            "dialog-info state must be full or partial",
        ),
        (
            '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full"/>',
            "dialog-info without entity",
        ),
        (HEAD + "<dialog><state>early</state></dialog></dialog-info>", "dialog without id"),
        (HEAD + '<dialog id="d"/></dialog-info>', "dialog 'd' must have exactly one state"),
        (
            HEAD
            + '<dialog id="d"><state>early</state><state>confirmed</state></dialog></dialog-info>',
            "dialog 'd' must have exactly one state",
        ),
        (
            HEAD + '<dialog id="d"><state>ringing</state></dialog></dialog-info>',
            "dialog 'd': state must be",
        ),
        (
            HEAD
            + '<dialog id="d"><state>early</state></dialog><dialog id="d"><state>early</state></dialog>'
            "</dialog-info>",
            "duplicate dialog id 'd'",
        ),
    ],
)
def test_invalid_structure_is_refused_with_a_precise_reason(body: str, expected: str) -> None:
    with pytest.raises(BodyError) as info:
        validate_dialoginfo(body.encode())
    assert str(info.value).startswith(expected)


def test_hostile_xml_is_refused() -> None:
    lol = (
        b'<!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><dialog-info>&b;</dialog-info>'
    )
    with pytest.raises(BodyError, match="DOCTYPE"):
        validate_dialoginfo(lol)


def test_dialog_states_helper() -> None:
    assert dialog_states(RFC4235_CONFIRMED) == {"as7d900as8": "confirmed"}
    assert dialog_states(IDLE) == {}


def test_no_bodies_is_an_empty_full_document_meaning_idle() -> None:
    root = aggregate([], version=0)
    assert root.tag == DIALOG_INFO
    assert (root.get("version"), root.get("state"), root.get("entity")) == ("0", "full", ENTITY)
    assert len(root) == 0


def test_aggregate_sets_entity_version_and_full_state() -> None:
    root = aggregate([sla_body("d1", 1, "confirmed", version=40)], version=7)
    assert (root.get("version"), root.get("state"), root.get("entity")) == ("7", "full", ENTITY)


def test_same_dialog_republished_newest_wins() -> None:
    out = aggregate_dialoginfo([RFC4235_EARLY, RFC4235_CONFIRMED], ENTITY, 2)
    assert dialog_states(out) == {"as7d900as8": "confirmed"}
    root = parse_xml(out)
    dialog = root.find(DIALOG)
    assert dialog is not None
    assert dialog.get("remote-tag") == "456887766"
    assert dialog.findtext(f"{DI}duration") == "274"
    params = dialog.findall(f"{DI}local/{DI}target/{DI}param")
    assert [p.get("pname") for p in params] == ["+sip.rendering", "methods"]
    identity = dialog.find(f"{DI}remote/{DI}identity")
    assert identity is not None
    assert identity.get("display") == "Bob"


def test_older_publication_does_not_override_newer() -> None:
    out = aggregate_dialoginfo([RFC4235_CONFIRMED, RFC4235_EARLY], ENTITY, 2)
    assert dialog_states(out) == {"as7d900as8": "early"}


def test_shared_line_appearances_are_all_kept_with_their_namespace() -> None:
    bodies = [
        sla_body("call-a", 1, "confirmed"),
        sla_body("call-b", 2, "early"),
        sla_body("call-a", 1, "terminated"),
    ]
    root = aggregate(bodies)
    ids = [d.get("id") for d in root.findall(DIALOG)]
    assert len(ids) == len(set(ids))
    assert dialog_states(etree.tostring(root)) == {"call-a": "terminated", "call-b": "early"}
    appearances = {d.get("id"): d.findtext(f"{SA}appearance") for d in root.findall(DIALOG)}
    assert appearances == {"call-a": "1", "call-b": "2"}
    assert root.nsmap["sa"] == SA_DIALOGINFO_NS
    for element in root.iter(f"{SA}*"):
        assert element.prefix == "sa"
    assert root.findtext(f"{DIALOG}/{DI}local/{DI}identity") == "sip:shared@example.com"


def test_newest_publication_dialogs_come_first() -> None:
    root = aggregate([BLF_RINGING, sla_body("n1", 1, "trying"), RFC4235_EARLY])
    assert [d.get("id") for d in root.findall(DIALOG)] == ["as7d900as8", "n1", "8f2d3c1a-4b"]


def test_idle_publication_contributes_nothing() -> None:
    out = aggregate_dialoginfo([BLF_RINGING, IDLE], ENTITY, 1)
    assert dialog_states(out) == {"8f2d3c1a-4b": "early"}


def test_extension_children_of_dialog_info_follow_dialogs() -> None:
    body = b"""<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" xmlns:x="urn:x"
      version="1" state="full" entity="sip:a@b"><x:line-seize>1</x:line-seize>
      <dialog id="d"><state>trying</state></dialog></dialog-info>"""
    root = aggregate([body, body])
    assert [child.tag for child in root] == [DIALOG, "{urn:x}line-seize"]


def test_damaged_stored_body_is_skipped() -> None:
    out = aggregate_dialoginfo([b"<dialog-info", BLF_RINGING, b"<x/>"], ENTITY, 1)
    assert dialog_states(out) == {"8f2d3c1a-4b": "early"}


def test_entity_is_escaped_and_version_checked() -> None:
    out = aggregate_dialoginfo([], 'sip:"a&b"@example.com', 3)
    assert parse_xml(out).get("entity") == 'sip:"a&b"@example.com'
    with pytest.raises(ValueError, match="version"):
        aggregate_dialoginfo([], ENTITY, -1)


def test_state_text_is_read_from_the_dialog_namespace() -> None:
    root = aggregate([BLF_RINGING])
    assert root.findtext(f"{DIALOG}/{STATE}") == "early"


# --- per-watcher version -------------------------------------------------------


def set_version_by_parsing(doc: bytes, version: int) -> bytes:
    """What DialogPackage.render did before with_version: parse, set, serialise."""
    root = parse_xml(doc)
    root.set("version", str(version))
    return serialize_xml(root)


# A prefix named "version" and an entity quoting a version attribute must not
# be mistaken for the root's version attribute.
TRICKY = b"""<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"
    xmlns:version="urn:example:version" version="3" state="full"
    entity="sip:a@b"><dialog id="v" version:x="1"><state>trying</state></dialog></dialog-info>"""

# Two publishers binding one prefix to different namespaces.
CLASH_A = b"""<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" xmlns:x="urn:a"
    version="1" state="full" entity="sip:a@b"><dialog id="a"><state>early</state>
    <x:e>1</x:e></dialog></dialog-info>"""
CLASH_B = CLASH_A.replace(b"urn:a", b"urn:b").replace(b'id="a"', b'id="b"')


@pytest.mark.parametrize(
    ("bodies", "entity"),
    [
        ([], ENTITY),
        ([], 'sip:x@y version="9" >'),
        ([RFC4235_EARLY, RFC4235_CONFIRMED], ENTITY),
        ([BLF_RINGING, IDLE], "sip:101@pbx.example.com"),
        ([sla_body("call-a", 1, "confirmed"), sla_body("call-b", 2, "early")], ENTITY),
        ([BLF_RINGING, sla_body("n1", 1, "trying"), RFC4235_EARLY], ENTITY),
        ([TRICKY], 'sip:"version"@example.com'),
        ([CLASH_A, CLASH_B], ENTITY),
    ],
    ids=["idle", "odd-entity", "rfc4235", "blf", "sla", "mixed", "tricky", "prefix-clash"],
)
def test_with_version_equals_parsing_and_setting(
    bodies: list[bytes], entity: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = aggregate_dialoginfo(bodies, entity, 0)
    versions = (0, 1, 7, 10, 123_456_789)
    expected = [set_version_by_parsing(doc, version) for version in versions]

    # Our own aggregates are rewritten without being parsed again.
    def no_parsing(data: bytes) -> etree._Element:
        raise AssertionError("with_version parsed our own aggregate")

    monkeypatch.setattr(dialoginfo, "parse_xml", no_parsing)
    assert [with_version(doc, version) for version in versions] == expected
    # Rewriting a rewritten document works too (the version is not always "0").
    assert with_version(with_version(doc, 42), 5) == expected[0].replace(
        b'version="0"', b'version="5"', 1
    )


@pytest.mark.parametrize(
    "doc",
    [
        RFC4235_EARLY,  # a publisher's own formatting
        b'<d:dialog-info xmlns:d="urn:ietf:params:xml:ns:dialog-info" version="2" state="full" entity="sip:a@b"/>',
        b'<?xml version="1.0" encoding="UTF-8"?>\n<dialog-info xmlns="urn:x" state="full"/>',
    ],
    ids=["published", "prefixed-root", "no-version"],
)
def test_with_version_parses_documents_of_another_shape(doc: bytes) -> None:
    assert with_version(doc, 8) == set_version_by_parsing(doc, 8)
    assert parse_xml(with_version(doc, 8)).get("version") == "8"


def test_with_version_refuses_a_negative_version() -> None:
    doc = aggregate_dialoginfo([], ENTITY, 0)
    with pytest.raises(ValueError, match="version"):
        with_version(doc, -1)
