"""RFC 3858 watcherinfo: build, parse back, and refuse what the schema forbids."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from presencex.bodies.watcherinfo import (
    WATCHER,
    WATCHER_EVENTS,
    WATCHER_LIST,
    WATCHER_STATUSES,
    WATCHERINFO,
    WATCHERINFO_CONTENT_TYPE,
    WATCHERINFO_NS,
    WatcherEntry,
    WatcherList,
    build_watcherinfo,
    parse_watcherinfo,
)
from presencex.bodies.xmlparse import BodyError, parse_xml, xml_text

# RFC 3858 §5 example.
RFC3858 = b"""<?xml version="1.0"?>
<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo"
             version="0" state="full">
  <watcher-list resource="sip:professor@example.net" package="presence">
    <watcher status="active"
             id="8ajksjda7s"
             duration-subscribed="509"
             event="approved" >sip:userA@example.net</watcher>
    <watcher status="pending"
             id="hh8juja87s997-ass7"
             display-name="Mr. Subscriber"
             event="subscribe">sip:userB@example.org</watcher>
  </watcher-list>
</watcherinfo>
"""

ALICE = WatcherEntry(
    id="a1", status="active", event="approved", uri="sip:alice@example.com", display_name="Alice"
)
BOB = WatcherEntry(
    id="b2",
    status="pending",
    event="subscribe",
    uri="sip:bob@example.org",
    duration_subscribed=12,
    expiration=3600,
)


def test_content_type() -> None:
    assert WATCHERINFO_CONTENT_TYPE == "application/watcherinfo+xml"


def test_parses_the_rfc_example() -> None:
    doc = parse_watcherinfo(RFC3858)
    assert doc.version == 0
    assert doc.state == "full"
    [(resource, package, watchers)] = doc.watcher_lists
    assert (resource, package) == ("sip:professor@example.net", "presence")
    assert watchers == [
        WatcherEntry(
            id="8ajksjda7s",
            status="active",
            event="approved",
            uri="sip:userA@example.net",
            duration_subscribed=509,
        ),
        WatcherEntry(
            id="hh8juja87s997-ass7",
            status="pending",
            event="subscribe",
            uri="sip:userB@example.org",
            display_name="Mr. Subscriber",
        ),
    ]


def test_build_is_well_formed_and_has_the_rfc_shape() -> None:
    body = build_watcherinfo(
        version=3,
        state="partial",
        resource="sip:p@example.com",
        package="presence",
        watchers=[ALICE, BOB],
    )
    root = parse_xml(body)
    assert root.tag == WATCHERINFO
    assert root.nsmap == {None: WATCHERINFO_NS}
    assert (root.get("version"), root.get("state")) == ("3", "partial")
    [wlist] = root
    assert wlist.tag == WATCHER_LIST
    assert [w.tag for w in wlist] == [WATCHER, WATCHER]
    assert wlist[0].get("display-name") == "Alice"
    assert wlist[0].get("expiration") is None
    assert wlist[1].get("duration-subscribed") == "12"
    assert wlist[1].text == "sip:bob@example.org"


def test_round_trip() -> None:
    body = build_watcherinfo(
        version=7,
        state="full",
        resource="sip:p@example.com",
        package="presence",
        watchers=[ALICE, BOB],
    )
    doc = parse_watcherinfo(body)
    assert doc.version == 7
    assert doc.watcher_lists == [WatcherList("sip:p@example.com", "presence", [ALICE, BOB])]


def test_entries_of_other_packages_get_lists_of_their_own() -> None:
    blf = dataclasses.replace(BOB, id="w9", package="dialog")
    body = build_watcherinfo(
        version=1,
        state="full",
        resource="sip:p@example.com",
        package="presence",
        watchers=[blf, ALICE],
    )
    doc = parse_watcherinfo(body)
    # The document's own package first, whatever the order of the entries;
    # parsed entries carry their package in the list, not in themselves.
    assert doc.watcher_lists == [
        WatcherList("sip:p@example.com", "presence", [ALICE]),
        WatcherList("sip:p@example.com", "dialog", [dataclasses.replace(blf, package=None)]),
    ]


def test_empty_watcher_list_is_valid() -> None:
    body = build_watcherinfo(
        version=0, state="full", resource="sip:p@example.com", package="presence", watchers=[]
    )
    assert parse_watcherinfo(body).watcher_lists == [
        WatcherList("sip:p@example.com", "presence", [])
    ]


def test_markup_in_values_is_escaped_not_interpreted() -> None:
    sneaky = WatcherEntry(
        id='x"><watcher id="forged',
        status="active",
        event="approved",
        uri="sip:a@example.com;x=<b>&amp;",
        display_name='"Eve" <script> & co',
    )
    body = build_watcherinfo(
        version=0,
        state="full",
        resource='sip:p@example.com;a="<&>"',
        package="presence",
        watchers=[sneaky],
    )
    [(resource, _, watchers)] = parse_watcherinfo(body).watcher_lists
    assert resource == 'sip:p@example.com;a="<&>"'
    assert watchers == [sneaky]


def test_control_characters_from_sip_are_dropped() -> None:
    odd = WatcherEntry(
        id="i", status="active", event="approved", uri="sip:a@b", display_name="Bob\x00\x07 Smith"
    )
    body = build_watcherinfo(
        version=0, state="full", resource="sip:p@b", package="presence", watchers=[odd]
    )
    assert parse_watcherinfo(body).watcher_lists[0].watchers[0].display_name == "Bob Smith"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"version": -1},
        {"state": "delta"},
        {"watchers": [WatcherEntry("i", "accepted", "approved", "sip:a@b")]},
        {"watchers": [WatcherEntry("i", "active", "approve", "sip:a@b")]},
        {"watchers": [WatcherEntry("i", "active", "approved", "sip:a@b", expiration=-5)]},
    ],
)
def test_build_refuses_what_the_schema_forbids(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "version": 0,
        "state": "full",
        "resource": "sip:p@b",
        "package": "presence",
        "watchers": [],
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=r"."):
        build_watcherinfo(**args)  # type: ignore[arg-type]  # deliberately wrong values


WI = '<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" {}>{}</watcherinfo>'
WL = '<watcher-list resource="sip:p@b" package="presence">{}</watcher-list>'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('<watcherinfo xmlns="urn:x" version="0" state="full"/>', "root element must be"),
        (WI.format('state="full"', ""), "watcherinfo without version"),
        (WI.format('version="-1" state="full"', ""), "version must be a non-negative integer"),
        (WI.format('version="0" state="delta"', ""), "state must be full or partial"),
        (
            WI.format('version="0" state="full"', '<watcher-list package="presence"/>'),
            "without resource",
        ),
        (
            WI.format(
                'version="0" state="full"',
                WL.format('<watcher id="i" event="approved">sip:a@b</watcher>'),
            ),
            "watcher without status",
        ),
        (
            WI.format(
                'version="0" state="full"',
                WL.format('<watcher id="i" status="on" event="approved">sip:a@b</watcher>'),
            ),
            "watcher status must be",
        ),
        (
            WI.format(
                'version="0" state="full"',
                WL.format('<watcher id="i" status="active" event="approved"> </watcher>'),
            ),
            "watcher without URI",
        ),
        (
            WI.format(
                'version="0" state="full"',
                WL.format(
                    '<watcher id="i" status="active" event="approved" expiration="soon">sip:a@b</watcher>'
                ),
            ),
            "watcher expiration must be a non-negative integer",
        ),
    ],
)
def test_parse_refuses_invalid_documents(body: str, expected: str) -> None:
    with pytest.raises(BodyError, match=expected):
        parse_watcherinfo(body.encode())


def test_parse_is_hardened() -> None:
    xxe = b"""<!DOCTYPE watcherinfo [<!ENTITY x SYSTEM "file:///etc/passwd">]>
    <watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="0" state="full">&x;</watcherinfo>"""
    with pytest.raises(BodyError, match="DOCTYPE"):
        parse_watcherinfo(xxe)


ENTRIES = st.builds(
    WatcherEntry,
    id=st.text(min_size=1, max_size=20).map(xml_text).filter(bool),
    status=st.sampled_from(sorted(WATCHER_STATUSES)),
    event=st.sampled_from(sorted(WATCHER_EVENTS)),
    uri=st.from_regex(r"sip:[a-z0-9.;=&<>\"']{1,20}@example\.com", fullmatch=True),
    display_name=st.none() | st.text(max_size=20).map(xml_text),
    duration_subscribed=st.none() | st.integers(min_value=0, max_value=2**63),
    expiration=st.none() | st.integers(min_value=0, max_value=2**32),
)


@given(st.lists(ENTRIES, max_size=5), st.integers(min_value=0, max_value=2**31))
def test_any_valid_entries_round_trip(watchers: list[WatcherEntry], version: int) -> None:
    body = build_watcherinfo(
        version=version,
        state="full",
        resource="sip:p@b",
        package="presence.winfo",
        watchers=watchers,
    )
    doc = parse_watcherinfo(body)
    assert doc.version == version
    assert doc.watcher_lists == [WatcherList("sip:p@b", "presence.winfo", watchers)]
