"""Loading state at start, Kamailio-written rows, the xcap table."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from presencex.store.load import (
    PIDF_MANIPULATION,
    PRES_RULES,
    RESOURCE_LISTS,
    LoadedState,
    load_state,
    parse_db_url,
    read_xcap,
)
from presencex.store.records import DialogKey, Subscription
from presencex.store.schema import ensure_schema

from .store_factories import make_publication

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/presencex.db", "/var/lib/presencex.db"),
        ("sqlite:////var/lib/presencex.db", "/var/lib/presencex.db"),
        ("sqlite:///presencex.db", "presencex.db"),
        ("sqlite:///./data/presencex.db", "./data/presencex.db"),
        ("sqlite://data/presencex.db", "data/presencex.db"),
    ],
)
def test_parse_db_url(url: str, path: str) -> None:
    assert parse_db_url(url) == path


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite:///",
        "sqlite:///var/lib/",
        "mysql://kamailio:pw@localhost/kamailio",
        "postgres:///presencex",
        "/var/lib/presencex.db",
        "sqlite:///presencex.db?mode=ro",
    ],
)
def test_parse_db_url_refuses_and_says_what_is_allowed(url: str) -> None:
    with pytest.raises(ValueError, match=r"sqlite:///NAME\.db"):
        parse_db_url(url)


def kamailio_rows(path: str) -> None:
    """Rows as Kamailio's presence module writes them (no px_* columns named)."""
    conn = sqlite3.connect(path)
    try:
        conn.executemany(
            "INSERT INTO presentity (username, domain, event, etag, expires, received_time,"
            " body, sender, priority, ruid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
            [
                (
                    "carol",
                    "example.com",
                    "presence",
                    "a",
                    NOW + 60,
                    1_700_000_002,
                    b"<b/>",
                    "",
                    "r1",
                ),
                (
                    "carol",
                    "example.com",
                    "presence",
                    "b",
                    NOW + 60,
                    1_700_000_001,
                    b"<a/>",
                    "",
                    "r2",
                ),
                (
                    "carol",
                    "example.com",
                    "presence",
                    "old",
                    NOW - 1,
                    1_700_000_000,
                    b"<x/>",
                    "",
                    "r3",
                ),
                # Hard state (pidf-manipulation): expires -1 never expires.
                ("carol", "example.com", "presence", "hard", -1, 1_700_000_003, "<h/>", "", None),
            ],
        )
        conn.execute(
            "INSERT INTO active_watchers (presentity_uri, watcher_username, watcher_domain,"
            " to_user, to_domain, event, event_id, to_tag, from_tag, callid, local_cseq,"
            " remote_cseq, contact, record_route, expires, status, reason, version, socket_info,"
            " local_contact, from_user, from_domain, updated, updated_winfo, flags, user_agent)"
            " VALUES ('sip:carol@example.com', 'dave', 'example.org', 'carol', 'example.com',"
            " 'presence', '', 'tt', 'ft', 'cid', 2, 5, 'sip:dave@198.51.100.7:5080;transport=tcp',"
            " '<sip:edge.example.org;lr>,<sip:core.example.com;lr>', ?, 1, NULL, 3,"
            " 'udp:198.51.100.1:5060', 'sip:198.51.100.1:5060', 'dave', 'example.org', -1, -1, 0,"
            " 'Softphone')",
            (NOW + 300,),
        )
        conn.execute(
            "INSERT INTO active_watchers (presentity_uri, watcher_username, watcher_domain,"
            " to_user, to_domain, to_tag, from_tag, callid, local_cseq, remote_cseq, contact,"
            " expires, socket_info, local_contact, from_user, from_domain, updated,"
            " updated_winfo) VALUES ('sip:carol@example.com', 'old', 'example.org', 'carol',"
            " 'example.com', 't2', 'f2', 'expired', 1, 1, 'sip:old@h', ?, 'udp:1.2.3.4:5060',"
            " 'sip:p@h', 'old', 'example.org', -1, -1)",
            (NOW - 5,),
        )
        conn.commit()
    finally:
        conn.close()


def test_load_reads_kamailio_rows_with_defaults(kamailio_db: Callable[[], str]) -> None:
    path = kamailio_db()
    kamailio_rows(path)
    state = load_state(path, NOW)
    assert [(p.etag, p.body, p.seq) for p in state.publications] == [
        ("b", b"<a/>", 0),
        ("a", b"<b/>", 0),
        ("hard", b"<h/>", 0),
    ]
    assert all(p.presentity == "sip:carol@example.com" for p in state.publications)
    assert state.publications[2].expires_at == math.inf
    assert state.publications[0].expires_at == NOW + 60
    assert state.subscriptions == (
        Subscription(
            key=DialogKey(call_id="cid", to_tag="tt", from_tag="ft"),
            presentity="sip:carol@example.com",
            event="presence",
            event_id=None,
            watcher_uri="sip:dave@example.org",
            to_uri="sip:carol@example.com",
            remote_cseq=5,
            local_cseq=2,
            contact="sip:dave@198.51.100.7:5080;transport=tcp",
            route_set=("<sip:edge.example.org;lr>", "<sip:core.example.com;lr>"),
            expires_at=NOW + 300,
            status="active",
            reason=None,
            version=3,
            local_socket="udp:198.51.100.1:5060",
            local_contact="sip:198.51.100.1:5060",
            source="tcp:198.51.100.7:5080",
            user_agent="Softphone",
            updated_at=0.0,
        ),
    )
    # The expired rows were deleted, the live ones kept.
    assert load_state(path, NOW) == state
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM presentity").fetchone() == (3,)
        assert conn.execute("SELECT count(*) FROM active_watchers").fetchone() == (1,)
    finally:
        conn.close()


def test_load_orders_publications_by_arrival_sequence(db_path: str) -> None:
    conn = sqlite3.connect(db_path)
    try:
        ensure_schema(conn)
        # Same second, inserted out of order: px_seq decides.
        for seq in (3, 1, 2):
            pub = make_publication(seq, received_at=1_700_000_000.0)
            conn.execute(
                "INSERT INTO presentity (username, domain, event, etag, expires, received_time,"
                " body, sender, px_seq, px_presentity_uri) VALUES"
                " ('alice', 'example.com', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    pub.event,
                    pub.etag,
                    pub.expires_at,
                    pub.received_at,
                    pub.body,
                    pub.sender,
                    pub.seq,
                    pub.presentity,
                ),
            )
        conn.commit()
    finally:
        conn.close()
    assert [p.seq for p in load_state(db_path, NOW).publications] == [1, 2, 3]


def test_load_creates_a_new_database(db_path: str) -> None:
    assert load_state(db_path, NOW) == LoadedState((), ())
    assert Path(db_path).exists()


def xcap_server_put(
    conn: sqlite3.Connection,
    user: str,
    domain: str,
    doc_type: int,
    doc_uri: str,
    doc: bytes,
    etag: str,
) -> None:
    """What Kamailio's xcap_server does on PUT (xcaps_put_db): doc bound as a BLOB,
    etag as text, source and port 0; update in place when the doc_uri exists."""
    found = conn.execute(
        "SELECT id FROM xcap WHERE username = ? AND domain = ? AND doc_type = ? AND doc_uri = ?",
        (user, domain, doc_type, doc_uri),
    ).fetchall()
    if found:
        conn.execute(
            "UPDATE xcap SET doc = ?, etag = ?, source = 0, port = 0 WHERE username = ? AND"
            " domain = ? AND doc_type = ? AND doc_uri = ?",
            (doc, etag, user, domain, doc_type, doc_uri),
        )
    else:
        conn.execute(
            "INSERT INTO xcap (username, domain, doc_type, doc_uri, doc, etag, source, port)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, 0)",
            (user, domain, doc_type, doc_uri, doc, etag),
        )
    conn.commit()


def test_read_xcap(kamailio_db: Callable[[], str]) -> None:
    path = kamailio_db()
    conn = sqlite3.connect(path)
    try:
        rules = "/xcap-root/pres-rules/users/sip:alice@example.com/index"
        xcap_server_put(conn, "alice", "example.com", PRES_RULES, rules, b"<ruleset v1/>", "e1")
        xcap_server_put(conn, "alice", "example.com", PRES_RULES, rules, b"<ruleset v2/>", "e2")
        xcap_server_put(conn, "alice", "example.com", PIDF_MANIPULATION, "index", b"<pidf/>", "p1")
        # Another writer that names documents differently left a second row: newest wins.
        xcap_server_put(conn, "alice", "example.com", PRES_RULES, "pres-rules", b"<v3/>", "e3")
        xcap_server_put(conn, "bob", "example.com", PRES_RULES, "bob-rules", b"<bob/>", "b1")
        conn.execute(
            "INSERT INTO xcap (username, domain, doc_type, doc_uri, doc, etag, source, port)"
            " VALUES ('carol', 'example.com', 2, 'c', '<text-doc/>', 'c1', 0, 0)"
        )
        conn.commit()

        assert read_xcap(path, "xcap", "alice", "example.com", PRES_RULES) == (b"<v3/>", "e3")
        assert read_xcap(conn, "xcap", "alice", "example.com", PIDF_MANIPULATION) == (
            b"<pidf/>",
            "p1",
        )
        assert read_xcap(path, "xcap", "alice", "example.com", RESOURCE_LISTS) is None
        assert read_xcap(path, "xcap", "alice", "example.org", PRES_RULES) is None
        assert read_xcap(Path(path), "xcap", "carol", "example.com", PRES_RULES) == (
            b"<text-doc/>",
            "c1",
        )
    finally:
        conn.close()


@pytest.mark.parametrize("table", ["xcap; DROP TABLE xcap", 'x"y', "1xcap", "", "xcap "])
def test_read_xcap_refuses_a_table_name_that_is_not_an_identifier(db_path: str, table: str) -> None:
    with pytest.raises(ValueError, match="xcap_table"):
        read_xcap(db_path, table, "alice", "example.com", PRES_RULES)


def test_read_xcap_of_a_missing_table_names_it(db_path: str) -> None:
    load_state(db_path, NOW)
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        read_xcap(db_path, "no_such_table", "alice", "example.com", PRES_RULES)
