"""The sqlite schema: Kamailio 5.6's presence tables, plus presencex's own columns.

Facts and invariants:
- ``presentity``, ``active_watchers``, ``watchers`` and ``xcap`` have exactly the
  columns, UNIQUE constraints and indexes of Kamailio 5.6's
  ``db_sqlite/presence-create.sql``, so a database made by that script (or by an
  integrated XCAP server) is used unchanged, and Kamailio still reads our rows.
- What presencex needs beyond Kamailio's columns lives in columns named ``px_*``,
  each nullable-free with a DEFAULT, so Kamailio's INSERTs (which do not name
  them) keep working and its SELECTs never see them. On an existing database they
  are added with ``ALTER TABLE ... ADD COLUMN``; nothing is ever dropped or
  rewritten.
- The ``version`` table is Kamailio's (``standard-create.sql``); we add its rows
  for our four tables when absent, with Kamailio 5.6's numbers, so Kamailio's
  start-up version check passes on a database we created.
- ``create_sql()`` renders the whole script; ``schema/presence-create.sql`` is
  that output, committed, and can be run more than once (everything is
  ``IF NOT EXISTS`` or guarded), e.g. ``sqlite3 presencex.db < schema/presence-create.sql``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import sqlite_utils

from presencex.sip.headers import split_list


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    version: int  # Kamailio's table_version for this table
    columns: tuple[str, ...]  # Kamailio's column definitions, verbatim
    constraints: tuple[str, ...]  # Kamailio's table constraints, verbatim
    indexes: tuple[tuple[str, str], ...]  # (index name, "(cols)")
    # presencex's additions: (column name, definition after the name).
    extra: tuple[tuple[str, str], ...] = ()


VERSION_TABLE = """CREATE TABLE IF NOT EXISTS version (
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
);"""

PRESENTITY = Table(
    name="presentity",
    version=5,
    columns=(
        "id INTEGER PRIMARY KEY NOT NULL",
        "username VARCHAR(64) NOT NULL",
        "domain VARCHAR(64) NOT NULL",
        "event VARCHAR(64) NOT NULL",
        "etag VARCHAR(128) NOT NULL",
        "expires INTEGER NOT NULL",
        "received_time INTEGER NOT NULL",
        "body BLOB NOT NULL",
        "sender VARCHAR(255) NOT NULL",
        "priority INTEGER DEFAULT 0 NOT NULL",
        "ruid VARCHAR(64)",
    ),
    constraints=(
        "CONSTRAINT presentity_presentity_idx UNIQUE (username, domain, event, etag)",
        "CONSTRAINT presentity_ruid_idx UNIQUE (ruid)",
    ),
    indexes=(
        ("presentity_presentity_expires", "(expires)"),
        ("presentity_account_idx", "(username, domain, event)"),
    ),
    extra=(
        # Arrival order: received_time has 1 s resolution, aggregation needs
        # the order of PUBLISHes within the same second. 0 for Kamailio's rows.
        ("px_seq", "INTEGER DEFAULT 0 NOT NULL"),
        # The AOR as the publisher wrote it (e.g. a sips: URI); '' means
        # "sip:<username>@<domain>", which is all Kamailio's rows say.
        ("px_presentity_uri", "VARCHAR(255) DEFAULT '' NOT NULL"),
    ),
)

ACTIVE_WATCHERS = Table(
    name="active_watchers",
    version=12,
    columns=(
        "id INTEGER PRIMARY KEY NOT NULL",
        "presentity_uri VARCHAR(255) NOT NULL",
        "watcher_username VARCHAR(64) NOT NULL",
        "watcher_domain VARCHAR(64) NOT NULL",
        "to_user VARCHAR(64) NOT NULL",
        "to_domain VARCHAR(64) NOT NULL",
        "event VARCHAR(64) DEFAULT 'presence' NOT NULL",
        "event_id VARCHAR(64)",
        "to_tag VARCHAR(128) NOT NULL",
        "from_tag VARCHAR(128) NOT NULL",
        "callid VARCHAR(255) NOT NULL",
        "local_cseq INTEGER NOT NULL",
        "remote_cseq INTEGER NOT NULL",
        "contact VARCHAR(255) NOT NULL",
        "record_route TEXT",
        "expires INTEGER NOT NULL",
        "status INTEGER DEFAULT 2 NOT NULL",
        "reason VARCHAR(64)",
        "version INTEGER DEFAULT 0 NOT NULL",
        "socket_info VARCHAR(64) NOT NULL",
        "local_contact VARCHAR(255) NOT NULL",
        "from_user VARCHAR(64) NOT NULL",
        "from_domain VARCHAR(64) NOT NULL",
        "updated INTEGER NOT NULL",
        "updated_winfo INTEGER NOT NULL",
        "flags INTEGER DEFAULT 0 NOT NULL",
        "user_agent VARCHAR(255) DEFAULT ''",
    ),
    constraints=(
        "CONSTRAINT active_watchers_active_watchers_idx UNIQUE (callid, to_tag, from_tag)",
    ),
    indexes=(
        ("active_watchers_active_watchers_expires", "(expires)"),
        ("active_watchers_active_watchers_pres", "(presentity_uri, event)"),
        ("active_watchers_updated_idx", "(updated)"),
        ("active_watchers_updated_winfo_idx", "(updated_winfo, presentity_uri)"),
    ),
    extra=(
        # Where the SUBSCRIBE came from ("tcp:192.0.2.7:40000"): NOTIFYs reuse
        # that TCP connection (RFC 5923 style reuse, and NATed clients).
        # '' means "derive it from contact and socket_info" (Kamailio's rows).
        ("px_source", "VARCHAR(128) DEFAULT '' NOT NULL"),
        # The From and To URIs whole: Kamailio keeps only user and host.
        # '' means "sip:<user>@<domain>".
        ("px_watcher_uri", "VARCHAR(255) DEFAULT '' NOT NULL"),
        ("px_to_uri", "VARCHAR(255) DEFAULT '' NOT NULL"),
    ),
)

WATCHERS = Table(
    name="watchers",
    version=3,
    columns=(
        "id INTEGER PRIMARY KEY NOT NULL",
        "presentity_uri VARCHAR(255) NOT NULL",
        "watcher_username VARCHAR(64) NOT NULL",
        "watcher_domain VARCHAR(64) NOT NULL",
        "event VARCHAR(64) DEFAULT 'presence' NOT NULL",
        "status INTEGER NOT NULL",
        "reason VARCHAR(64)",
        "inserted_time INTEGER NOT NULL",
    ),
    constraints=(
        "CONSTRAINT watchers_watcher_idx UNIQUE (presentity_uri, watcher_username, watcher_domain, event)",
    ),
    indexes=(),
)

XCAP = Table(
    name="xcap",
    version=4,
    columns=(
        "id INTEGER PRIMARY KEY NOT NULL",
        "username VARCHAR(64) NOT NULL",
        "domain VARCHAR(64) NOT NULL",
        "doc BLOB NOT NULL",
        "doc_type INTEGER NOT NULL",
        "etag VARCHAR(128) NOT NULL",
        "source INTEGER NOT NULL",
        "doc_uri VARCHAR(255) NOT NULL",
        "port INTEGER NOT NULL",
    ),
    constraints=("CONSTRAINT xcap_doc_uri_idx UNIQUE (doc_uri)",),
    indexes=(
        ("xcap_account_doc_type_idx", "(username, domain, doc_type)"),
        ("xcap_account_doc_type_uri_idx", "(username, domain, doc_type, doc_uri)"),
        ("xcap_account_doc_uri_idx", "(username, domain, doc_uri)"),
    ),
)

# The xcap table is read as it is: presencex adds no columns to it.
TABLES: tuple[Table, ...] = (PRESENTITY, ACTIVE_WATCHERS, WATCHERS, XCAP)


def _create_table(table: Table) -> str:
    # (definition, trailing comment); the comma goes before the comment.
    items = [(c, "") for c in table.columns]
    items += [(f"{name} {definition}", " -- presencex") for name, definition in table.extra]
    items += [(c, "") for c in table.constraints]
    lines = [
        f"    {code}{'' if i == len(items) - 1 else ','}{comment}"
        for i, (code, comment) in enumerate(items)
    ]
    return f"CREATE TABLE IF NOT EXISTS {table.name} (\n" + "\n".join(lines) + "\n);"


def _create_indexes(table: Table) -> list[str]:
    return [
        f"CREATE INDEX IF NOT EXISTS {name} ON {table.name} {cols};" for name, cols in table.indexes
    ]


def _version_row(table: Table) -> str:
    return (
        f"INSERT INTO version (table_name, table_version) SELECT '{table.name}', {table.version}"
        f" WHERE NOT EXISTS (SELECT 1 FROM version WHERE table_name = '{table.name}');"
    )


def _add_column(table: Table, name: str, definition: str) -> str:
    return f"ALTER TABLE {table.name} ADD COLUMN {name} {definition};"


def create_sql() -> str:
    """The whole schema as one script (what ``schema/presence-create.sql`` holds)."""
    parts = [
        "-- presencex schema: Kamailio 5.6 presence tables (db_sqlite/presence-create.sql)",
        "-- plus presencex's own px_* columns. Generated by presencex.store.schema.create_sql();",
        "-- do not edit by hand. Safe to run on an existing database: it only adds what is missing,",
        "-- except px_* columns of tables that already exist (presencex adds those at start).",
        "",
        VERSION_TABLE,
        "",
    ]
    for table in TABLES:
        parts.append(_create_table(table))
        parts.append("")
        indexes = _create_indexes(table)
        if indexes:
            parts.extend(indexes)
            parts.append("")
        parts.append(_version_row(table))
        parts.append("")
    return "\n".join(parts)


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create what is missing (tables, indexes, px_* columns, version rows).

    Never drops, renames or rewrites anything: on a database that already holds
    Kamailio's tables the only changes are added ``px_*`` columns (with their
    defaults, so existing rows stay valid for both programs), missing indexes
    and missing ``version`` rows. Runs in one transaction.
    """
    in_transaction = conn.in_transaction
    if not in_transaction:
        conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _missing_statements(conn):
            conn.execute(statement)
    except Exception:
        if not in_transaction:
            conn.execute("ROLLBACK")
        raise
    if not in_transaction:
        conn.execute("COMMIT")


def _missing_statements(conn: sqlite3.Connection) -> list[str]:
    # sqlite-utils for the inspection (PRAGMA table_info underneath); it must
    # not change the connection's settings or run plugins on it.
    db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
    statements = [VERSION_TABLE]
    for table in TABLES:
        inspected = db.table(table.name)
        existing = set(inspected.columns_dict) if inspected.exists() else None
        statements.append(_create_table(table))
        if existing is not None:
            statements.extend(
                _add_column(table, name, definition)
                for name, definition in table.extra
                if name not in existing
            )
        statements.extend(_create_indexes(table))
        statements.append(_version_row(table))
    return statements


# Row conventions shared by the writer (records -> rows) and the loader
# (rows -> records). Kamailio keeps URIs as user + host, times as int epoch
# seconds and the route set as one text column.

# Kamailio's "never expires" for hard-state (pidf-manipulation) presentity
# rows: expires = -1, and its purge only deletes rows with expires > 0.
HARD_STATE_EXPIRES = -1


_SCHEMES = frozenset({"sip", "sips", "pres", "im", "tel"})


def _parse_uri(uri: str) -> tuple[str, str, str, list[str]]:
    """(user, host, port text, parameters) of a URI or name-addr; never raises."""
    text = uri.strip()
    if "<" in text:
        text = text[text.index("<") + 1 :].split(">", 1)[0]
    text = text.split("?", 1)[0]  # headers
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() not in _SCHEMES:
        rest = text  # no scheme: "alice@example.com", "example.com:5060"
    user, at, hostpart = rest.rpartition("@")
    if not at:
        user, hostpart = "", rest
    user = user.split(":", 1)[0]  # drop a password
    hostport, *params = hostpart.split(";")
    if hostport.startswith("[") and "]" in hostport:
        end = hostport.index("]") + 1
        host, port = hostport[:end], hostport[end:].lstrip(":")
    else:
        host, _, port = hostport.partition(":")
    return user, host, port, params


def split_uri(uri: str) -> tuple[str, str]:
    """``sip:alice@example.com`` -> ("alice", "example.com"), as Kamailio's parse_uri.

    Tolerates a name-addr's angle brackets, a password, a port, parameters
    and headers; never raises (the user is "" when the URI has none).
    """
    user, host, _, _ = _parse_uri(uri)
    return user, host


def join_uri(user: str, domain: str) -> str:
    """The AOR Kamailio's user + host stand for."""
    return f"sip:{user}@{domain}" if user else f"sip:{domain}"


def join_route_set(route_set: tuple[str, ...]) -> str:
    return ", ".join(route_set)


def split_route_set(text: str | None) -> tuple[str, ...]:
    """Split a record_route column at the commas between entries.

    Commas inside ``<...>`` or a quoted display name are not separators; both
    ours (", ") and Kamailio's (",") separators are read, with the same rule a
    Record-Route header is split by.
    """
    if not text:
        return ()
    return tuple(split_list(text))


def source_from_contact(contact: str, socket_info: str) -> str:
    """Best guess of where a Kamailio-written subscription's watcher sends from.

    Kamailio does not store the source address; the Contact's host, port and
    transport parameter are the closest thing (a NATed client's Contact is
    wrong, but Kamailio would send its NOTIFY there too). The transport
    defaults to the one of the socket the SUBSCRIBE arrived on. Result in the
    transport layer's form, "tcp:192.0.2.7:5060" / "udp:[2001:db8::1]:5060".
    """
    _, host, port_text, params = _parse_uri(contact)
    if not host:
        return ""
    transport = ""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "transport":
            transport = value.strip().lower()
    if transport not in ("udp", "tcp"):
        proto = socket_info.split(":", 1)[0].lower()
        transport = proto if proto in ("udp", "tcp") else "udp"
    port = int(port_text) if port_text.isdigit() else 5060
    return f"{transport}:{host}:{port}"
