"""Hostile XML wherever a document enters (issue 7, item 2): PUBLISH bodies
(PIDF, dialog-info), XCAP documents (pres-rules through ``parse_rules``,
pidf-manipulation through ``validate_pidf``) and the one parser under them.

Every case is refused (or, for what XML itself allows, parsed as inert text)
quickly, without reading the secret file we create (its content appears in
no result, reason, response or log), without a connection reaching the
listener we open on 127.0.0.1 (external DTDs and entities point at it), and
without growing memory: tracemalloc's peak for Python objects, and the
process's peak RSS (libxml2 allocates in C, where tracemalloc cannot see) in
a fresh interpreter running the whole battery.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from presencex.auth.rules import evaluate, parse_datetime, parse_rules
from presencex.auth.transform import filter_pidf
from presencex.bodies.dialoginfo import validate_dialoginfo
from presencex.bodies.pidf import aggregate_pidf, closed_pidf, pidf_sphere, validate_pidf
from presencex.bodies.watcherinfo import parse_watcherinfo
from presencex.bodies.xmlparse import MAX_BODY_BYTES, MAX_DEPTH, MAX_ELEMENTS, BodyError, parse_xml
from presencex.sip.message import Request, Response
from tests.integration.server import TcpPeer, open_udp_peer, running_server
from tests.sipmsg import request_bytes

SECRET = "TOP-SECRET-7f3a9c"
# Examples per property test: PRESENCEX_FUZZ_EXAMPLES, as in test_sip_fuzz.
EXAMPLES = int(os.environ.get("PRESENCEX_FUZZ_EXAMPLES", "60"))
ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"

PARSERS: dict[str, Callable[[bytes], object]] = {
    "xml": parse_xml,
    "pidf": validate_pidf,  # PUBLISH presence bodies
    "dialog-info": validate_dialoginfo,  # PUBLISH dialog bodies
    "pres-rules": parse_rules,  # XCAP, RFC 5025
    "pidf-manipulation": validate_pidf,  # XCAP, RFC 4827
    "watcherinfo": parse_watcherinfo,
}
ROOTS = {
    "xml": (b"presence", b'<presence xmlns="urn:ietf:params:xml:ns:pidf">{x}</presence>'),
    "pidf": (
        b"presence",
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">'
        b'<tuple id="t"><status><basic>open</basic></status><note>{x}</note></tuple></presence>',
    ),
    "dialog-info": (
        b"dialog-info",
        b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" '
        b'entity="sip:alice@example.com"><dialog id="d"><state>{x}confirmed</state></dialog>'
        b"</dialog-info>",
    ),
    "pres-rules": (
        b"cr:ruleset",
        b'<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy" '
        b'xmlns:pr="urn:ietf:params:xml:ns:pres-rules"><cr:rule id="r"><cr:conditions>'
        b'<cr:identity><cr:one id="sip:bob@example.com"/></cr:identity></cr:conditions>'
        b"<cr:actions><pr:sub-handling>allow{x}</pr:sub-handling></cr:actions></cr:rule>"
        b"</cr:ruleset>",
    ),
    "pidf-manipulation": (
        b"presence",
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">'
        b'<tuple id="m"><status><basic>open</basic></status><note>{x}</note></tuple></presence>',
    ),
    "watcherinfo": (
        b"watcherinfo",
        b'<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="0" state="full">'
        b"{x}</watcherinfo>",
    ),
}
# Refused within this, each (the largest legal body parses in milliseconds).
TIME_LIMIT = 1.0
# Python-side allocation beyond the document itself, per case.
TRACED_LIMIT = 4 * 1024 * 1024
# Peak RSS growth of a fresh interpreter over the whole battery. A billion
# laughs expanded would need gigabytes; a DOCTYPE-free 256 KiB tree of small
# elements is refused at 10,000 elements.
RSS_LIMIT_KB = 64 * 1024

# Cases XML allows to parse: nothing is fetched or included, the document
# is plain elements; the others must be refused.
MAY_PARSE = {
    "xinclude",
    "stylesheet-pi",
    "schema-location",
    "char-refs",
    "many-attributes",
    "many-namespaces",
}


def hostile_documents(kind: str, secret: Path, port: int) -> dict[str, bytes]:
    name, root = ROOTS[kind]

    def body(x: bytes) -> bytes:
        return root.replace(b"{x}", x)

    path = str(secret).encode()
    http = b"http://127.0.0.1:%d" % port
    laughs = b'<!ENTITY l0 "lol">' + b"".join(
        b'<!ENTITY l%d "%s">' % (i, b"&l%d;" % (i - 1) * 10) for i in range(1, 10)
    )
    big = b"A" * 50_000
    deep_ok = MAX_BODY_BYTES // 8
    return {
        "xxe-file": b'<?xml version="1.0"?><!DOCTYPE %s [<!ENTITY x SYSTEM "file://%s">]>'
        % (name, path)
        + body(b"&x;"),
        "xxe-bare-path": b'<!DOCTYPE %s [<!ENTITY x SYSTEM "%s">]>' % (name, path) + body(b"&x;"),
        "xxe-http": b'<!DOCTYPE %s [<!ENTITY x SYSTEM "%s/entity">]>' % (name, http) + body(b"&x;"),
        "external-dtd-system": b'<!DOCTYPE %s SYSTEM "%s/evil.dtd">' % (name, http) + body(b""),
        "external-dtd-public": b'<!DOCTYPE %s PUBLIC "-//EVIL//X" "%s/p.dtd">' % (name, http)
        + body(b""),
        "parameter-entity-file": b'<!DOCTYPE %s [<!ENTITY %% p SYSTEM "file://%s"> %%p;]>'
        % (name, path)
        + body(b""),
        "parameter-entity-oob": b'<!DOCTYPE %s [<!ENTITY %% d SYSTEM "%s/oob.dtd"> %%d; %%e;]>'
        % (name, http)
        + body(b"&exfil;"),
        "billion-laughs": b"<!DOCTYPE %s [%s]>" % (name, laughs) + body(b"&l9;"),
        "quadratic-blowup": b'<!DOCTYPE %s [<!ENTITY a "%s">]>' % (name, big)
        + body(b"&a;" * 3_000),
        "doctype-only": b"<!DOCTYPE %s>" % name + body(b""),
        "doctype-after-bom": b'\xef\xbb\xbf<!DOCTYPE %s [<!ENTITY x SYSTEM "file://%s">]>'
        % (name, path)
        + body(b"&x;"),
        "doctype-utf16": (
            f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE {name.decode()} '
            f'[<!ENTITY x SYSTEM "file://{secret}">]>'
        ).encode("utf-16")
        + body(b"&x;").decode().encode("utf-16")[2:],
        "doctype-utf7": b'<?xml version="1.0" encoding="UTF-7"?>'
        b"+ADw-!DOCTYPE %s +AFs-+ADw-!ENTITY x SYSTEM +ACI-file://%s+ACI-+AD4-+AF0-+AD4-"
        % (name, path)
        + body(b"&x;"),
        "doctype-in-cdata": body(b"<![CDATA[<!DOCTYPE x>]]>"),
        "undefined-entity": body(b"&undefined;"),
        "xinclude": body(
            b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file://%s" '
            b'parse="text"/>' % path
        ),
        "stylesheet-pi": b'<?xml-stylesheet type="text/xsl" href="%s/x.xsl"?>' % http + body(b""),
        "schema-location": body(b"").replace(
            b">",
            b' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            b'xsi:schemaLocation="urn:x %s/s.xsd">' % http,
            1,
        ),
        "char-refs": body(b"&#x1F600;&#65;&lt;&amp;"),
        "nul-char-ref": body(b"&#0;"),
        "deep-nesting-huge": body(b"<a>" * 100_000 + b"</a>" * 100_000),
        "deep-nesting-in-size": body(b"<a>" * (deep_ok // 7) + b"</a>" * (deep_ok // 7)),
        "depth-just-over": body(b"<a>" * MAX_DEPTH + b"</a>" * MAX_DEPTH),
        "huge-tree": body(b"<a/>" * 200_000),
        "wide-tree-in-size": body(b"<a/>" * (MAX_ELEMENTS + 1)),
        "huge-attribute": body(b'<a b="' + b"x" * 3_000_000 + b'"/>'),
        "many-attributes": body(
            b"<a " + b" ".join(b'a%d="1"' % i for i in range(MAX_BODY_BYTES // 12)) + b"/>"
        ),
        "many-namespaces": body(
            b"<a "
            + b" ".join(b'xmlns:p%d="urn:%d"' % (i, i) for i in range(MAX_BODY_BYTES // 24))
            + b"/>"
        ),
        "long-name": body(b"<" + b"n" * (MAX_BODY_BYTES - 2_000) + b"/>"),
        "not-utf8": body(b"\xff\xfe\xe9"),
        "empty": b"",
        "truncated": body(b"")[:-10],
    }


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP listener on loopback that nothing may connect to."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def assert_nobody_connected(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        sock.accept()


@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_hostile_documents_are_refused_without_files_network_or_memory(
    kind: str, secret: Path, listener: socket.socket
) -> None:
    parse = PARSERS[kind]
    port = listener.getsockname()[1]
    outcomes: dict[str, str] = {}
    for case, document in hostile_documents(kind, secret, port).items():
        tracemalloc.start()
        started = time.perf_counter()
        try:
            result: object = parse(document)
            outcome = "parsed"
        except BodyError as exc:
            result = None
            outcome = f"refused: {exc}"
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        outcomes[case] = outcome
        assert SECRET not in outcome, f"{kind}/{case} leaked the file in its reason"
        assert SECRET not in repr(result), f"{kind}/{case} read the file"
        if isinstance(result, etree._Element):
            assert SECRET.encode() not in etree.tostring(result)
        assert elapsed < TIME_LIMIT, f"{kind}/{case} took {elapsed:.2f} s"
        assert peak < TRACED_LIMIT + 2 * len(document), f"{kind}/{case} traced {peak} B"
        if case not in MAY_PARSE:
            assert outcome.startswith("refused"), f"{kind}/{case} was accepted"
        if outcome.startswith("refused"):
            reason = outcome.removeprefix("refused: ")
            assert reason.strip(), case
            assert reason.isprintable(), reason
            assert len(reason) <= 160, reason
    assert_nobody_connected(listener)
    doctype = [c for c in outcomes if "DOCTYPE not allowed" in outcomes[c]]
    assert {"xxe-file", "billion-laughs", "external-dtd-system"} <= set(doctype)


def test_a_dtd_is_refused_before_libxml2_sees_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The byte scan is the first lock: no DOCTYPE reaches the parser at all,
    so even a document libxml2 would mishandle is never given to it."""
    calls: list[bytes] = []
    real = etree.fromstring

    def spy(data: bytes, parser: etree.XMLParser | None = None) -> etree._Element:
        calls.append(data)
        return real(data, parser)

    # xmlparse calls lxml's module function: the spy sees every call.
    monkeypatch.setattr(etree, "fromstring", spy)
    with pytest.raises(BodyError, match="DOCTYPE"):
        parse_xml(b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>')
    assert calls == []
    parse_xml(b"<a/>")
    assert calls == [b"<a/>"]  # the spy does see what gets through


# The whole battery in a fresh interpreter: its peak RSS (C allocations
# included) must stay near what importing the parsers costs.
_BATTERY = """
import json, resource, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.security.test_xml_hostile import PARSERS, hostile_documents
from presencex.bodies.xmlparse import BodyError
secret, port = Path({secret!r}), {port}
docs = {{k: hostile_documents(k, secret, port) for k in PARSERS}}
for kind, parse in PARSERS.items():  # warm up: parsers, XPath, caches
    try:
        parse(docs[kind]["char-refs"])
    except BodyError:
        pass
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cases = 0
for _ in range(3):
    for kind, parse in PARSERS.items():
        for document in docs[kind].values():
            cases += 1
            try:
                parse(document)
            except BodyError:
                pass
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"before": before, "after": after, "cases": cases}}))
"""


def test_peak_rss_stays_bounded_across_the_battery(secret: Path, listener: socket.socket) -> None:
    root = str(Path(__file__).parents[2])
    code = _BATTERY.format(root=root, secret=str(secret), port=listener.getsockname()[1])
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    growth = figures["after"] - figures["before"]
    print(f"\nXML battery: {figures['cases']} documents, peak RSS grew {growth} KB")
    assert growth < RSS_LIMIT_KB, figures
    assert SECRET not in result.stdout + result.stderr
    assert_nobody_connected(listener)


# -- through a real server ------------------------------------------------------


def _publish(port: int, body: bytes, event: str, content_type: str, transport: str) -> bytes:
    return request_bytes(
        "PUBLISH",
        ALICE,
        from_uri=ALICE,
        to_uri=ALICE,
        event=event,
        body=body,
        content_type=content_type,
        expires=60,
        via=f"SIP/2.0/{transport} 127.0.0.1:{port};rport",
    )


async def test_publish_with_hostile_xml_gets_400_with_a_reason_over_udp_and_tcp(
    tmp_path: Path, secret: Path, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    cases = [
        ("presence", "application/pidf+xml", hostile_documents("pidf", secret, port)),
        ("dialog", "application/dialog-info+xml", hostile_documents("dialog-info", secret, port)),
    ]
    with running_server(tmp_path) as server:
        udp = await open_udp_peer(server.port)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            tcp = TcpPeer(stream)
            answered = 0
            for event, content_type, documents in cases:
                for name in ("xxe-file", "parameter-entity-oob", "billion-laughs", "xxe-http"):
                    for transport, peer in (("UDP", udp), ("TCP", tcp)):
                        await peer.send(
                            _publish(peer.port, documents[name], event, content_type, transport)
                        )
                        response = await peer.receive(within=5)
                        assert isinstance(response, Response)
                        assert response.status == 400, (name, response.status, response.reason)
                        assert "DOCTYPE" in response.reason, response.reason
                        assert SECRET not in response.reason
                        answered += 1
            assert answered == 16
        assert server.proc is not None
        assert server.proc.poll() is None
        assert SECRET not in server.log_path.read_text(errors="replace")
    assert_nobody_connected(listener)


def _put_xcap(db: Path, doc_type: int, auid: str, document: bytes) -> None:
    """Write the row as an integrated XCAP server does (2: pres-rules,
    16: pidf-manipulation; Kamailio's xcap table)."""
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM xcap WHERE username = 'alice' AND doc_type = ?", (doc_type,))
        conn.execute(
            "INSERT INTO xcap (username, domain, doc, doc_type, etag, source, doc_uri, port)"
            " VALUES ('alice', 'example.com', ?, ?, ?, 1, ?, 0)",
            (
                document,
                doc_type,
                f"e-{time.monotonic_ns()}",
                f"/xcap-root/{auid}/users/sip:alice@example.com/index",
            ),
        )


CTL = [sys.executable, "-m", "presencex", "ctl"]


def _refresh(sock: Path) -> None:
    result = subprocess.run(
        [*CTL, "--socket", str(sock), "refreshWatchers", ALICE, "presence", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


async def test_hostile_xcap_documents_in_a_real_server(
    tmp_path: Path, secret: Path, listener: socket.socket
) -> None:
    """Hostile pres-rules and pidf-manipulation documents in the xcap table,
    announced with refreshWatchers: the watcher is not let in by a broken
    document, nothing is read or fetched, and a good document then works."""
    port = listener.getsockname()[1]
    config = "force_active = 0\nintegrated_xcap_server = 1\npidf_manipulation = 1\n"
    rules = hostile_documents("pres-rules", secret, port)
    manipulation = hostile_documents("pidf-manipulation", secret, port)
    with running_server(tmp_path, config) as server:
        ctl = tmp_path / "ctl.sock"
        _put_xcap(server.db_path, 2, "pres-rules", rules["xxe-file"])
        _put_xcap(server.db_path, 16, "pidf-manipulation", manipulation["xxe-file"])
        bob = await open_udp_peer(server.port)
        await bob.send(
            request_bytes(
                "SUBSCRIBE",
                ALICE,
                from_uri=BOB,
                to_uri=ALICE,
                expires=600,
                contact=f"sip:bob@127.0.0.1:{bob.port}",
                via=f"SIP/2.0/UDP 127.0.0.1:{bob.port};rport",
            )
        )
        (ok,), (first,) = await bob.collect(responses=1, notifies=1)
        assert ok.status == 200
        assert (first.headers.get("Subscription-State") or "").startswith("pending")
        for name in ("billion-laughs", "parameter-entity-oob", "external-dtd-system"):
            _put_xcap(server.db_path, 2, "pres-rules", rules[name])
            _put_xcap(server.db_path, 16, "pidf-manipulation", manipulation[name])
            _refresh(ctl)
        await trio.sleep(0.5)
        # Whatever came meanwhile: never active, never the secret.
        with trio.move_on_after(1):
            while True:
                msg = await bob.receive(within=1)
                assert SECRET.encode() not in msg.body
                if isinstance(msg, Request):
                    state = msg.headers.get("Subscription-State") or ""
                    assert not state.startswith("active"), state
                    await bob.answer(msg)
        # A good document is taken at once.
        _put_xcap(
            server.db_path,
            2,
            "pres-rules",
            rules["char-refs"].replace(b"&#x1F600;&#65;&lt;&amp;", b""),
        )
        _refresh(ctl)
        _, (notify,) = await bob.collect(notifies=1, within=5)
        assert (notify.headers.get("Subscription-State") or "").startswith("active")
        assert SECRET.encode() not in notify.body
        assert server.proc is not None
        assert server.proc.poll() is None
        assert SECRET not in server.log_path.read_text(errors="replace")
    assert_nobody_connected(listener)


# -- documents that pass validation, through everything a NOTIFY does ----------

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
IDS = ["t", "p", "d", "_x", "a.b-c", "\u00e9t\u00e9", "t" * 300, "n1"]
TEXTS = ["", "open", " closed ", "x" * 2000, "\u202e\u0000".replace("\u0000", ""), "&lt;&amp;"]
PREFIXES = ["dm", "rpid", "x", "p", "ns0"]
URIS = [DM_NS, RPID_NS, PIDF_NS, "urn:example:ext", "urn:other"]


@st.composite
def pidf_documents(draw: st.DrawFn) -> bytes:
    """PIDF with the data model, RPID and extensions, prefixes rebound at
    will: what phones publish and what validation lets through."""
    bindings = draw(st.dictionaries(st.sampled_from(PREFIXES), st.sampled_from(URIS), max_size=4))
    bindings.setdefault("dm", DM_NS)
    bindings.setdefault("rpid", RPID_NS)
    pick = st.sampled_from(sorted(bindings))
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        ident = draw(st.sampled_from(IDS))
        kind = draw(st.integers(0, 4))
        text = draw(st.sampled_from(TEXTS))
        if kind == 0:
            basic = draw(st.sampled_from(["open", "closed", " open "]))
            parts.append(
                f'<tuple id="{ident}"><status><basic>{basic}</basic></status>'
                f'<contact priority="{draw(st.sampled_from(["0.5", "abc", ""]))}">sip:d@h</contact>'
                f'<note xml:lang="{draw(st.sampled_from(["en", "", "x" * 50]))}">{text}</note>'
                f"<timestamp>{draw(st.sampled_from(['2024-01-01T00:00:00Z', 'never']))}</timestamp>"
                "</tuple>"
            )
        elif kind == 1:
            p = draw(pick)
            sphere = draw(st.sampled_from(["work", "", "<rpid:home/>", "<x:y xmlns:x='urn:y'/>"]))
            parts.append(
                f'<{p}:person id="{ident}"><rpid:activities><rpid:meeting/>'
                f"</rpid:activities><rpid:sphere>{sphere}</rpid:sphere></{p}:person>"
            )
        elif kind == 2:
            p = draw(pick)
            parts.append(
                f'<{p}:device id="{ident}"><{p}:deviceID>urn:x:{text[:20]}</{p}:deviceID>'
                f"</{p}:device>"
            )
        elif kind == 3:
            parts.append(f'<note xml:lang="{draw(st.sampled_from(["en", "de"]))}">{text}</note>')
        else:
            p = draw(pick)
            attribute = draw(st.sampled_from(["", f' id="{ident}"', f' {p}:a="1"']))
            parts.append(f"<{p}:ext{attribute}>{text}<{p}:inner/></{p}:ext>")
    declarations = " ".join(f'xmlns:{k}="{v}"' for k, v in sorted(bindings.items()))
    return (
        f'<presence xmlns="{PIDF_NS}" {declarations} entity="sip:alice@example.com">'
        + "".join(parts)
        + "</presence>"
    ).encode()


TRANSFORMATIONS = [
    "",
    "<pr:provide-services><pr:all-services/></pr:provide-services>",
    "<pr:provide-persons><pr:all-persons/></pr:provide-persons>"
    "<pr:provide-activities>true</pr:provide-activities>"
    "<pr:provide-sphere>true</pr:provide-sphere>",
    "<pr:provide-devices><pr:deviceID>urn:x:open</pr:deviceID></pr:provide-devices>",
    "<pr:provide-services><pr:occurrence-id>t</pr:occurrence-id>"
    "<pr:service-uri>sip:d@h</pr:service-uri></pr:provide-services>"
    "<pr:provide-note>true</pr:provide-note><pr:provide-all-attributes/>",
    '<pr:provide-unknown-attribute ns="urn:example:ext" name="ext">true'
    "</pr:provide-unknown-attribute>",
]


def _rules(transformations: str, validity: str = "") -> bytes:
    return (
        '<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy" '
        'xmlns:pr="urn:ietf:params:xml:ns:pres-rules"><cr:rule id="r"><cr:conditions>'
        f"{validity}</cr:conditions><cr:actions><pr:sub-handling>allow</pr:sub-handling>"
        f"</cr:actions><cr:transformations>{transformations}</cr:transformations></cr:rule>"
        "</cr:ruleset>"
    ).encode()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(pidf_documents(), min_size=1, max_size=4),
    st.sampled_from(TRANSFORMATIONS),
)
def test_accepted_publications_go_through_aggregation_and_filtering(
    documents: list[bytes], transformations: str
) -> None:
    """What validate_pidf accepts, aggregate_pidf, filter_pidf, closed_pidf
    and pidf_sphere take without raising: a failure there is a 500 for the
    publisher and no NOTIFY for any watcher."""
    accepted = []
    for document in documents:
        with contextlib.suppress(BodyError):
            validate_pidf(document)
            accepted.append(document)
            closed_pidf(document)
    aggregate = aggregate_pidf(accepted, ALICE)
    if aggregate is None:
        assert not accepted
        return
    validate_pidf(aggregate)
    pidf_sphere(aggregate)
    rules = parse_rules(_rules(transformations))
    decision = evaluate(rules, watcher=BOB, presentity=ALICE, now=0.0, sphere=None)
    filter_pidf(aggregate, decision.transformations)


def test_an_aggregate_larger_than_one_body_is_still_filtered() -> None:
    """Regression: five publications of 63 KB aggregate to 316 KB, over the
    256 KiB a single body may be; filter_pidf refused it ("document too
    large"), so every NOTIFY of that presentity to a watcher under rules
    failed, and pidf_sphere called the presentity sphere-less."""
    documents = [
        (
            f'<presence xmlns="{PIDF_NS}" xmlns:dm="{DM_NS}" xmlns:rpid="{RPID_NS}" '
            f'entity="{ALICE}">'
            + "".join(
                f'<tuple id="t{i}_{j}"><status><basic>open</basic></status>'
                f"<note>{'x' * 500}</note></tuple>"
                for j in range(110)
            )
            + f'<dm:person id="p{i}"><rpid:sphere>work</rpid:sphere></dm:person></presence>'
        ).encode()
        for i in range(5)
    ]
    for document in documents:
        validate_pidf(document)
    aggregate = aggregate_pidf(documents, ALICE)
    assert aggregate is not None
    assert len(aggregate) > MAX_BODY_BYTES
    services = parse_rules(_rules(TRANSFORMATIONS[1]))
    decision = evaluate(services, watcher=BOB, presentity=ALICE, now=0.0, sphere=None)
    filtered = filter_pidf(aggregate, decision.transformations)
    assert filtered.count(b"<tuple ") == 550
    assert pidf_sphere(aggregate) == "work"


def test_validity_ending_at_the_last_midnight_is_not_a_crash() -> None:
    """Regression: until "9999-12-31T24:00:00Z" (midnight ending the last
    day, a "for ever" some clients write) raised OverflowError out of
    parse_rules instead of a value or BodyError, so the actor dropped the
    refresh and the presentity's watchers stayed pending."""
    assert parse_datetime("9999-12-31T24:00:00Z") == parse_datetime("9999-12-31T00:00:00Z") + 86400
    validity = (
        "<cr:validity><cr:from>2000-01-01T00:00:00Z</cr:from>"
        "<cr:until>9999-12-31T24:00:00-14:00</cr:until></cr:validity>"
    )
    rules = parse_rules(_rules("", validity))
    decision = evaluate(rules, watcher=BOB, presentity=ALICE, now=time.time(), sphere=None)
    assert decision.sub_handling == "allow"


DATETIMES = [
    "9999-12-31T24:00:00Z",
    "9999-12-31T24:00:00+14:00",
    "9999-12-31T24:00:00-14:00",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-14:00",
    "0000-01-01T00:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-01-01T24:00:00.5Z",
    "2024-01-01T23:59:60Z",
    "2024-01-01T00:00:00+14:01",
    "2024-01-01T00:00:00." + "9" * 500 + "Z",
    "2024-01-01T00:00:00",
    "\u0662\u0660\u0662\u0664-01-01T00:00:00Z",
]


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.sampled_from(DATETIMES) | st.text(max_size=40),
    st.sampled_from(DATETIMES) | st.text(max_size=40),
    st.floats(min_value=-1e12, max_value=1e13),
)
def test_validity_values_parse_or_are_refused(start: str, end: str, now: float) -> None:
    validity = f"<cr:validity><cr:from>{escape(start)}</cr:from><cr:until>{escape(end)}</cr:until></cr:validity>"
    try:
        rules = parse_rules(_rules("", validity))
    except BodyError:
        return
    evaluate(rules, watcher=BOB, presentity=ALICE, now=now, sphere=None)
