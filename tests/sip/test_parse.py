"""parse_message and StreamFramer on real-world-shaped messages."""

from __future__ import annotations

import pytest

from presencex.sip.errors import SipError
from presencex.sip.message import Request, Response
from presencex.sip.parse import MAX_HEADERS, MAX_MESSAGE_SIZE, StreamFramer, parse_message
from tests.sip import samples

SAMPLES = list(samples.ALL.items())
IDS = [name for name, _ in SAMPLES]


@pytest.mark.parametrize(("name", "data"), SAMPLES, ids=IDS)
def test_every_sample_parses(name: str, data: bytes) -> None:
    msg = parse_message(data)
    assert msg.call_id
    assert msg.top_via.branch is not None
    assert msg.from_.tag is not None
    _, method = msg.cseq
    if isinstance(msg, Request):
        assert method == msg.method
        assert msg.ruri.host


@pytest.mark.parametrize(("name", "data"), SAMPLES, ids=IDS)
def test_every_sample_framed_whole_and_byte_by_byte(name: str, data: bytes) -> None:
    whole = StreamFramer().feed(data)
    assert whole == [data]
    framer = StreamFramer()
    pieces: list[bytes] = []
    for i in range(len(data)):
        pieces += framer.feed(data[i : i + 1])
    assert pieces == [data]
    assert parse_message(pieces[0]) == parse_message(data)


WITH_LENGTH = [(n, d) for n, d in SAMPLES if "Content-Length" in parse_message(d).headers]


@pytest.mark.parametrize(("name", "data"), WITH_LENGTH, ids=[n for n, _ in WITH_LENGTH])
def test_trailing_junk_after_content_length_is_ignored(name: str, data: bytes) -> None:
    # RFC 3261 §18.3: octets past Content-Length are discarded on UDP.
    assert parse_message(data + b"garbage\x00\xff") == parse_message(data)


@pytest.mark.parametrize(("name", "data"), WITH_LENGTH, ids=[n for n, _ in WITH_LENGTH])
def test_trailing_junk_on_a_stream_waits_for_more(name: str, data: bytes) -> None:
    framer = StreamFramer()
    assert framer.feed(data + b"OPTIONS sip:x SIP/2.0\r\nVia: ") == [data]
    assert framer.feed(b"junk") == []


def test_without_content_length_the_datagram_rest_is_body() -> None:
    data = samples.LINPHONE_SUBSCRIBE
    assert parse_message(data + b"tail").body == b"tail"


def test_linphone_subscribe_fields() -> None:
    msg = parse_message(samples.LINPHONE_SUBSCRIBE)
    assert isinstance(msg, Request)
    assert msg.method == "SUBSCRIBE"
    assert msg.ruri.aor == "sip:alice@example.com"
    assert msg.event is not None
    assert msg.event.package == "presence"
    assert msg.expires == 600
    assert msg.to.tag is None
    assert msg.from_.tag == "Q3Zr9WkYZ"
    assert msg.top_via.has_rport
    assert msg.top_via.rport is None
    assert msg.headers.get_all("Supported") == ["replaces", "outbound", "gruu"]
    assert msg.headers.get_all("Accept") == [
        "application/pidf+xml",
        "application/rlmi+xml",
        "multipart/related",
    ]
    contact = msg.headers.get("m")
    assert contact is not None
    assert "+sip.instance" in contact
    assert msg.body == b""


def test_publish_body_and_content_type() -> None:
    msg = parse_message(samples.PUBLISH)
    assert msg.content_type == "application/pidf+xml"
    assert msg.body == samples.PIDF_BODY
    assert msg.cseq == (314159, "PUBLISH")


def test_notify_has_two_vias_top_first() -> None:
    msg = parse_message(samples.NOTIFY)
    vias = msg.vias
    assert [v.host for v in vias] == ["proxy.example.com", "203.0.113.5"]
    assert vias[1].received == "203.0.113.5"
    assert msg.headers.get("Subscription-State") == "active;expires=599"


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (samples.OK_200, 200, "OK"),
        (samples.ACCEPTED_202, 202, "Accepted"),
        (samples.NOT_EXIST_481, 481, "Call/Transaction Does Not Exist"),
    ],
)
def test_responses(data: bytes, status: int, reason: str) -> None:
    msg = parse_message(data)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (status, reason)


def test_202_addr_spec_to_tag_is_header_param() -> None:
    msg = parse_message(samples.ACCEPTED_202)
    assert msg.to.uri == "sip:alice@example.com"
    assert msg.to.tag == "ffd2"
    assert msg.top_via.rport == 5060
    assert msg.top_via.received == "198.51.100.7"


def test_compact_forms_folding_and_bare_lf() -> None:
    msg = parse_message(samples.COMPACT_SUBSCRIBE)
    assert isinstance(msg, Request)
    assert msg.call_id == "compact-call-id"
    assert msg.top_via.branch == "z9hG4bKcompact1"
    assert msg.headers.get("Via") == "SIP/2.0/UDP 192.168.1.20:5060 ;branch=z9hG4bKcompact1"
    assert msg.event is not None
    assert msg.event.id == "42"
    assert msg.headers.get_all("Allow-Events") == ["presence", "presence.winfo"]
    assert [name for name, _ in msg.headers.items] == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Event",
        "Contact",
        "Allow-Events",
        "Content-Length",
    ]


def test_leading_crlfs_are_ignored() -> None:
    assert parse_message(b"\r\n\r\n" + samples.OK_200) == parse_message(samples.OK_200)


def test_header_with_space_before_colon() -> None:
    data = samples.OK_200.replace(b"Call-ID: ", b"Call-ID  :  ")
    assert parse_message(data).call_id == "tNnc4yGbNq"


def test_folding_with_tab_on_a_multi_line_value() -> None:
    data = samples.OK_200.replace(
        b"User-Agent: Linphone Desktop/4.4.10\r\n",
        b"User-Agent: Linphone\r\n\tDesktop/4.4.10\r\n   (Ubuntu)\r\n",
    )
    assert parse_message(data).headers.get("user-agent") == "Linphone Desktop/4.4.10 (Ubuntu)"


def test_no_content_length_on_udp_means_rest_of_datagram() -> None:
    data = samples.PUBLISH.replace(b"Content-Length: 235\r\n", b"")
    assert parse_message(data).body == samples.PIDF_BODY


def test_content_length_truncates_body() -> None:
    data = samples.PUBLISH.replace(b"Content-Length: 235", b"Content-Length: 10")
    assert parse_message(data).body == samples.PIDF_BODY[:10]


def test_latin1_display_name_does_not_crash() -> None:
    data = samples.OK_200.replace(b"From: <", b'From: "J\xf6rg" <')
    assert parse_message(data).from_.display == "J\xf6rg"


def test_utf8_display_name() -> None:
    data = samples.OK_200.replace(b"From: <", 'From: "Jörg 山田" <'.encode())
    assert parse_message(data).from_.display == "Jörg 山田"


def test_no_blank_line_is_accepted_as_headers_only() -> None:
    data = samples.OK_200.rstrip(b"\r\n")
    assert parse_message(data).call_id == "tNnc4yGbNq"


# -- errors ------------------------------------------------------------------


def _without(data: bytes, prefix: bytes) -> bytes:
    lines = data.split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.startswith(prefix))


@pytest.mark.parametrize("header", ["Via", "From", "To", "Call-ID", "CSeq"])
@pytest.mark.parametrize(
    "data", [samples.LINPHONE_SUBSCRIBE, samples.PUBLISH, samples.OK_200], ids=["sub", "pub", "200"]
)
def test_missing_mandatory_header_names_it(data: bytes, header: str) -> None:
    with pytest.raises(SipError) as info:
        parse_message(_without(data, header.encode() + b":"))
    assert (info.value.status, info.value.reason) == (400, f"Missing {header} header")


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (b"CSeq: 20 SUBSCRIBE", b"CSeq: twenty SUBSCRIBE", "Bad CSeq header"),
        (b"CSeq: 20 SUBSCRIBE", b"CSeq: 2147483648 SUBSCRIBE", "Bad CSeq header"),
        (b"CSeq: 20 SUBSCRIBE", b"CSeq: 20", "Bad CSeq header"),
        (
            b"CSeq: 20 SUBSCRIBE",
            b"CSeq: 20 PUBLISH",
            "Bad CSeq header: method does not match request",
        ),
        (
            b"Via: SIP/2.0/UDP 192.168.1.20:5060",
            b"Via: SIP/2.0 192.168.1.20:5060",
            "Bad Via header",
        ),
        (
            b"Via: SIP/2.0/UDP 192.168.1.20:5060",
            b"Via: SIP/2.0/UDP 192.168.1.20:99999",
            "Bad Via header",
        ),
        (b"From: <sip:bob@example.com>", b"From: <sip:bob@example.com", "Bad From header"),
        (b"To: sip:alice@example.com", b"To: alice", "Bad To header"),
        (b"Call-ID: tNnc4yGbNq", b"Call-ID: tN nc", "Bad Call-ID header"),
        (b"Call-ID: tNnc4yGbNq", b"Call-ID:", "Bad Call-ID header"),
        (b"Max-Forwards: 70\r\n", b"Content-Length: x\r\n", "Bad Content-Length header"),
        (b"Max-Forwards: 70\r\n", b"Content-Length: 5\r\n", "Content-Length larger than datagram"),
        (b"Max-Forwards: 70\r\n", b"Bad Name: 70\r\n", "Bad header line"),
        (b"Max-Forwards: 70\r\n", b"Max-Forwards 70\r\n", "Bad header line"),
        (b"Max-Forwards: 70\r\n", b"Max-Forwards: 7\r0\r\n", "Bad header line: bare CR"),
        (b"Max-Forwards: 70\r\n", b"Call-ID: again\r\n", "Duplicate Call-ID header"),
        (
            b"SUBSCRIBE sip:alice@example.com SIP/2.0",
            b"SUBSCRIBE  sip:a@b SIP/2.0",
            "Bad request line",
        ),
        (
            b"SUBSCRIBE sip:alice@example.com SIP/2.0",
            b"SUBSCRIBE alice SIP/2.0",
            "Bad request line",
        ),
        (
            b"SUBSCRIBE sip:alice@example.com SIP/2.0",
            b"SUB(SCRIBE sip:a@b SIP/2.0",
            "Bad request line",
        ),
        (
            b"SUBSCRIBE sip:alice@example.com SIP/2.0",
            b"SUBSCRIBE sip:a@b HTTP/1.1",
            "Bad request line",
        ),
    ],
)
def test_bad_requests_say_what_is_wrong(old: bytes, new: bytes, reason: str) -> None:
    assert old in samples.LINPHONE_SUBSCRIBE
    with pytest.raises(SipError) as info:
        parse_message(samples.LINPHONE_SUBSCRIBE.replace(old, new, 1))
    assert (info.value.status, info.value.reason) == (400, reason)


def test_sip_version_3_is_505() -> None:
    data = samples.LINPHONE_SUBSCRIBE.replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1)
    with pytest.raises(SipError) as info:
        parse_message(data)
    assert info.value.status == 505


@pytest.mark.parametrize(
    "line", [b"SIP/2.0 2000 OK", b"SIP/2.0 099 Huh", b"SIP/2.0 OK", b"SIP/2.0"]
)
def test_bad_status_lines(line: bytes) -> None:
    with pytest.raises(SipError) as info:
        parse_message(samples.OK_200.replace(b"SIP/2.0 200 OK", line))
    assert (info.value.status, info.value.reason) == (400, "Bad status line")


def test_too_large_is_513() -> None:
    big = samples.PUBLISH + b"x" * MAX_MESSAGE_SIZE
    with pytest.raises(SipError) as info:
        parse_message(big)
    assert (info.value.status, info.value.reason) == (513, "Message Too Large")
    with pytest.raises(SipError):
        parse_message(samples.PUBLISH, max_size=100)


def test_too_many_headers() -> None:
    extra = b"X-Pad: 1\r\n" * (MAX_HEADERS + 1)
    with pytest.raises(SipError) as info:
        parse_message(samples.OK_200.replace(b"Content-Length", extra + b"Content-Length"))
    assert info.value.reason == "Too many header fields"


@pytest.mark.parametrize("data", [b"", b"\r\n\r\n", b"\r\n", b"\x00", b"SIP/2.0 200 OK"])
def test_degenerate_input(data: bytes) -> None:
    with pytest.raises(SipError):
        parse_message(data)


# -- stream framing ------------------------------------------------------------


def test_several_messages_in_one_read_with_keepalives() -> None:
    framer = StreamFramer()
    stream = (
        b"\r\n\r\n"
        + samples.ZOIPER_SUBSCRIBE
        + b"\r\n\r\n"
        + samples.PUBLISH
        + samples.OK_200
        + b"\r\n\r\n\r\n\r\n"
    )
    assert framer.feed(stream) == [samples.ZOIPER_SUBSCRIBE, samples.PUBLISH, samples.OK_200]
    assert framer.take_pings() == 4
    assert framer.take_pings() == 0


def test_pings_counted_when_fed_byte_by_byte() -> None:
    framer = StreamFramer()
    for byte in b"\r\n\r\n\r\n\r\n":
        assert framer.feed(bytes([byte])) == []
    assert framer.take_pings() == 2
    assert framer.feed(samples.OK_200) == [samples.OK_200]


def test_partial_reads_split_everywhere() -> None:
    stream = samples.PUBLISH + samples.NOTIFY + samples.ACCEPTED_202
    for cut in range(0, len(stream), 7):
        framer = StreamFramer()
        got = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert got == [samples.PUBLISH, samples.NOTIFY, samples.ACCEPTED_202]


def test_body_waits_for_content_length_bytes() -> None:
    framer = StreamFramer()
    head, body = samples.PUBLISH.split(b"\r\n\r\n", 1)
    assert framer.feed(head + b"\r\n\r\n") == []
    assert framer.feed(body[:-1]) == []
    assert framer.feed(body[-1:] + samples.OK_200[:5]) == [samples.PUBLISH]
    assert framer.feed(samples.OK_200[5:]) == [samples.OK_200]


def test_stream_without_content_length_and_no_body_frames_as_empty() -> None:
    data = samples.OK_200.replace(b"Content-Length: 0\r\n", b"")
    assert StreamFramer().feed(data + data) == [data, data]


def test_stream_body_without_content_length_is_400() -> None:
    data = samples.PUBLISH.replace(b"Content-Length: 235\r\n", b"")
    framer = StreamFramer()
    assert framer.feed(data) == []
    assert framer.failure is not None
    assert (framer.failure.status, framer.failure.reason) == (400, "Missing Content-Length header")
    # What could not be framed is kept so the transport can answer it.
    assert framer.failed_head == data


def test_stream_keeps_what_it_framed_before_a_fault() -> None:
    bad = samples.PUBLISH.replace(b"Content-Length: 235", b"Content-Length: x")
    framer = StreamFramer()
    assert framer.feed(samples.OK_200 + bad) == [samples.OK_200]
    assert framer.failure is not None
    assert framer.failure.reason == "Bad Content-Length header"
    assert framer.failed_head.startswith(b"PUBLISH ")
    # Out of step for good: nothing more comes out of this stream.
    assert framer.feed(samples.OK_200) == []


def test_stream_compact_content_length() -> None:
    data = samples.PUBLISH.replace(b"Content-Length:", b"l:")
    assert StreamFramer().feed(data + samples.OK_200) == [data, samples.OK_200]


def test_stream_bad_content_length() -> None:
    data = samples.PUBLISH.replace(b"Content-Length: 235", b"Content-Length: -1")
    framer = StreamFramer()
    assert framer.feed(data) == []
    assert framer.failure is not None
    assert framer.failure.reason == "Bad Content-Length header"


def test_stream_over_size_without_blank_line_is_513() -> None:
    framer = StreamFramer(max_size=1000)
    framer.feed(b"SUBSCRIBE sip:a@b SIP/2.0\r\n")
    # 27 + 51 * 19 = 996 bytes fit under 1000; the 52nd line does not.
    for _ in range(51):
        assert framer.feed(b"X-Pad: 0123456789\r\n") == []
    assert framer.failure is None
    assert framer.feed(b"X-Pad: 0123456789\r\n") == []
    assert framer.failure is not None
    assert framer.failure.status == 513


def test_stream_over_size_content_length_is_513_at_once() -> None:
    data = samples.PUBLISH.replace(b"Content-Length: 235", b"Content-Length: 9999999")
    framer = StreamFramer()
    assert framer.feed(data.split(b"\r\n\r\n")[0] + b"\r\n\r\n") == []
    assert framer.failure is not None
    assert framer.failure.status == 513


def test_stream_bare_lf_message() -> None:
    assert StreamFramer().feed(samples.COMPACT_SUBSCRIBE) == [samples.COMPACT_SUBSCRIBE]


@pytest.mark.parametrize("extra", [b"Content-Length: 0\r\n", b"l: 0\r\n"], ids=["long", "compact"])
def test_stream_duplicate_content_length_is_400(extra: bytes) -> None:
    data = samples.OK_200.replace(b"Call-ID", extra + b"Call-ID")
    framer = StreamFramer()
    assert framer.feed(data) == []
    assert framer.failure is not None
    assert framer.failure.reason == "Duplicate Content-Length header"


def test_stream_content_length_with_odd_spacing_and_case() -> None:
    data = samples.PUBLISH.replace(b"Content-Length: 235", b"CONTENT-length  :235  ")
    assert StreamFramer().feed(data + samples.OK_200) == [data, samples.OK_200]
