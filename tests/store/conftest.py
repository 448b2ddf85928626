"""Shared factories for the store tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
# Kamailio's standard-create.sql makes this table; presence-create.sql only
# INSERTs into it.
KAMAILIO_VERSION_TABLE = (
    "CREATE TABLE version (table_name VARCHAR(32) NOT NULL, "
    "table_version INTEGER DEFAULT 0 NOT NULL, "
    "CONSTRAINT version_table_name_idx UNIQUE (table_name))"
)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "presencex.db")


@pytest.fixture
def kamailio_db(tmp_path: Path) -> Callable[[], str]:
    """A database made the way Kamailio's kamdbctl makes one (standard + presence scripts)."""

    def create() -> str:
        path = str(tmp_path / "kamailio.db")
        conn = sqlite3.connect(path)
        try:
            conn.execute(KAMAILIO_VERSION_TABLE)
            conn.executescript((FIXTURES / "kamailio-presence-create.sql").read_text())
            conn.commit()
        finally:
            conn.close()
        return path

    return create
