"""Header names, Headers, and the value parsers of presencex.sip.uri."""

from __future__ import annotations

import pytest

from presencex.sip.errors import SipError
from presencex.sip.headers import Headers, canonical_name, split_list
from presencex.sip.uri import (
    NameAddr,
    parse_content_type,
    parse_cseq,
    parse_event,
    parse_expires,
    parse_name_addr,
    parse_subscription_state,
    parse_uri,
    parse_via,
)

# -- names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("i", "Call-ID"),
        ("I", "Call-ID"),
        ("call-id", "Call-ID"),
        ("CALL-ID", "Call-ID"),
        ("f", "From"),
        ("t", "To"),
        ("v", "Via"),
        ("m", "Contact"),
        ("l", "Content-Length"),
        ("c", "Content-Type"),
        ("e", "Content-Encoding"),
        ("k", "Supported"),
        ("o", "Event"),
        ("u", "Allow-Events"),
        ("s", "Subject"),
        ("r", "Refer-To"),
        ("b", "Referred-By"),
        ("x", "Session-Expires"),
        ("cseq", "CSeq"),
        ("sip-etag", "SIP-ETag"),
        ("Sip-If-Match", "SIP-If-Match"),
        ("www-authenticate", "WWW-Authenticate"),
        ("max-forwards", "Max-Forwards"),
        ("record-route", "Record-Route"),
        ("subscription-state", "Subscription-State"),
        ("allow-events", "Allow-Events"),
        ("min-expires", "Min-Expires"),
        ("retry-after", "Retry-After"),
        ("user-agent", "User-Agent"),
        ("p-asserted-identity", "P-Asserted-Identity"),
        ("x-my-HEADER", "X-My-Header"),
        ("Via ", "Via"),
    ],
)
def test_canonical_name(raw: str, canonical: str) -> None:
    assert canonical_name(raw) == canonical
    assert canonical_name(raw) == canonical  # cached answer is the same


# -- Headers -------------------------------------------------------------------


def test_headers_lookup_in_any_spelling() -> None:
    h = Headers.of(("i", "abc"), ("EVENT", "presence"), ("x-foo", "1"), ("X-Foo", "2"))
    assert h.items == (("Call-ID", "abc"), ("Event", "presence"), ("X-Foo", "1"), ("X-Foo", "2"))
    assert h.get("call-id") == "abc"
    assert h.get("o") == "presence"
    assert h.get("X-FOO") == "1"
    assert h.get_all("x-foo") == ["1", "2"]
    assert h.get("Expires") is None
    assert "i" in h
    assert "Expires" not in h
    assert len(h) == 4


def test_headers_built_positionally_are_canonicalised() -> None:
    h = Headers((("v", "SIP/2.0/UDP a"), ("call-id", "x")))
    assert h.items == (("Via", "SIP/2.0/UDP a"), ("Call-ID", "x"))
    assert Headers.from_pairs([("cseq", "1 NOTIFY")]).items == (("CSeq", "1 NOTIFY"),)


def test_headers_edits_return_new_objects() -> None:
    h = Headers.of(("Expires", "1"), ("Event", "presence"), ("Expires", "2"))
    assert h.with_header("expires", "3").get_all("Expires") == ["1", "2", "3"]
    assert h.without("EXPIRES").items == (("Event", "presence"),)
    assert h.replace("expires", "9").items == (("Event", "presence"), ("Expires", "9"))
    assert h.get_all("Expires") == ["1", "2"]


def test_get_all_splits_list_headers_across_lines_and_commas() -> None:
    h = Headers.of(
        ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b;branch=z9hG4bK2"),
        ("Via", "SIP/2.0/UDP c;branch=z9hG4bK3"),
        ("Contact", '"Smith, John" <sip:j@h;x="a,b">;q=0.5, <sip:k@h>'),
        ("Subject", "one, two"),
    )
    assert [parse_via(v).host for v in h.get_all("Via")] == ["a", "b", "c"]
    assert h.get_all("m") == ['"Smith, John" <sip:j@h;x="a,b">;q=0.5', "<sip:k@h>"]
    # Not a list header: the comma is part of the value.
    assert h.get_all("Subject") == ["one, two"]


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a, b ,c", ["a", "b", "c"]),
        ("a,,b,", ["a", "b"]),
        ('"x\\",y" <sip:a>, b', ['"x\\",y" <sip:a>', "b"]),
        ("<sip:a,b@h>, <sip:c>", ["<sip:a,b@h>", "<sip:c>"]),
        ("", []),
    ],
)
def test_split_list(value: str, parts: list[str]) -> None:
    assert split_list(value) == parts


# -- URIs ----------------------------------------------------------------------


def test_parse_uri_full() -> None:
    uri = parse_uri("sip:Alice:secret@Example.COM:5070;transport=TCP;lr?subject=hi")
    assert uri.scheme == "sip"
    assert uri.user == "Alice"
    assert uri.password == "secret"
    assert uri.host == "Example.COM"
    assert uri.port == 5070
    assert uri.params == (("transport", "TCP"), ("lr", None))
    assert uri.param("Transport") == "TCP"
    assert uri.has_param("lr")
    assert not uri.has_param("maddr")
    assert uri.headers == "subject=hi"
    assert uri.aor == "sip:Alice@example.com"
    assert uri.transport == "tcp"
    assert str(uri) == "sip:Alice:secret@Example.COM:5070;transport=TCP;lr?subject=hi"


@pytest.mark.parametrize(
    ("text", "aor", "transport", "port"),
    [
        ("sip:example.com", "sip:example.com", "udp", None),
        ("SIPS:bob@example.com", "sips:bob@example.com", "tls", None),
        ("sip:bob@[2001:db8::1]:5080", "sip:bob@[2001:db8::1]", "udp", 5080),
        ("sip:bob@[2001:DB8::1]", "sip:bob@[2001:db8::1]", "udp", None),
        ("sip:+1-555;phone-context=x@h;user=phone", "sip:+1-555;phone-context=x@h", "udp", None),
    ],
)
def test_parse_uri_variants(text: str, aor: str, transport: str, port: int | None) -> None:
    uri = parse_uri(text)
    assert uri.aor == aor
    assert uri.transport == transport
    assert uri.port == port
    assert parse_uri(str(uri)) == uri


def test_tel_uri_parses_with_empty_host() -> None:
    uri = parse_uri("tel:+1-201-555-0123;ext=12")
    assert (uri.scheme, uri.user, uri.host) == ("tel", "+1-201-555-0123", "")
    assert uri.param("ext") == "12"
    assert uri.aor == "tel:+1-201-555-0123"
    assert str(uri) == "tel:+1-201-555-0123;ext=12"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "alice@example.com",
        "http://example.com",
        "sip:@example.com",
        "sip:a@",
        "sip:a@b:port",
        "sip:a@b:70000",
        "sip:a@[::1",
        "sip:a@[::1]x",
        "sip:a b@c",
        "sip:a@b;=x",
        "tel:",
    ],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipError) as info:
        parse_uri(text, "Request-URI")
    assert (info.value.status, info.value.reason) == (400, "Bad Request-URI")


# -- name-addr -----------------------------------------------------------------


def test_name_addr_params_after_brackets_belong_to_header() -> None:
    na = parse_name_addr('"Bob" <sip:b@x;transport=tcp>;tag=1', "From")
    assert na == NameAddr("Bob", "sip:b@x;transport=tcp", (("tag", "1"),))
    assert na.tag == "1"
    assert parse_uri(na.uri).transport == "tcp"


def test_addr_spec_params_belong_to_header() -> None:
    # RFC 3261 §20.10: without <>, ";tag" (and every parameter) is the header's.
    na = parse_name_addr("sip:b@x;tag=1;expires=60", "To")
    assert na.uri == "sip:b@x"
    assert na.tag == "1"
    assert na.param("EXPIRES") == "60"
    assert str(na) == "<sip:b@x>;tag=1;expires=60"


@pytest.mark.parametrize(
    ("value", "display", "uri"),
    [
        ("<sip:a@b>", None, "sip:a@b"),
        ("Bob Smith <sip:a@b>", "Bob Smith", "sip:a@b"),
        ('"Smith, \\"Bob\\"" <sip:a@b>', 'Smith, "Bob"', "sip:a@b"),
        ('""<sip:a@b>', "", "sip:a@b"),
        ("  <tel:+123>  ", None, "tel:+123"),
        ("*", None, "*"),
    ],
)
def test_name_addr_forms(value: str, display: str | None, uri: str) -> None:
    na = parse_name_addr(value)
    assert (na.display, na.uri) == (display, uri)
    assert parse_name_addr(str(na)) == na


def test_with_tag_replaces_or_adds() -> None:
    na = parse_name_addr("<sip:a@b>;x=1")
    assert str(na.with_tag("t1")) == "<sip:a@b>;x=1;tag=t1"
    assert na.with_tag("t1").with_tag("t2").tag == "t2"


@pytest.mark.parametrize(
    "value",
    [
        "",
        '"unterminated <sip:a@b>',
        '"Bob" sip:a@b',
        "<sip:a@b",
        "<sip:a@b> junk",
        "<nouri>",
        "a b",
    ],
)
def test_bad_name_addr_names_header(value: str) -> None:
    with pytest.raises(SipError) as info:
        parse_name_addr(value, "From")
    assert (info.value.status, info.value.reason) == (400, "Bad From header")


# -- Via -----------------------------------------------------------------------


def test_via_fields() -> None:
    via = parse_via(
        "SIP/2.0/udp 192.0.2.4:5060;branch=z9hG4bK776;received=198.51.100.1;rport=41000"
    )
    assert (via.protocol, via.transport, via.host, via.port) == (
        "SIP/2.0",
        "UDP",
        "192.0.2.4",
        5060,
    )
    assert via.branch == "z9hG4bK776"
    assert via.received == "198.51.100.1"
    assert via.rport == 41000
    assert via.has_rport
    assert via.sent_by == "192.0.2.4:5060"


def test_via_rport_without_value_and_lws() -> None:
    via = parse_via("SIP / 2.0 / TCP  client.example.com : 5070 ; branch = z9hG4bKx ; rport")
    assert via.transport == "TCP"
    assert (via.host, via.port) == ("client.example.com", 5070)
    assert via.branch == "z9hG4bKx"
    assert via.has_rport
    assert via.rport is None


def test_via_ipv6_and_default_ports() -> None:
    via = parse_via("SIP/2.0/TLS [2001:db8::9];branch=z9hG4bKq")
    assert via.host == "[2001:db8::9]"
    assert via.port is None
    assert via.sent_by == "[2001:db8::9]:5061"
    assert not via.has_rport
    assert str(parse_via(str(via))) == str(via)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0 host",
        "SIP/2.0/UDP host:x",
        "SIP/2.0/UDP ho st;branch=1",
        "SIP/2.0/UDP h;;",
    ],
)
def test_bad_via(value: str) -> None:
    with pytest.raises(SipError) as info:
        parse_via(value)
    assert info.value.reason == "Bad Via header"


# -- CSeq, Event, Subscription-State, Expires, Content-Type ----------------------


def test_cseq() -> None:
    assert parse_cseq("  4711   SUBSCRIBE ") == (4711, "SUBSCRIBE")
    assert parse_cseq("0 NOTIFY") == (0, "NOTIFY")
    assert parse_cseq(f"{2**31 - 1} PUBLISH") == (2**31 - 1, "PUBLISH")


@pytest.mark.parametrize(
    "value", ["", "1", "x NOTIFY", "-1 NOTIFY", f"{2**31} NOTIFY", "1 NO TIFY", "\u0661 NOTIFY"]
)
def test_bad_cseq(value: str) -> None:
    with pytest.raises(SipError) as info:
        parse_cseq(value)
    assert info.value.reason == "Bad CSeq header"


def test_event() -> None:
    ev = parse_event("Presence ; id=abc;Foo")
    assert ev.package == "presence"
    assert ev.id == "abc"
    assert ev.param("foo") is None
    assert ("foo", None) in ev.params
    assert parse_event("dialog;sla").params == (("sla", None),)
    assert parse_event("presence.winfo").package == "presence.winfo"
    assert str(parse_event("presence;id=1")) == "presence;id=1"


@pytest.mark.parametrize("value", ["", ";id=1", "pres ence", "presence.", ".winfo", "presence;id"])
def test_bad_event(value: str) -> None:
    if value == "presence;id":
        assert parse_event(value).id is None
        return
    with pytest.raises(SipError) as info:
        parse_event(value)
    assert info.value.reason == "Bad Event header"


def test_subscription_state() -> None:
    assert parse_subscription_state("active;expires=599") == ("active", (("expires", "599"),))
    assert parse_subscription_state("Terminated; reason=timeout") == (
        "terminated",
        (("reason", "timeout"),),
    )
    assert parse_subscription_state("pending") == ("pending", ())
    with pytest.raises(SipError) as info:
        parse_subscription_state(";expires=1")
    assert info.value.reason == "Bad Subscription-State header"


def test_expires() -> None:
    assert parse_expires(" 3600 ") == 3600
    assert parse_expires("0") == 0
    assert parse_expires(str(2**32 - 1)) == 2**32 - 1
    for bad in ("", "-1", "1.5", "soon", str(2**32), "9" * 50):
        with pytest.raises(SipError) as info:
            parse_expires(bad, "Min-Expires")
        assert info.value.reason == "Bad Min-Expires header"


def test_content_type() -> None:
    assert parse_content_type("Application/PIDF+XML") == ("application/pidf+xml", ())
    assert parse_content_type('multipart/related;type="application/rlmi+xml";boundary=x') == (
        "multipart/related",
        (("type", '"application/rlmi+xml"'), ("boundary", "x")),
    )
    assert parse_content_type("text / plain")[0] == "text/plain"
    for bad in ("", "text", "/plain", "text/", "te xt/plain"):
        with pytest.raises(SipError) as info:
            parse_content_type(bad)
        assert info.value.reason == "Bad Content-Type header"


def test_quoted_param_with_semicolon() -> None:
    na = parse_name_addr('<sip:a@b>;+sip.instance="<urn:uuid:1;2>";q=1')
    assert na.param("+sip.instance") == '"<urn:uuid:1;2>"'
    assert na.param("q") == "1"
