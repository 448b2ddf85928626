"""The schema: Kamailio-compatible tables, px_* additions, nothing dropped."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from presencex.store.schema import (
    TABLES,
    create_sql,
    ensure_schema,
    source_from_contact,
    split_route_set,
    split_uri,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO / "schema" / "presence-create.sql"
OUR_TABLES = ("presentity", "active_watchers", "watchers", "xcap")


def table_info(conn: sqlite3.Connection, table: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in conn.execute(f"PRAGMA table_info({table})")]


def indexes(conn: sqlite3.Connection, table: str) -> dict[str, tuple[int, tuple[str, ...]]]:
    out = {}
    for row in conn.execute(f"PRAGMA index_list({table})"):
        name, unique = row[1], row[2]
        cols = tuple(r[2] for r in conn.execute(f"PRAGMA index_info('{name}')"))
        out[name] = (unique, cols)
    return out


def shape(conn: sqlite3.Connection) -> dict[str, object]:
    """Columns and indexes (by columns; sqlite names UNIQUE constraints itself)."""
    return {t: (table_info(conn, t), sorted(indexes(conn, t).values())) for t in OUR_TABLES}


def versions(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    return sorted(conn.execute("SELECT table_name, table_version FROM version"))


def test_schema_file_is_create_sql() -> None:
    assert SCHEMA_FILE.read_text() == create_sql()


def test_schema_file_loads_into_empty_db_and_reruns(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    try:
        conn.executescript(SCHEMA_FILE.read_text())
        first = shape(conn)
        conn.executescript(SCHEMA_FILE.read_text())  # IF NOT EXISTS everywhere
        assert shape(conn) == first
        assert versions(conn) == [
            ("active_watchers", 12),
            ("presentity", 5),
            ("watchers", 3),
            ("xcap", 4),
        ]
    finally:
        conn.close()


def test_ensure_schema_matches_the_script(tmp_path: Path) -> None:
    by_script = sqlite3.connect(tmp_path / "a.db")
    by_code = sqlite3.connect(tmp_path / "b.db")
    try:
        by_script.executescript(create_sql())
        ensure_schema(by_code)
        ensure_schema(by_code)  # idempotent
        assert shape(by_code) == shape(by_script)
        assert versions(by_code) == versions(by_script)
    finally:
        by_script.close()
        by_code.close()


def test_kamailio_columns_are_kamailios(kamailio_db: Callable[[], str], tmp_path: Path) -> None:
    kam = sqlite3.connect(kamailio_db())
    ours = sqlite3.connect(tmp_path / "ours.db")
    try:
        ensure_schema(ours)
        for table in OUR_TABLES:
            kam_cols = table_info(kam, table)
            our_cols = table_info(ours, table)
            assert our_cols[: len(kam_cols)] == kam_cols
            assert all(str(c[1]).startswith("px_") for c in our_cols[len(kam_cols) :])
            kam_indexes = sorted(indexes(kam, table).values())
            assert sorted(indexes(ours, table).values()) == kam_indexes
    finally:
        kam.close()
        ours.close()


XCAP_ROWS = [
    (
        1,
        "alice",
        "example.com",
        b"<ruleset/>",
        2,
        "e1",
        0,
        "/pres-rules/users/sip:alice@example.com/index",
        0,
    ),
    (2, "bob", "example.com", b"<pidf/>", 16, "e2", 0, "index", 0),
]


def test_ensure_schema_on_a_kamailio_db_adds_only_px_columns(
    kamailio_db: Callable[[], str],
) -> None:
    path = kamailio_db()
    conn = sqlite3.connect(path)
    try:
        conn.executemany("INSERT INTO xcap VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", XCAP_ROWS)
        conn.execute(
            "INSERT INTO presentity (username, domain, event, etag, expires, received_time, body,"
            " sender) VALUES ('carol', 'example.com', 'presence', 'k1', 2000000000, 1700000000,"
            " X'3c702f3e', '')"
        )
        conn.commit()
        before = shape(conn)
        before_sql = dict(conn.execute("SELECT name, sql FROM sqlite_master"))
        before_versions = versions(conn)
        pua = table_info(conn, "pua")

        ensure_schema(conn)
        ensure_schema(conn)

        after = shape(conn)
        for table in OUR_TABLES:
            old_cols, old_indexes = before[table]
            new_cols, new_indexes = after[table]
            assert new_cols[: len(old_cols)] == old_cols
            added = [c[1] for c in new_cols[len(old_cols) :]]
            assert all(name.startswith("px_") for name in added), added
            assert new_indexes == old_indexes
        assert after["xcap"] == before["xcap"]  # read as it is
        assert table_info(conn, "pua") == pua
        assert versions(conn) == before_versions  # rows present: none added
        # Nothing rewritten: every object keeps its definition, except the
        # ALTERed tables' CREATE text that sqlite extends.
        after_sql = dict(conn.execute("SELECT name, sql FROM sqlite_master"))
        assert set(after_sql) == set(before_sql)
        for name in ("xcap", "pua", "version", "watchers"):
            assert after_sql[name] == before_sql[name]
        assert list(conn.execute("SELECT * FROM xcap ORDER BY id")) == XCAP_ROWS
        assert conn.execute("SELECT px_seq, px_presentity_uri FROM presentity").fetchall() == [
            (0, "")
        ]
        # Kamailio's INSERTs, which name only its own columns, still work.
        conn.execute(
            "INSERT INTO active_watchers (presentity_uri, watcher_username, watcher_domain,"
            " to_user, to_domain, event, to_tag, from_tag, callid, local_cseq, remote_cseq,"
            " contact, expires, socket_info, local_contact, from_user, from_domain, updated,"
            " updated_winfo) VALUES ('sip:a@b', 'w', 'b', 'a', 'b', 'presence', 't', 'f', 'c',"
            " 1, 1, 'sip:w@h', 1, 'udp:1.2.3.4:5060', 'sip:p@h', 'w', 'b', -1, -1)"
        )
    finally:
        conn.close()


def test_ensure_schema_adds_missing_version_rows_and_table(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "v.db")
    try:
        conn.execute(
            "CREATE TABLE version (table_name VARCHAR(32) NOT NULL, table_version INTEGER)"
        )
        conn.execute("INSERT INTO version VALUES ('xcap', 4)")
        conn.commit()
        ensure_schema(conn)
        assert versions(conn) == sorted((t.name, t.version) for t in TABLES)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:alice@example.com", ("alice", "example.com")),
        ("sips:alice@example.com:5061;transport=tcp", ("alice", "example.com")),
        ('"Alice, A." <sip:alice:secret@example.com>;tag=x', ("alice", "example.com")),
        ("sip:example.com", ("", "example.com")),
        ("alice@example.com", ("alice", "example.com")),
        ("sip:bob@[2001:db8::1]:5060", ("bob", "[2001:db8::1]")),
        ("sip:alice@example.com?subject=x", ("alice", "example.com")),
        ("", ("", "")),
    ],
)
def test_split_uri(uri: str, expected: tuple[str, str]) -> None:
    assert split_uri(uri) == expected


def test_split_route_set() -> None:
    assert split_route_set(None) == ()
    assert split_route_set("") == ()
    assert split_route_set("<sip:a;lr>,<sip:b;lr>") == ("<sip:a;lr>", "<sip:b;lr>")
    assert split_route_set('"x, y" <sip:a;lr>, <sip:b;lr;p="1,2">') == (
        '"x, y" <sip:a;lr>',
        '<sip:b;lr;p="1,2">',
    )


@pytest.mark.parametrize(
    ("contact", "socket_info", "expected"),
    [
        ("sip:bob@192.0.2.2:5070;transport=tcp", "udp:192.0.2.10:5060", "tcp:192.0.2.2:5070"),
        ("<sip:bob@192.0.2.2>", "tcp:192.0.2.10:5060", "tcp:192.0.2.2:5060"),
        ("sip:bob@[2001:db8::2]:5062", "udp:[2001:db8::1]:5060", "udp:[2001:db8::2]:5062"),
        ("sip:bob@h.example;transport=tls", "sctp:1.2.3.4:5060", "udp:h.example:5060"),
        ("", "udp:1.2.3.4:5060", ""),
    ],
)
def test_source_from_contact(contact: str, socket_info: str, expected: str) -> None:
    assert source_from_contact(contact, socket_info) == expected
