"""Change the database the way someone outside the catalog would: ``psql`` on
PostgreSQL, a separate ``sqlite3`` connection on SQLite. Used by the outbox
tests and the write-path benchmark, to show a change that never passed
through the API still reaches every replica."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from typing import Any

from sqlalchemy.engine import make_url


def _psql_args(database_url: str) -> list[str]:
    url = make_url(database_url)
    psql = shutil.which("psql")
    if psql is None:
        raise RuntimeError("psql is not installed")
    return [psql, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
            "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432),
            "-U", url.username or "postgres", "-d", url.database or "postgres"]


def run(database_url: str, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement in its own transaction (autocommit); its rows."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(url.database or "", timeout=30, isolation_level=None)
        try:
            return [tuple(r) for r in conn.execute(statement).fetchall()]
        finally:
            conn.close()
    out = subprocess.run([*_psql_args(database_url), "-F", "\t", "-c", statement],
                         check=True, capture_output=True, text=True).stdout
    return [tuple(line.split("\t")) for line in out.splitlines() if line]


def scalar(database_url: str, statement: str) -> str:
    rows = run(database_url, statement)
    return str(rows[0][0]) if rows else ""


def script(database_url: str, statements: str) -> None:
    """Run several statements (e.g. an explicit BEGIN ... ROLLBACK) as one script."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(url.database or "", timeout=30, isolation_level=None)
        try:
            conn.executescript(statements)
        finally:
            conn.close()
        return
    subprocess.run([*_psql_args(database_url), "-c", statements], check=True,
                   capture_output=True, text=True)
