"""Hostile and broken SIP: property tests and a corpus, for the parser and for
the request handlers (issue 7, item 1).

What must hold, whatever the bytes:
- The parser returns a message or raises ``SipError`` (400/505/513 with a
  one-line reason), and so does every accessor a handler calls; a stream is
  framed the same however it is cut, and a message with an exact
  Content-Length is framed as the datagram parser sees it (no smuggling).
- ``Hub.on_bytes`` (parser, transactions, router, real presentity actors, a
  fake store) never raises, nothing hangs (virtual and real time bounds), an
  answerable request gets exactly one final response with a status we mean to
  send and a reason phrase, a retransmission gets the same bytes again, an
  unanswerable input (no request line, no Via/From/To/Call-ID/CSeq, a
  response, an ACK) is dropped, and nothing is logged as an error.
- A real ``presencex serve`` takes the whole corpus over UDP and TCP and then
  still serves a normal PUBLISH and SUBSCRIBE.

The corpus is ``corpus/*.sip``: raw bytes, named ``<expect>-<kind>-<what>``,
where ``expect`` is the status the default configuration answers, ``drop``
or ``any`` (some sane final answer). Add a file to add a case.

Examples per property: ``PRESENCEX_FUZZ_EXAMPLES`` (default 60: seconds in
CI; 5000 for a long run).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from presencex.app import build_registry, policy_from, state_config_from
from presencex.config import Config, config_from_mapping
from presencex.presence.actor import ActorEnv
from presencex.router import Router
from presencex.sip.errors import SipError
from presencex.sip.message import Request, Response
from presencex.sip.parse import MAX_HEADERS, MAX_MESSAGE_SIZE, StreamFramer, parse_message
from presencex.sip.transaction import server_key
from presencex.store.writer import StoreOp
from presencex.transport.hub import Hub, error_response_bytes
from presencex.transport.peer import Peer
from tests.integration.server import open_udp_peer, running_server
from tests.sipmsg import pidf, request_bytes

EXAMPLES = int(os.environ.get("PRESENCEX_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CORPUS_DIR = Path(__file__).parent / "corpus"
CORPUS: dict[str, bytes] = {p.stem: p.read_bytes() for p in sorted(CORPUS_DIR.glob("*.sip"))}
PEER = Peer("udp", "127.0.0.1", 5070, "udp:127.0.0.1:5060")
ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"

# Final statuses presencex means to send. 505 is RFC 3261 §21.5.6 for SIP/3.0;
# 500 only as "CSeq Out of Order" (§12.2.2): any other 500 is a bug.
ALLOWED = {200, 400, 403, 404, 405, 406, 412, 413, 415, 423, 481, 489, 500, 503, 505, 513}
PARSER_STATUSES = {400, 505, 513}
# Virtual seconds an input may take to be answered (the fake store commits at
# once, so anything slower is a hang), and real seconds per example.
SETTLE = 1.0
REAL_TIME_LIMIT = 20.0

TRIED: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    if TRIED:
        print("\nSIP inputs tried: " + ", ".join(f"{k}={v}" for k, v in sorted(TRIED.items())))


# -- time bounds --------------------------------------------------------------


@contextlib.contextmanager
def real_time_limit(seconds: float) -> Iterator[None]:
    """Fail a CPU-bound hang that virtual time cannot see (SIGALRM, main thread)."""

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"input took more than {seconds} s of real time: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- the in-process server ----------------------------------------------------


class CaptureSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, address: object) -> int:
        self.sent.append(data)
        return len(data)


class Store:
    async def commit(self, ops: tuple[StoreOp, ...]) -> None:
        await trio.lowlevel.checkpoint()

    def submit_nowait(self, ops: tuple[StoreOp, ...]) -> None:
        pass


class Clock:
    def now(self) -> float:
        return 1_700_000_000.0 + trio.current_time()

    def to_trio(self, when: float) -> float:
        return when - 1_700_000_000.0


class ErrorLog(logging.Handler):
    """Every ERROR presencex logs: a handler that raised (and answered 500)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def harness_config(**overrides: object) -> Config:
    return config_from_mapping({"force_active": 1, **overrides})


@dataclass
class Harness:
    """``Hub`` → ``Router`` → real actors, wired as ``app.serve`` wires them."""

    config: Config
    sock: CaptureSocket = field(default_factory=CaptureSocket)
    hub: Hub = field(init=False)
    router: Router = field(init=False)

    def __post_init__(self) -> None:
        config = self.config
        self.hub = Hub(
            t1=config.t1,
            t2=config.t2,
            max_message_size=config.max_message_size,
            max_headers=config.max_headers,
        )
        self.hub.udp_sockets[PEER.local] = self.sock  # type: ignore[assignment]  # a fake socket
        self.hub.listen_hosts[PEER.local] = ("127.0.0.1", 5060)
        env = ActorEnv(self.hub, Store(), Clock(), notify_answered=lambda *a: None)
        self.router = Router(
            state_config_from(config, build_registry(config)),
            env,
            inbox_size=config.inbox_size,
            retry_after=config.retry_after,
            policy=policy_from(config),
        )
        self.hub.on_request = self.router.on_request

    async def feed(self, data: bytes, peer: Peer = PEER) -> list[bytes]:
        """One input; the responses (not our NOTIFYs) sent while it settled."""
        start = len(self.sock.sent)
        self.hub.on_bytes(data, peer)  # must not raise, whatever ``data`` is
        await trio.sleep(SETTLE)
        return [m for m in self.sock.sent[start:] if m.startswith(b"SIP/2.0 ")]


def run_in_harness(inputs: list[bytes], config: Config | None = None) -> list[list[bytes]]:
    """Feed ``inputs`` one after another to one server; the answers to each.
    Checks on the way that nothing hangs and nothing logs an error."""
    harness = Harness(config or harness_config(max_body_size=4096))
    errors = ErrorLog()
    logger = logging.getLogger("presencex")
    logger.addHandler(errors)

    async def main() -> list[list[bytes]]:
        answers: list[list[bytes]] = []
        # Virtual time: a wait that never ends jumps here at once.
        with trio.fail_after(SETTLE * (len(inputs) + 5)):
            async with trio.open_nursery() as nursery:
                await nursery.start(harness.router.serve)
                await nursery.start(harness.hub.serve_timers)
                for data in inputs:
                    answers.append(await harness.feed(data))  # noqa: PERF401 - awaits in order
                nursery.cancel_scope.cancel()
        return answers

    try:
        with real_time_limit(REAL_TIME_LIMIT):
            answers = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logger.removeHandler(errors)
    assert not errors.records, f"a handler raised: {errors.records[:3]}"
    assert harness.router.statistics().errors_500 == 0
    return answers


# -- the oracle -----------------------------------------------------------------

_STATUS_LINE = re.compile(rb"SIP/2\.0 (\d{3}) ([^\r\n]*)\r\n")


def status_of(response: bytes) -> tuple[int, str]:
    match = _STATUS_LINE.match(response)
    assert match, f"not a status line: {response[:80]!r}"
    return int(match.group(1)), match.group(2).decode("utf-8", "replace")


def answerable(data: bytes) -> tuple[bool, Request | None]:
    """(must it get exactly one final response, the parsed request if any)."""
    try:
        msg = parse_message(data)
    except SipError:
        # What is answerable without parsing: a request line and the five
        # headers a response copies (RFC 3261 §8.2.6.2).
        return error_response_bytes(data, 400, "x") is not None, None
    if isinstance(msg, Response) or msg.method == "ACK":
        return False, None
    return True, msg


def check_answers(data: bytes, answers: list[bytes]) -> None:
    must_answer, request = answerable(data)
    if not must_answer:
        assert answers == [], f"answered unanswerable input {data[:80]!r}: {answers[:1]!r}"
        return
    assert len(answers) == 1, f"{len(answers)} answers to {data[:120]!r}"
    status, reason = status_of(answers[0])
    assert status in ALLOWED, (status, reason)
    assert reason.strip(), f"{status} without a reason phrase"
    if status == 500:
        assert reason == "CSeq Out of Order", f"500 {reason}: a handler failed"
    if request is not None:
        # A response to a parsed request is itself well formed and belongs to it.
        response = parse_message(answers[0])
        assert isinstance(response, Response)
        assert response.call_id == request.call_id
        assert response.cseq == request.cseq


def check_sequence(inputs: list[bytes], answers: list[list[bytes]]) -> None:
    """``check_answers`` for each input, where a request matching an earlier
    one's transaction (RFC 3261 §17.2.3: branch, sent-by, method) is a
    retransmission and gets the earlier answer again, byte for byte."""
    earlier: dict[tuple[str, ...], list[bytes]] = {}
    for data, got in zip(inputs, answers, strict=True):
        _, request = answerable(data)
        key = None
        if request is not None:
            with contextlib.suppress(SipError):
                key = server_key(request)
        if key is not None and key in earlier and earlier[key]:
            assert got == earlier[key], "a retransmission got a different answer"
            continue
        check_answers(data, got)
        if key is not None:
            earlier[key] = got


# -- strategies -------------------------------------------------------------------

METHODS = ["SUBSCRIBE"] * 4 + ["PUBLISH"] * 4 + ["OPTIONS", "NOTIFY", "ACK", "INFO", "subscribe"]
RURIS = [
    ALICE,
    ALICE,
    "sip:alice@example.com;transport=tcp",
    "sips:alice@example.com",
    "sip:example.com",
    "tel:+15551234",
    "sip:%61lice@example.com",
    "sip:alice@[::1]:5060",
    "sip:alice@example.com:99999",
    "sip:" + "u" * 3000 + "@example.com",
    "sip:al\xffice@example.com",
    "sip:alice@exa mple.com",
    "nocolon",
]
VIA_GOOD = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{n};rport"
VIAS_EVIL = [
    "garbage",
    "SIP/2.0/UDP [::1",
    "SIP/2.0/UDP 127.0.0.1:99999;branch=z9hG4bKx",
    "SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK1;rport=abc",
    "SIP/2.0/UDP 127.0.0.1;rport",
    "SIP/2.0/SCTP host;branch=" + "b" * 3000,
    "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{n}, SIP/2.0/UDP ,,",
    "SIP/2.0/UDP 127.0.0.1;received=8.8.8.8;branch=z9hG4bK{n}",
    "",
]
FROMS_EVIL = [
    "<sip:bob@example.com>",
    f"<{ALICE}>",
    "<sip:bob@example.com>;tag=",
    "<sip:bob@example.com>;tag=a;tag=b",
    "<tel:+1555>;tag=t",
    '"\\" <sip:bob@example.com>;tag=q',
    "<sip:bob@example.com;tag=x",
    "garbage",
    '"' + "D" * 5000 + '" <sip:bob@example.com>;tag=d',
    "<mailto:bob@example.com>;tag=m",
    "",
]
TOS_EVIL = [f"<{ALICE}>;tag=unknown", f"<{ALICE}>;tag=", "<sip:carol@example.com>", "<", ""]
CSEQS_EVIL = [
    "-1 {m}",
    "0 {m}",
    "2147483647 {m}",
    "2147483648 {m}",
    "99999999999999999999 {m}",
    "1",
    "abc {m}",
    "1 OTHER",
    "\u00b9 {m}",
    "1 {m} extra",
    "",
]
EVENTS = [
    "presence",
    "presence;id=1",
    "presence.winfo",
    "dialog",
    "dialog;sla",
    "dialog;ma",
    "dialog;sla;ma",
    "PRESENCE",
    "presence;",
    "presence;;;",
    'presence;id="a b"',
    "presence;id=\x00",
    "presence ; id = 7",
    "presence..winfo",
    "presence.winfo.winfo",
    "reg",
    "",
    "presence" + ";p=1" * 300,
    "dialog;sla=\xff",
]
EXPIRES = [
    "600",
    "0",
    "1",
    "29",
    "30",
    "3600",
    "4294967295",
    "4294967296",
    "99999999999",
    "-1",
    "60.5",
    "soon",
    "\u0663",
    "",
    " 60 ",
]
CONTACTS = [
    "<sip:bob@127.0.0.1:5070>",
    "*",
    "<>",
    "<tel:+1555>",
    "<http://127.0.0.1/>",
    "<sip:bob@[::1]:5070>",
    "sip:bob@127.0.0.1;expires=abc",
    "<sip:\xff\xfe>",
    ", ".join(f"<sip:b{i}@h>" for i in range(50)),
]
CONTENT_TYPES = [
    "application/pidf+xml",
    "application/dialog-info+xml",
    "application/watcherinfo+xml",
    "APPLICATION/PIDF+XML",
    "application/pidf+xml;charset=latin1",
    "text/plain",
    "/",
    "application/",
    "",
]
EXTRA_HEADERS = [
    ("SIP-If-Match", "no-such-etag"),
    ("SIP-If-Match", "\xe9\xe9"),
    ("Accept", "application/nothing"),
    ("Accept", "*/*"),
    ("Accept", "application/pidf+xml;q=0"),
    ("P-Asserted-Identity", f"<{ALICE}>"),
    ("P-Asserted-Identity", "garbage"),
    ("Record-Route", "<sip:\xff;lr>"),
    ("Record-Route", "<sip:proxy.example.com;lr>"),
    ("Require", "eventlist"),
    ("Supported", "eventlist"),
    ("Max-Forwards", "-1"),
    ("Max-Forwards", "0"),
    ("Content-Encoding", "gzip"),
    ("X-Nul", "a\x00b"),
    ("X-Huge", "H" * 20000),
    ("\xc3\x28", "invalid utf-8 name"),
    ("Bad Name", "space in name"),
]
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE presence [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">&x;</presence>'
)
BODIES = [
    pidf(ALICE, "t1"),
    pidf(ALICE, "t1"),
    pidf(ALICE, "t1", basic="closed"),
    pidf("sip:mallory@example.com", "t1"),
    b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" '
    b'entity="sip:alice@example.com"/>',
    b'<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="0" state="full"/>',
    XXE,
    b"<presence",
    b"not xml at all",
    b"\xff\xfe<\x00p\x00",
    pidf(ALICE, "t1").replace(b"</presence>", b"<a>" * 100 + b"</a>" * 100 + b"</presence>"),
    pidf(ALICE, "t1").replace(b"</presence>", b"<!--" + b"x" * 5000 + b"--></presence>"),
    b"",
]


def _spell(name: str) -> st.SearchStrategy[str]:
    compact = {
        "Via": "v",
        "From": "f",
        "To": "t",
        "Call-ID": "i",
        "Contact": "m",
        "Event": "o",
        "Content-Type": "c",
        "Content-Length": "l",
    }
    options = [name, name.lower(), name.upper(), name.swapcase()]
    if name in compact:
        options += [compact[name], compact[name].upper()]
    return st.sampled_from(options)


def _mostly(good: str, evil: list[str], percent: int = 85) -> st.SearchStrategy[str]:
    """``good`` most of the time (and when shrunk), else one of ``evil``."""
    return st.tuples(st.integers(0, 99), st.sampled_from(evil)).map(
        lambda t: good if t[0] < percent else t[1]
    )


def _slot(name: str, good: str, evil: list[str]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """A header as present (mostly right), missing, wrong, or repeated.
    Small integers mean "right", so examples shrink towards a sane request."""

    def build(args: tuple[int, int, str, str, str]) -> list[tuple[str, str]]:
        shape, wrong, spelled, again, bad = args
        value = bad if wrong >= 88 else good
        if shape < 90:
            return [(spelled, value)]
        if shape < 95:
            return []
        return [(spelled, value), (again, bad if wrong % 2 else good)]

    return st.tuples(
        st.integers(0, 99),
        st.integers(0, 99),
        _spell(name),
        _spell(name),
        st.sampled_from(evil),
    ).map(build)


@st.composite
def sip_requests(draw: st.DrawFn) -> bytes:
    """A request assembled header by header from good and hostile values."""
    n = draw(st.integers(0, 10**6))
    method = draw(_mostly(draw(st.sampled_from(["SUBSCRIBE", "PUBLISH"])), METHODS))
    upper = method.upper()
    publish = upper == "PUBLISH"
    from_good = f"<{ALICE if publish else BOB}>;tag=f{n}"
    cseq_good = f"{draw(st.integers(1, 5))} {method}"
    headers: list[tuple[str, str]] = []
    headers += draw(_slot("Via", VIA_GOOD.format(n=n), [v.format(n=n) for v in VIAS_EVIL]))
    headers += draw(_slot("From", from_good, FROMS_EVIL))
    headers += draw(_slot("To", f"<{ALICE}>", TOS_EVIL))
    headers += draw(_slot("Call-ID", f"c{n}@fuzz", ["", "a b", "x" * 3000, f"c{n - 1}@fuzz"]))
    headers += draw(_slot("CSeq", cseq_good, [c.format(m=method) for c in CSEQS_EVIL]))
    headers += draw(_slot("Event", "presence", EVENTS))
    headers += draw(_slot("Expires", "600", EXPIRES))
    if not publish or draw(st.booleans()):
        headers += draw(_slot("Contact", CONTACTS[0], CONTACTS))
    body = draw(st.sampled_from(BODIES)) if publish or draw(st.integers(0, 9)) == 9 else b""
    if body or draw(st.booleans()):
        headers += draw(_slot("Content-Type", CONTENT_TYPES[0], CONTENT_TYPES))
    headers += draw(st.lists(st.sampled_from(EXTRA_HEADERS), max_size=2))
    length = str(len(body))
    headers += draw(
        _slot(
            "Content-Length",
            length,
            [str(len(body) + 100), str(max(0, len(body) - 5)), "-1", "0x10", "99999999999", ""],
        )
    )
    headers = draw(st.permutations(headers)) if draw(st.integers(0, 4)) == 4 else headers
    ruri = draw(_mostly(ALICE, RURIS))
    version = draw(_mostly("SIP/2.0", ["sip/2.0", "SIP/3.0", "HTTP/1.1", "SIP/2.0 "], 92))
    eol = draw(_mostly("\r\n", ["\n"]))
    lines = [f"{method} {ruri} {version}", *(f"{k}: {v}" for k, v in headers)]
    head = (eol.join(lines) + eol + eol).encode("utf-8")
    # Latin-1 where a client would send it (old phones), UTF-8 elsewhere.
    if draw(st.integers(0, 9)) == 9:
        head = head.decode("utf-8").encode("latin-1", "replace")
    return head + body


SPECIAL = [b"\r\n", b"\n", b"\r", b"\x00", b"\xff", b":", b";", b",", b'"', b"<", b"\r\n\r\n"]


def _mutate(base: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    edit = st.tuples(
        st.integers(0, 70_000),
        st.integers(0, 40),
        st.one_of(st.sampled_from(SPECIAL), st.binary(max_size=6)),
    )

    def apply(args: tuple[bytes, list[tuple[int, int, bytes]]]) -> bytes:
        data, edits = args
        for position, delete, insert in edits:
            at = position % (len(data) + 1)
            data = data[:at] + insert + data[at + delete :]
        return data

    truncate = st.tuples(base, st.integers(0, 70_000)).map(lambda t: t[0][: t[1] % (len(t[0]) + 1)])
    return st.one_of(st.tuples(base, st.lists(edit, min_size=1, max_size=4)).map(apply), truncate)


CORPUS_SAMPLES = st.sampled_from(list(CORPUS.values()))
HOSTILE = st.one_of(
    sip_requests(),
    sip_requests(),
    _mutate(sip_requests()),
    _mutate(CORPUS_SAMPLES),
    CORPUS_SAMPLES,
    st.binary(max_size=400),
)


def kind_of(data: bytes) -> str:
    try:
        msg = parse_message(data)
    except SipError as exc:
        return f"refused-{exc.status}"
    return "response" if isinstance(msg, Response) else f"parsed-{msg.method[:12]}"


# -- the parser -----------------------------------------------------------------

ACCESSORS = ["call_id", "cseq", "from_", "to", "vias", "top_via", "event", "expires"]


def check_error(error: SipError, statuses: set[int]) -> None:
    assert error.status in statuses, error
    assert error.reason.strip(), error
    assert "\n" not in error.reason
    assert "\r" not in error.reason


def parse_checked(data: bytes) -> Request | Response | None:
    """parse_message and every accessor: a value or a sound SipError."""
    try:
        msg = parse_message(data)
    except SipError as exc:
        check_error(exc, PARSER_STATUSES)
        return None
    names = [*ACCESSORS, "content_type", "ruri"] if isinstance(msg, Request) else ACCESSORS
    errors: list[SipError] = []
    for name in names:
        try:
            getattr(msg, name)
        except SipError as exc:
            errors.append(exc)
    for error in errors:
        check_error(error, {400})
    return msg


@FUZZ
@given(HOSTILE)
def test_parser_returns_a_message_or_a_sip_error(data: bytes) -> None:
    TRIED["parser"] += 1
    with real_time_limit(REAL_TIME_LIMIT):
        parse_checked(data)


NEXT = request_bytes("OPTIONS", ALICE, from_uri=BOB, to_uri=ALICE)


def _head_and_body(data: bytes) -> tuple[bytes, bytes]:
    data = data.lstrip(b"\r\n")
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n", 0, crlf if crlf >= 0 else len(data))
    if lf >= 0:
        return data[:lf], data[lf + 2 :]
    if crlf >= 0:
        return data[:crlf], data[crlf + 4 :]
    return data, b""


@FUZZ
@given(HOSTILE, sip_requests(), st.lists(st.integers(0, 140_000), max_size=8))
def test_framer_is_split_invariant_and_agrees_with_the_parser(
    first: bytes, second: bytes, cuts: list[int]
) -> None:
    TRIED["framer"] += 1
    stream = first + second

    def frames(chunks: list[bytes]) -> list[bytes] | SipError:
        framer = StreamFramer()
        out: list[bytes] = []
        for chunk in chunks:
            out += framer.feed(chunk)
        if framer.failure is not None:
            check_error(framer.failure, PARSER_STATUSES)
            return framer.failure
        return out

    whole = frames([stream])
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    split = frames(pieces)
    if isinstance(whole, SipError):
        # Where the error shows may move, never whether the stream is bad.
        assert isinstance(split, SipError) or len(split) < 2
    else:
        assert not isinstance(split, SipError)
        # A message still waiting for bytes may be emitted only once it is whole.
        assert split == whole
        for frame in whole:
            parse_checked(frame)
    # No request smuggling: a message whose Content-Length matches its body
    # is one frame, the same bytes the datagram parser takes, and what
    # follows it is the next frame.
    msg = parse_checked(first)
    length = None if msg is None else msg.headers.get("Content-Length")
    if length is not None and int(length) == len(_head_and_body(first)[1]):
        assert frames([first + NEXT]) == [first.lstrip(b"\r\n"), NEXT]


WORST_CASES = {
    "semicolons": lambda h: h + b"X-S: " + b";" * 60_000 + b"\r\n",
    "via-commas": lambda h: h + b"Via: " + b"SIP/2.0/UDP h," * 4_000 + b"\r\n",
    "params": lambda h: h.replace(b"Event: presence", b"Event: presence" + b";a=b" * 15_000),
    "quotes": lambda h: h + b"Contact: " + b'"\\"' * 20_000 + b"\r\n",
    "angles": lambda h: h.replace(b"From: ", b"From: " + b"<" * 60_000),
    "folds": lambda h: h + b"X-F: a" + b"\r\n b" * 190 + b"\r\n",
    "lf-runs": lambda h: h + b"\n" * 60_000,
    "colons": lambda h: h + b":" * 60_000 + b"\r\n",
    "headers": lambda h: h + b"X: y\r\n" * (MAX_HEADERS - 20),
}


@pytest.mark.parametrize("case", sorted(WORST_CASES))
def test_parser_is_fast_on_worst_case_messages(case: str) -> None:
    head = request_bytes("SUBSCRIBE", ALICE, from_uri=BOB, to_uri=ALICE, expires=600)
    head = head.removesuffix(b"Content-Length: 0\r\n\r\n")
    data = WORST_CASES[case](head) + b"Content-Length: 0\r\n\r\n"
    data = data[:MAX_MESSAGE_SIZE]
    TRIED["parser-worst-case"] += 1
    started = time.perf_counter()
    with real_time_limit(REAL_TIME_LIMIT):
        parse_checked(data)
        framer = StreamFramer()
        for i in range(0, len(data), 997):  # many small reads stay linear
            framer.feed(data[i : i + 997])
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{case}: {elapsed:.2f} s"


def test_corpus_is_whole() -> None:
    """The corpus covers every kind the issue names, and each file is named
    with an expectation the tests can check."""
    kinds = Counter(name.split("-")[1] for name in CORPUS)
    for needed in (
        "random",
        "truncated",
        "huge",
        "duplicate",
        "cseq",
        "expires",
        "length",
        "case",
        "compact",
        "encoding",
        "tag",
        "event",
        "ctype",
        "body",
    ):
        assert kinds[needed] >= 3, needed
    for name in CORPUS:
        expect = name.split("-")[0]
        assert expect in ("drop", "any") or int(expect) in ALLOWED, name
        parse_checked(CORPUS[name])
    TRIED["corpus-files"] = len(CORPUS)
    print(f"\ncorpus: {len(CORPUS)} files, kinds: {dict(sorted(kinds.items()))}")


# -- the handlers -----------------------------------------------------------------


# Bugs in files this suite's author does not own, reported to their owner.
KNOWN_BUGS: dict[str, str] = {}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[n]))
        if n in KNOWN_BUGS
        else n
        for n in sorted(CORPUS)
    ],
)
def test_corpus_file_through_the_handlers(name: str) -> None:
    """Each file alone, with the default limits: its expected answer, and the
    same bytes again for a retransmission."""
    data = CORPUS[name]
    TRIED["handler-corpus"] += 2
    first, again = run_in_harness([data, data], harness_config())
    check_answers(data, first)
    check_answers(data, again)
    expect = name.split("-")[0]
    if expect == "drop":
        assert first == []
    elif expect != "any":
        status, reason = status_of(first[0])
        assert status == int(expect), f"{name}: {status} {reason}"
    # RFC 3261 §17.2.2: a retransmission is answered with the same response.
    assert again == first


def test_whole_corpus_in_one_server_then_normal_service() -> None:
    """Everything one after another into one server, which then still serves
    a PUBLISH and a SUBSCRIBE."""
    inputs = list(CORPUS.values())
    publish = request_bytes(
        "PUBLISH",
        ALICE,
        from_uri=ALICE,
        to_uri=ALICE,
        content_type="application/pidf+xml",
        body=pidf(ALICE, "after"),
        expires=600,
    )
    subscribe = request_bytes("SUBSCRIBE", ALICE, from_uri=BOB, to_uri=ALICE, expires=600)
    answers = run_in_harness([*inputs, publish, subscribe], harness_config())
    check_sequence(inputs, answers[: len(inputs)])
    assert status_of(answers[-2][0])[0] == 200
    assert status_of(answers[-1][0])[0] == 200
    TRIED["handler-corpus-sequence"] += len(inputs) + 2
    statuses = Counter(status_of(a[0])[0] if a else "dropped" for a in answers[:-2])
    print(f"\ncorpus through one server: {dict(sorted(statuses.items(), key=str))}")


# The request policy changes what is answered: vary it too.
POLICIES = [
    {},
    {"trusted_proxies": ["127.0.0.1"]},
    {"domains": ["example.com"], "max_subscriptions_per_presentity": 2},
    {"max_publications_per_presentity": 1, "inbox_size": 1, "max_in_flight": 1},
]


@FUZZ
@given(st.lists(HOSTILE, min_size=1, max_size=6), st.sampled_from(POLICIES))
def test_hostile_sequences_are_answered_once_or_dropped(
    inputs: list[bytes], policy: dict[str, object]
) -> None:
    for data in inputs:
        TRIED[f"handler-{kind_of(data)}"] += 1
    answers = run_in_harness(inputs, harness_config(max_body_size=4096, **policy))
    check_sequence(inputs, answers)


# In-dialog requests need a real dialog and a real entity tag: establish both,
# then send hostile refreshes and conditional PUBLISHes built from them.
TO_TAG = b"{TO_TAG}"
ETAG = b"{ETAG}"


@st.composite
def in_dialog_requests(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(0, 10**6))
    if draw(st.booleans()):
        method = "SUBSCRIBE"
        headers = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKd{n};rport"),
            ("From", f"<{BOB}>;tag=" + draw(st.sampled_from(["wf", "wf", "other", ""]))),
            ("To", f"<{ALICE}>;tag=" + draw(st.sampled_from(["{TO_TAG}"] * 3 + ["x", ""]))),
            ("Call-ID", draw(st.sampled_from(["dialog@fuzz"] * 3 + ["other@fuzz"]))),
            ("CSeq", draw(st.sampled_from(["{CSEQ} {m}"] * 3 + CSEQS_EVIL)).replace("{m}", method)),
            ("Event", draw(st.sampled_from(["presence"] * 3 + EVENTS))),
            ("Expires", draw(st.sampled_from(["600"] * 2 + EXPIRES))),
            ("Contact", draw(st.sampled_from(CONTACTS))),
        ]
        body = b""
    else:
        headers = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKp{n};rport"),
            ("From", f"<{ALICE}>;tag=p{n}"),
            ("To", f"<{ALICE}>"),
            ("Call-ID", f"p{n}@fuzz"),
            ("CSeq", f"{n % 100 + 1} PUBLISH"),
            ("Event", draw(st.sampled_from(["presence"] * 3 + EVENTS))),
            ("Expires", draw(st.sampled_from(["600"] * 2 + EXPIRES))),
            ("SIP-If-Match", draw(st.sampled_from(["{ETAG}"] * 3 + ["", "nope", "\xff"]))),
        ]
        body = draw(st.sampled_from(BODIES))
        if body:
            headers.append(("Content-Type", draw(st.sampled_from(CONTENT_TYPES))))
        method = "PUBLISH"
    headers += draw(st.lists(st.sampled_from(EXTRA_HEADERS), max_size=2))
    headers.append(("Content-Length", str(len(body))))
    lines = [f"{method} {ALICE} SIP/2.0", *(f"{k}: {v}" for k, v in headers)]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
    return draw(st.one_of(st.just(data), st.just(data), _mutate(st.just(data))))


def _in_dialog_run(templates: list[bytes]) -> tuple[list[bytes], list[list[bytes]]]:
    harness = Harness(harness_config(max_body_size=4096))
    errors = ErrorLog()
    logger = logging.getLogger("presencex")
    logger.addHandler(errors)
    subscribe = request_bytes(
        "SUBSCRIBE",
        ALICE,
        from_uri=BOB,
        to_uri=ALICE,
        from_tag="wf",
        call_id="dialog@fuzz",
        expires=600,
    )
    publish = request_bytes(
        "PUBLISH",
        ALICE,
        from_uri=ALICE,
        to_uri=ALICE,
        content_type="application/pidf+xml",
        body=pidf(ALICE, "t1"),
        expires=600,
    )

    async def main() -> tuple[list[bytes], list[list[bytes]]]:
        inputs: list[bytes] = []
        answers: list[list[bytes]] = []
        with trio.fail_after(SETTLE * (len(templates) + 8)):
            async with trio.open_nursery() as nursery:
                await nursery.start(harness.router.serve)
                await nursery.start(harness.hub.serve_timers)
                (sub_ok,) = await harness.feed(subscribe)
                (pub_ok,) = await harness.feed(publish)
                sub = parse_message(sub_ok)
                pub = parse_message(pub_ok)
                assert isinstance(sub, Response)
                assert sub.status == 200
                assert isinstance(pub, Response)
                assert pub.status == 200
                to_tag = (sub.to.tag or "").encode()
                etag = (pub.headers.get("SIP-ETag") or "").encode()
                for cseq, template in enumerate(templates, start=2):
                    data = template.replace(TO_TAG, to_tag).replace(ETAG, etag)
                    data = data.replace(b"{CSEQ}", str(cseq).encode())
                    inputs.append(data)
                    answers.append(await harness.feed(data))
                # Service goes on: a fresh publication and subscription.
                answers.append(await harness.feed(publish.replace(b"z9hG4bK", b"z9hG4bKa")))
                fresh = subscribe.replace(b"dialog@", b"after@").replace(b"z9hG4bK", b"z9hG4bKa")
                answers.append(await harness.feed(fresh))
                nursery.cancel_scope.cancel()
        return inputs, answers

    try:
        with real_time_limit(REAL_TIME_LIMIT):
            result = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logger.removeHandler(errors)
    assert not errors.records, f"a handler raised: {errors.records[:3]}"
    assert harness.router.statistics().errors_500 == 0
    return result


@FUZZ
@given(st.lists(in_dialog_requests(), min_size=1, max_size=6))
def test_hostile_in_dialog_refreshes_and_conditional_publishes(templates: list[bytes]) -> None:
    TRIED["handler-in-dialog"] += len(templates)
    inputs, answers = _in_dialog_run(templates)
    check_sequence(inputs, answers[: len(inputs)])
    assert status_of(answers[-2][0])[0] == 200
    assert status_of(answers[-1][0])[0] == 200


# -- a real server process ----------------------------------------------------

# UDP carries at most 65,507 bytes of payload over IPv4.
UDP_MAX = 65_507


async def test_corpus_over_udp_and_tcp_to_a_real_server(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        assert server.proc is not None
        udp = await open_udp_peer(server.port)
        sent_udp = [data for data in CORPUS.values() if 0 < len(data) <= UDP_MAX]
        # Answers come back to us when the Via asks for rport (else they go
        # to the Via's port); each corpus file's Call-ID is its name.
        expected = {
            name: int(name.split("-")[0])
            for name, data in CORPUS.items()
            if name.split("-")[0].isdigit()
            and 0 < len(data) <= UDP_MAX
            and b";rport" in data
            and f"{name}@corpus".encode() in data
        }
        got: dict[str, int] = {}

        async def receive_answers(cancel: trio.CancelScope) -> None:
            # Read while sending: a burst of answers would overflow the
            # socket's receive buffer and look like drops.
            while True:
                with trio.move_on_after(1) as quiet:
                    raw, _ = await udp.sock.recvfrom(65535)
                if quiet.cancelled_caught and sending_done.is_set():
                    cancel.cancel()  # a second without an answer: all are in
                    return
                if not quiet.cancelled_caught and raw.startswith(b"SIP/2.0 "):
                    status, reason = status_of(raw)
                    assert status in ALLOWED, (status, reason)
                    assert reason.strip(), status
                    call_id = re.search(rb"\r\nCall-ID: ([^\r\n@]*)@corpus", raw)
                    got[call_id.group(1).decode() if call_id else f"?{len(got)}"] = status

        sending_done = trio.Event()
        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive_answers, nursery.cancel_scope)
                for data in sent_udp:
                    await udp.send(data)
                    await trio.sleep(0.001)
                sending_done.set()
        # Every answerable datagram with rport was answered, with the status
        # its name promises.
        wrong = {
            n: (s, got.get(n))
            for n, s in expected.items()
            if got.get(n) != s and n not in KNOWN_BUGS
        }
        assert not wrong, wrong

        tcp_got: dict[str, list[int]] = {}

        async def over_tcp(name: str, data: bytes) -> None:
            """One connection carrying ``data``; the statuses it is answered.
            Frames are read raw: a 400 copies the bad header it names."""
            answers = tcp_got[name] = []
            framer = StreamFramer()
            with trio.move_on_after(2):
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
                async with stream:
                    with contextlib.suppress(trio.BrokenResourceError):
                        await stream.send_all(data)
                    with contextlib.suppress(trio.BrokenResourceError):
                        while chunk := await stream.receive_some(65536):
                            for frame in framer.feed(chunk):
                                if frame.startswith(b"SIP/2.0 "):
                                    status, reason = status_of(frame)
                                    assert status in ALLOWED, frame
                                    assert reason.strip(), frame
                                    answers.append(status)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for name, data in CORPUS.items():
                    nursery.start_soon(over_tcp, name, data)
        assert server.proc.poll() is None, "the server died"
        # On a stream the same answers, except for what cannot be framed (a bad
        # or missing Content-Length, an oversized message: the framing error is
        # answered where the head says where to, then the connection is
        # closed, RFC 3261 §18.3) or is not whole yet (the server waits).
        tcp_wrong = {}
        for name, statuses in tcp_got.items():
            expect = name.split("-")[0]
            framer = StreamFramer()
            framed = framer.feed(CORPUS[name])
            failure = framer.failure
            if failure is not None:
                answer = error_response_bytes(framer.failed_head, failure.status, failure.reason)
                wanted = statuses[: len(framed)] + ([failure.status] if answer else [])
            elif expect == "drop" or not framed:
                wanted = []
            elif expect.isdigit():
                wanted = [int(expect)]
            else:
                wanted = statuses[:1]
            if statuses != wanted and name not in KNOWN_BUGS:
                tcp_wrong[name] = statuses
        assert not tcp_wrong, tcp_wrong
        TRIED["real-udp"] += len(sent_udp)
        TRIED["real-tcp"] += len(CORPUS)
        print(
            f"\nreal server: {len(sent_udp)} datagrams, {len(got)} answered "
            f"{dict(sorted(Counter(got.values()).items()))}; "
            f"{len(CORPUS)} TCP connections, "
            f"{sum(map(len, tcp_got.values()))} answered "
            f"{dict(sorted(Counter(s for a in tcp_got.values() for s in a).items()))}"
        )

        # Normal service afterwards, on a fresh peer.
        peer = await open_udp_peer(server.port)
        via = f"SIP/2.0/UDP 127.0.0.1:{peer.port};rport"
        await peer.send(
            request_bytes(
                "PUBLISH",
                ALICE,
                from_uri=ALICE,
                to_uri=ALICE,
                content_type="application/pidf+xml",
                body=pidf(ALICE, "after"),
                expires=60,
                via=via,
            )
        )
        (published,), _ = await peer.collect(responses=1)
        assert published.status == 200
        await peer.send(
            request_bytes(
                "SUBSCRIBE",
                ALICE,
                from_uri=BOB,
                to_uri=ALICE,
                expires=60,
                via=via,
                contact=f"sip:bob@127.0.0.1:{peer.port}",
            )
        )
        (subscribed,), (notify,) = await peer.collect(responses=1, notifies=1)
        assert subscribed.status == 200
        assert b"after" in notify.body
        assert server.proc.poll() is None


def test_a_broken_request_after_keepalive_crlfs_is_still_answered() -> None:
    """parse_message skips CRLFs before the start line; the 400 built from the
    raw lines must see the same request, not a blank first line."""
    bad = request_bytes("SUBSCRIBE", ALICE, from_uri=BOB, to_uri=ALICE, expires=60).replace(
        b"CSeq: 1 SUBSCRIBE", b"CSeq: x SUBSCRIBE"
    )
    answer = error_response_bytes(b"\r\n\r\n" + bad, 400, "Bad CSeq header")
    assert answer is not None
    assert answer.startswith(b"SIP/2.0 400 Bad CSeq header\r\n")
