"""Property tests: whatever the bytes, the core answers with a message or a SipError."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from presencex.sip.build import make_response, serialize
from presencex.sip.errors import SipError
from presencex.sip.message import Request, Response
from presencex.sip.parse import StreamFramer, parse_message
from tests.sip import samples

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes that matter to the grammar, so mutations hit the interesting paths.
SPECIAL = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b'"',
    b"<",
    b">",
    b"=",
    b"@",
    b"/",
    b"[",
    b"]",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"9" * 12,
    b"-1",
    b"z9hG4bK",
    b"\r\n\r\n",
    b"\\",
]


def _exercise(msg: Request | Response) -> None:
    """Every accessor, as handlers would call them: SipError or a value."""
    accessors = [
        "call_id",
        "cseq",
        "from_",
        "to",
        "vias",
        "top_via",
        "event",
        "expires",
        "content_type",
    ]
    if isinstance(msg, Request):
        accessors.append("ruri")
    for name in accessors:
        with contextlib.suppress(SipError):
            getattr(msg, name)
    for name in ("Contact", "Accept", "Allow-Events", "Supported"):
        msg.headers.get_all(name)
    if isinstance(msg, Request):
        with contextlib.suppress(SipError):
            serialize(make_response(msg, 200, to_tag="x"))


def _parse_or_sip_error(data: bytes) -> None:
    error: SipError | None = None
    try:
        msg = parse_message(data)
    except SipError as exc:
        error = exc
    else:
        _exercise(msg)
    if error is not None:
        assert 400 <= error.status <= 599
        assert error.reason


@SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    _parse_or_sip_error(data)


@SETTINGS
@given(
    st.sampled_from(list(samples.ALL.values())),
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2000),
            st.integers(min_value=0, max_value=8),
            st.one_of(st.sampled_from(SPECIAL), st.binary(max_size=4)),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_valid_messages(base: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    data = base
    for position, delete, insert in edits:
        at = position % (len(data) + 1)
        data = data[:at] + insert + data[at + delete :]
    _parse_or_sip_error(data)


@SETTINGS
@given(st.sampled_from(list(samples.ALL.values())), st.data())
def test_framer_any_split_gives_the_same_messages(base: bytes, data: st.DataObject) -> None:
    stream = b"\r\n\r\n" + base + base + b"\r\n\r\n"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    framer = StreamFramer()
    out: list[bytes] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        out += framer.feed(stream[previous:cut])
        previous = cut
    assert out == [base, base]
    assert framer.take_pings() == 2


@SETTINGS
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_framer_random_chunks_only_sip_error(chunks: list[bytes]) -> None:
    framer = StreamFramer(max_size=2000)
    try:
        for chunk in chunks:
            for frame in framer.feed(chunk):
                _parse_or_sip_error(frame)
    except SipError:
        pass
