"""Reading the store: state at start-up, XCAP documents of the integrated server.

Facts:
- ``load_state`` runs once at start, before ``StoreWriter.serve()``: it makes
  the schema complete, deletes what expired while the server was down and
  returns the live publications and subscriptions. It writes (the schema, the
  purge) only because nothing else is running yet.
- Rows written by Kamailio (every ``px_*`` column at its default) load too:
  the AORs are rebuilt as ``sip:user@domain``, the watcher's source address is
  derived from its Contact and the socket it arrived on, and publications are
  ordered by arrival time, then by row id.
- Times come back as the int seconds Kamailio's columns hold (records.py);
  a presentity row with ``expires <= 0`` is Kamailio's hard state (never
  expires) and loads with ``expires_at = inf``.
- ``read_xcap`` reads the ``xcap`` table exactly as integrated XCAP servers
  write it (FIELD-NOTES.md: look up by username, domain and doc_type; the
  newest row wins when a writer left several).
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from presencex.store.records import STATUS_NAMES, DialogKey, Publication, Subscription
from presencex.store.schema import (
    ensure_schema,
    join_uri,
    source_from_contact,
    split_route_set,
    split_uri,
)

logger = logging.getLogger(__name__)

# Kamailio's doc_type bits of the xcap table (one per XCAP application usage).
PRES_RULES = 2
RESOURCE_LISTS = 4
RLS_SERVICES = 8
PIDF_MANIPULATION = 16
XCAP_CAPS = 32
USER_PROFILE = 64
PRES_CONTENT = 128
SEARCH = 256
DIRECTORY = 512

# A start-up read may meet Kamailio or an XCAP server mid-write.
BUSY_TIMEOUT = 5.0

_DB_URL_HELP = (
    "db_url must be 'sqlite:///NAME.db' (a file in the working directory), "
    "'sqlite:///abs/path/NAME.db' or 'sqlite:////abs/path/NAME.db' (an absolute path), "
    "or 'sqlite://rel/path/NAME.db' (relative to the working directory); "
    "an in-memory database cannot be shared by the writer and the loader"
)


def parse_db_url(db_url: str) -> str:
    """The file path a ``db_url`` names.

    Kamailio's db_sqlite takes everything after ``sqlite://`` as the path, so
    ``sqlite:///var/lib/presencex.db`` is ``/var/lib/presencex.db``, and
    ``sqlite:////var/lib/x.db`` (SQLAlchemy's spelling) means the same. A bare
    file name after three slashes (``sqlite:///presencex.db``, the default) is
    a file in the working directory, as in SQLAlchemy, not one in ``/``;
    so is ``sqlite:///./dir/x.db``.
    """
    prefix = "sqlite://"
    if not db_url.startswith(prefix):
        raise ValueError(f"{db_url!r}: unsupported scheme; {_DB_URL_HELP}")
    rest = db_url[len(prefix) :]
    if "?" in rest or "#" in rest or "\x00" in rest:
        raise ValueError(f"{db_url!r}: no query or fragment allowed; {_DB_URL_HELP}")
    if rest.startswith("//"):  # sqlite:////abs/path
        path = rest[1:]
    elif rest.startswith("/"):
        name = rest[1:]
        relative = "/" not in name or name.startswith(("./", "../"))
        path = name if relative else rest
    else:  # sqlite://rel/path
        path = rest
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if not name or path.endswith("/") or name in (".", ".."):
        raise ValueError(f"{db_url!r}: names no file; {_DB_URL_HELP}")
    if name == ":memory:" or path.startswith(":") or name.startswith("file:"):
        raise ValueError(f"{db_url!r}: not a file; {_DB_URL_HELP}")
    return path


@dataclass(frozen=True, slots=True)
class LoadedState:
    publications: tuple[Publication, ...]
    subscriptions: tuple[Subscription, ...]


def load_state(path: str, now: float) -> LoadedState:
    """Complete the schema, delete expired rows, return the live ones."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        ensure_schema(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM presentity WHERE expires > 0 AND expires < ?", (now,))
            conn.execute("DELETE FROM active_watchers WHERE expires < ?", (now,))
            publications = tuple(
                _publication(row)
                for row in conn.execute(
                    "SELECT * FROM presentity ORDER BY px_seq, received_time, id"
                )
            )
            subscriptions = tuple(
                _subscription(row)
                for row in conn.execute("SELECT * FROM active_watchers ORDER BY id")
            )
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return LoadedState(publications, subscriptions)


def load_publications(
    path: str, presentity: str, event: str, now: float
) -> tuple[Publication, ...]:
    """One presentity's live publications of one event, as the table holds
    them now: refreshWatchers type 1, after a writer changed the table."""
    username, domain = split_uri(presentity)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT * FROM presentity WHERE username = ? AND domain = ? AND event = ?"
            " AND (expires <= 0 OR expires >= ?) ORDER BY px_seq, received_time, id",
            (username, domain, event, now),
        ).fetchall()
    finally:
        conn.close()
    return tuple(_publication(row) for row in rows)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _blob(value: object) -> bytes:
    # Kamailio binds bodies as BLOB, but a hand-written row may hold TEXT.
    if isinstance(value, bytes):
        return value
    return _text(value).encode("utf-8")


def _publication(row: sqlite3.Row) -> Publication:
    expires = int(row["expires"])
    return Publication(
        presentity=_text(row["px_presentity_uri"])
        or join_uri(_text(row["username"]), _text(row["domain"])),
        event=_text(row["event"]),
        etag=_text(row["etag"]),
        expires_at=math.inf if expires <= 0 else float(expires),
        received_at=float(row["received_time"]),
        body=_blob(row["body"]),
        sender=_text(row["sender"]),
        seq=int(row["px_seq"]),
    )


def _subscription(row: sqlite3.Row) -> Subscription:
    status = STATUS_NAMES.get(int(row["status"]))
    if status is None:
        logger.warning(
            "active_watchers row %s: unknown status %r, loaded as pending", row["id"], row["status"]
        )
        status = "pending"
    contact = _text(row["contact"])
    socket_info = _text(row["socket_info"])
    return Subscription(
        key=DialogKey(
            call_id=_text(row["callid"]),
            to_tag=_text(row["to_tag"]),
            from_tag=_text(row["from_tag"]),
        ),
        presentity=_text(row["presentity_uri"]),
        event=_text(row["event"]),
        # Kamailio writes "" for "no id parameter".
        event_id=_text(row["event_id"]) or None,
        watcher_uri=_text(row["px_watcher_uri"])
        or join_uri(_text(row["watcher_username"]), _text(row["watcher_domain"])),
        to_uri=_text(row["px_to_uri"]) or join_uri(_text(row["to_user"]), _text(row["to_domain"])),
        remote_cseq=int(row["remote_cseq"]),
        local_cseq=int(row["local_cseq"]),
        contact=contact,
        route_set=split_route_set(_text(row["record_route"])),
        expires_at=float(row["expires"]),
        status=status,
        reason=row["reason"] if row["reason"] is None else _text(row["reason"]),
        version=int(row["version"]),
        local_socket=socket_info,
        local_contact=_text(row["local_contact"]),
        source=_text(row["px_source"]) or source_from_contact(contact, socket_info),
        user_agent=_text(row["user_agent"]),
        # Kamailio writes -1 (NO_UPDATE_TYPE) there: a marker, not a time.
        updated_at=max(float(row["updated"]), 0.0),
    )


# ASCII only: str.isidentifier() would also pass non-ASCII letters, which
# Kamailio's table names never have.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_table_name(table: str) -> str:
    """``table`` if it is a plain SQL table name, else ValueError.  The one
    rule for ``xcap_table``: the configuration checks it at start-up with
    this, and every query checks it again before the name reaches SQL."""
    if not _IDENTIFIER.fullmatch(table):
        raise ValueError(
            f"xcap_table {table!r} must be a plain table name (letters, digits, _; not a digit first)"
        )
    return table


def _table_name(table: str) -> str:
    """A validated, quoted table name: config text never reaches SQL raw."""
    return f'"{check_table_name(table)}"'


def read_xcap(
    path_or_conn: str | Path | sqlite3.Connection,
    table: str,
    username: str,
    domain: str,
    doc_type: int,
) -> tuple[bytes, str] | None:
    """(document, etag) of a user's document of one kind, or None.

    The newest row (highest id) wins if a writer left several. A path is
    opened read-only for this one read; a missing table raises
    ``sqlite3.OperationalError`` naming it (a wrong ``xcap_table``).
    """
    sql = (
        f"SELECT doc, etag FROM {_table_name(table)}"
        " WHERE username = ? AND domain = ? AND doc_type = ? ORDER BY id DESC LIMIT 1"
    )
    params = (username, domain, doc_type)
    if isinstance(path_or_conn, sqlite3.Connection):
        row = path_or_conn.execute(sql, params).fetchone()
    else:
        uri = Path(path_or_conn).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT)
        try:
            row = conn.execute(sql, params).fetchone()
        finally:
            conn.close()
    if row is None:
        return None
    doc, etag = row
    return _blob(doc), _text(etag)
