"""serialize, make_response, identifiers, and build -> parse round trips."""

from __future__ import annotations

import pytest

from presencex.sip.build import (
    REASON_PHRASES,
    build_request,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    serialize,
)
from presencex.sip.headers import Headers
from presencex.sip.message import Request, Response
from presencex.sip.parse import StreamFramer, parse_message
from tests.sip import samples


def _request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


@pytest.mark.parametrize(("name", "data"), list(samples.ALL.items()), ids=list(samples.ALL))
def test_parse_serialize_parse_round_trip(name: str, data: bytes) -> None:
    msg = parse_message(data)
    wire = serialize(msg)
    again = parse_message(wire)
    assert again.body == msg.body
    assert again.headers.without("Content-Length") == msg.headers.without("Content-Length")
    assert again.headers.get("Content-Length") == str(len(msg.body))
    assert serialize(again) == wire
    assert StreamFramer().feed(wire) == [wire]


def test_serialize_replaces_content_length() -> None:
    req = build_request(
        "NOTIFY",
        "sip:bob@192.0.2.1",
        [
            ("v", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKabc"),
            ("Content-Length", "999"),
            ("From", "<sip:alice@example.com>;tag=a"),
            ("To", "<sip:bob@example.com>;tag=b"),
            ("i", "cid"),
            ("CSeq", "5 NOTIFY"),
        ],
        b"hello",
    )
    assert req.headers.items[0] == ("Via", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKabc")
    wire = serialize(req)
    assert wire.startswith(b"NOTIFY sip:bob@192.0.2.1 SIP/2.0\r\nVia: ")
    assert wire.endswith(b"Content-Length: 5\r\n\r\nhello")
    assert wire.count(b"Content-Length") == 1
    assert parse_message(wire) == Request(
        "NOTIFY", "sip:bob@192.0.2.1", req.headers.replace("Content-Length", "5"), b"hello"
    )


def test_make_response_copies_per_8_2_6_2() -> None:
    req = _request(samples.NOTIFY)
    resp = make_response(req, 200, to_tag="ignored", headers=[("user-agent", "presencex")])
    assert resp.status == 200
    assert resp.reason == "OK"
    assert [name for name, _ in resp.headers.items] == [
        "Via",
        "Via",
        "To",
        "From",
        "Call-ID",
        "CSeq",
        "User-Agent",
    ]
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    # The To already has a tag: it is not replaced.
    assert resp.to.tag == "Q3Zr9WkYZ"
    assert resp.body == b""


def test_make_response_adds_to_tag_to_addr_spec_and_name_addr() -> None:
    req = _request(samples.LINPHONE_SUBSCRIBE)
    resp = make_response(req, 202, to_tag="srv1")
    assert resp.headers.get("To") == "sip:alice@example.com;tag=srv1"
    assert resp.to.tag == "srv1"
    assert resp.to.uri == "sip:alice@example.com"
    zoiper = _request(samples.ZOIPER_SUBSCRIBE)
    resp = make_response(zoiper, 200, to_tag="srv2")
    assert resp.headers.get("To") == '"Carol" <sip:carol@example.org;transport=TCP>;tag=srv2'
    assert make_response(zoiper, 100).to.tag is None


def test_make_response_round_trips_through_the_parser() -> None:
    req = _request(samples.PUBLISH)
    resp = make_response(
        req, 200, headers=[("SIP-ETag", "e1"), ("Expires", "3600")], to_tag=new_tag()
    )
    parsed = parse_message(serialize(resp))
    assert isinstance(parsed, Response)
    assert parsed.status == 200
    assert parsed.headers.get("sip-etag") == "e1"
    assert parsed.expires == 3600
    assert parsed.cseq == req.cseq
    assert parsed.top_via.branch == req.top_via.branch


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (481, "Call/Transaction Does Not Exist"),
        (489, "Bad Event"),
        (423, "Interval Too Brief"),
        (299, "OK"),
        (499, "Bad Request"),
    ],
)
def test_default_reason_phrases(status: int, reason: str) -> None:
    assert make_response(_request(samples.PUBLISH), status).reason == reason


def test_explicit_reason_and_body() -> None:
    resp = make_response(_request(samples.PUBLISH), 400, "Bad Event header", body=b"x")
    assert (resp.reason, resp.body) == ("Bad Event header", b"x")


def test_reason_table_has_presence_codes() -> None:
    for code in (200, 202, 400, 403, 404, 412, 423, 481, 489, 500, 503):
        assert code in REASON_PHRASES


def test_identifiers_are_random_and_url_safe() -> None:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
    for make in (new_tag, new_branch, new_call_id):
        # Enough to cross several refills of the random pool.
        values = {make() for _ in range(2000)}
        assert len(values) == 2000
        assert all(set(v) <= allowed for v in values)
    assert new_branch().startswith("z9hG4bK")


def test_built_notify_parses_back() -> None:
    body = samples.PIDF_BODY
    req = build_request(
        "NOTIFY",
        "sip:bob@192.168.1.20",
        [
            ("Via", f"SIP/2.0/UDP 203.0.113.5:5060;branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:alice@example.com>;tag={new_tag()}"),
            ("To", "<sip:bob@example.com>;tag=Q3Zr9WkYZ"),
            ("Call-ID", new_call_id()),
            ("CSeq", "3 NOTIFY"),
            ("Event", "presence"),
            ("Subscription-State", "active;expires=300"),
            ("Content-Type", "application/pidf+xml"),
        ],
        body,
    )
    parsed = parse_message(serialize(req))
    assert parsed == Request(
        req.method, req.uri, req.headers.with_header("l", str(len(body))), body
    )
    assert Headers.of(*parsed.headers.items) == parsed.headers


def test_reason_phrase_cannot_inject_headers() -> None:
    resp = make_response(_request(samples.PUBLISH), 400, "Bad\r\nX-Evil: 1")
    wire = serialize(resp)
    assert wire.startswith(b"SIP/2.0 400 Bad X-Evil: 1\r\nVia: ")
    assert "X-Evil" not in parse_message(wire).headers
