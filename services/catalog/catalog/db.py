"""The database: schema and engines (SQLAlchemy 2 Core, async).

SQLite (aiosqlite) by default, PostgreSQL (asyncpg) when DATABASE_URL says so.
Several replica processes share one database, so:

- SQLite runs in WAL mode with a busy timeout, and write transactions start
  with ``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes
  can fail at once with "database is locked" when another process wrote in
  between, whereas an immediate one waits its turn for the write lock.
- Schema creation is serialised (an advisory lock on PostgreSQL, the write
  lock on SQLite), so replicas starting together do not race on CREATE TABLE.

Prices are stored as integer cents: exact, and the same on both databases.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from . import outbox as outbox_schema
from .redact import redact_url

metadata = MetaData()

categories = Table(
    "categories", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("updated_at", Float, nullable=False),
)

products = Table(
    "products", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("category_id", Integer, ForeignKey("categories.id"), nullable=False, index=True),
    Column("updated_at", Float, nullable=False),
)

prices = Table(
    "prices", metadata,
    Column("product_id", Integer, ForeignKey("products.id", ondelete="CASCADE"),
           primary_key=True),
    Column("cents", BigInteger, nullable=False),
    Column("updated_at", Float, nullable=False),
)

stock = Table(
    "stock", metadata,
    Column("product_id", Integer, ForeignKey("products.id", ondelete="CASCADE"),
           primary_key=True),
    Column("quantity", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

countries = Table(
    "countries", metadata,
    Column("code", String(2), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("updated_at", Float, nullable=False),
)

# The invalidation outbox (outbox.py): rows written by triggers on the tables
# above, in the transaction that changed them; deleted once published.
cache_outbox = Table(
    "cache_outbox", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("data_type", String(20), nullable=False),
    Column("op", String(6), nullable=False),
    Column("old_keys", Text, nullable=True),
    Column("new_keys", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    # Set when an API write claimed the row (claims.py); NULL from anyone else.
    Column("origin", String(64), nullable=True),
    # Ids are never reused (SQLite would reuse the highest after a delete): the
    # relay deletes the ids it published, never a newer row given an old id.
    sqlite_autoincrement=True,
)

# SQLite only has no advisory locks: the relay's lease lives in a row (relay.py).
cache_relay_lease = Table(
    "cache_relay_lease", metadata,
    Column("name", String(40), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", Float, nullable=False),
)

# Arbitrary, fixed: the PostgreSQL advisory lock taken while creating the schema.
_SCHEMA_LOCK = 0x6361_7461


def now() -> float:
    """Wall time stored in ``updated_at`` columns (seconds since the epoch)."""
    return time.time()


def database_dialect(url: str) -> str:
    """``sqlite`` or ``postgresql``; ValueError naming the problem otherwise.
    The URL is shown redacted: a mistyped one may still hold the password."""
    try:
        dialect = make_url(url).get_backend_name()
    except Exception:  # sqlalchemy raises ArgumentError or ValueError for junk
        raise ValueError(f"DATABASE_URL: {redact_url(url)!r} is not a database URL"
                         " (expected e.g. postgresql+asyncpg://user:password@host/db)") from None
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"DATABASE_URL: unsupported database {dialect!r}"
                         " (use sqlite+aiosqlite:// or postgresql+asyncpg://)")
    return dialect


class Database:
    """A read engine and a write engine on one database URL.

    On PostgreSQL they are the same engine. On SQLite the write engine opens
    every transaction with ``BEGIN IMMEDIATE`` (see the module docstring).
    """

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.dialect = database_dialect(url)
        if self.dialect == "sqlite":
            self.read = self._sqlite_engine(url, immediate=False)
            self.write = self._sqlite_engine(url, immediate=True)
        else:
            self.read = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size,
                                            pool_pre_ping=True)
            self.write = self.read

    @staticmethod
    def _sqlite_engine(url: str, *, immediate: bool) -> AsyncEngine:
        engine = create_async_engine(url, connect_args={"timeout": 30})
        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event below emit BEGIN itself.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

        return engine

    async def create_schema(self, *, outbox: bool = True) -> None:
        """Migrate: create missing tables and (re)create the outbox triggers, in
        one transaction; idempotent, and safe when several replicas start at
        once. ``outbox=False`` drops the triggers (the write-path benchmark's
        baseline; nothing else should run without them)."""
        async with self.write.begin() as conn:
            if self.dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
            await conn.run_sync(metadata.create_all)
            await outbox_schema.install(conn, self.dialect, enabled=outbox)

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        async with self.read.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def fix_sequences(self, conn: AsyncConnection) -> None:
        """After inserting explicit ids on PostgreSQL, move the id sequence past them."""
        if self.dialect == "postgresql":
            await conn.execute(text(
                "SELECT setval(pg_get_serial_sequence('products', 'id'),"
                " GREATEST((SELECT COALESCE(MAX(id), 0) FROM products), 1))"))

    async def dispose(self) -> None:
        await self.read.dispose()
        if self.write is not self.read:
            await self.write.dispose()
