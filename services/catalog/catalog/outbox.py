"""The invalidation outbox: database triggers that record every committed
change to a cached table, in the transaction that made it.

Why triggers and not the API: a price changed with psql, by a migration or by
another service never passes through the catalog's code, and a replica killed
between its commit and its invalidation never gets to invalidate. A row in
``cache_outbox`` commits (or rolls back) with the change itself, so whatever
committed is recorded, whoever wrote it; the relay (relay.py) turns the rows
into the same invalidations the API's writes make.

A row names the data type, the kind of change (``insert``/``update``/
``delete``) and the *identifying* fields of the row before and after: its key
and the fields list membership depends on (a product's ``category_id``), as
JSON. Not the whole row: the cache reloads values from the database; the outbox
only has to say which entries may now be wrong.

The same trigger bodies exist for PostgreSQL (one PL/pgSQL function, which also
``NOTIFY``s the relay; notifications are delivered on commit) and SQLite (three
triggers per table; the relay polls). ``install`` creates them idempotently and
``install(enabled=False)`` removes them (only the write-path benchmark does
that, to measure what they cost).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

Record = dict[str, Any]

#: PostgreSQL channel the triggers notify on commit.
CHANNEL = "catalog_outbox"
_OPS = ("insert", "update", "delete")


@dataclass(frozen=True, slots=True)
class Captured:
    """A cached table: the data type its rows are, and the identifying columns."""

    data_type: str
    columns: tuple[str, ...]


#: Every table the cache holds data of. A new cached table needs a line here.
CAPTURED: dict[str, Captured] = {
    "products": Captured("product", ("id", "category_id")),
    "prices": Captured("price", ("product_id",)),
    "stock": Captured("stock", ("product_id",)),
    "categories": Captured("category", ("id",)),
    "countries": Captured("country", ("code",)),
}


@dataclass(frozen=True, slots=True)
class Change:
    """One outbox row: a committed change to one row of a cached table."""

    id: int
    data_type: str
    kind: str
    old: Record | None
    new: Record | None
    created_at: float
    claimed: bool = False
    age: float = 0.0

    @classmethod
    def from_row(cls, row: Any) -> Change:
        """From a ``select_pending`` row."""
        return cls(int(row[0]), str(row[1]), str(row[2]), _keys(row[3]), _keys(row[4]),
                   float(row[5]), row[6] is not None, float(row[7]) - float(row[5]))

    @property
    def before(self) -> Record | None:
        return _record(self.old)

    @property
    def after(self) -> Record | None:
        return _record(self.new)

    def dedup_key(self) -> tuple[str, str, bytes, bytes]:
        """Changes with equal keys invalidate the same entries: publish one."""
        return (self.data_type, self.kind, orjson.dumps(self.old, option=orjson.OPT_SORT_KEYS),
                orjson.dumps(self.new, option=orjson.OPT_SORT_KEYS))


def _keys(raw: Any) -> Record | None:
    if raw is None:
        return None
    value = orjson.loads(raw)
    return value if isinstance(value, dict) else None


def _record(keys: Record | None) -> Record | None:
    """Identifying columns as the record the API's writes pass: price and stock
    records are keyed ``id`` (the product's id) like ``repo``'s records."""
    if keys is None:
        return None
    record = dict(keys)
    if "product_id" in record:
        record.setdefault("id", record["product_id"])
    return record


_PG_NOW = "extract(epoch FROM clock_timestamp())::double precision"
_SQLITE_NOW = "(julianday('now') - 2440587.5) * 86400.0"


def select_pending(dialect: str, limit: int) -> str:
    """Outstanding rows, oldest first, with the database's clock: a claimed
    row's age is measured on the clock that stamped it."""
    now = _PG_NOW if dialect == "postgresql" else _SQLITE_NOW
    return (f"SELECT id, data_type, op, old_keys, new_keys, created_at, origin, {now}"
            f" FROM cache_outbox ORDER BY id LIMIT {limit}")

# ------------------------------------------------------------------ PostgreSQL

_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION catalog_outbox_capture() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    old_keys text;
    new_keys text;
    claim text;
BEGIN
    -- TG_ARGV[0] is the data type, the rest the identifying columns.
    IF TG_OP <> 'INSERT' THEN
        SELECT json_object_agg(k, to_jsonb(OLD) -> k)::text INTO old_keys
        FROM unnest(TG_ARGV[1:]) AS k;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        SELECT json_object_agg(k, to_jsonb(NEW) -> k)::text INTO new_keys
        FROM unnest(TG_ARGV[1:]) AS k;
    END IF;
    -- origin: the API write that will invalidate this itself (claims.py).
    claim := NULLIF(current_setting('catalog.origin', true), '');
    INSERT INTO cache_outbox (data_type, op, old_keys, new_keys, created_at, origin)
    VALUES (TG_ARGV[0], lower(TG_OP), old_keys, new_keys,
            extract(epoch FROM clock_timestamp())::double precision, claim);
    -- A claimed row is not due before the relay's grace: its timer finds it,
    -- and the relay is not woken for every API write.
    IF claim IS NULL THEN
        PERFORM pg_notify('{CHANNEL}', '');
    END IF;
    RETURN NULL;
END
$$
"""


def _pg_statements(enabled: bool) -> list[str]:
    out = [_PG_FUNCTION] if enabled else []
    for table, captured in CAPTURED.items():
        if enabled:
            args = ", ".join(f"'{a}'" for a in (captured.data_type, *captured.columns))
            out.append(f"CREATE OR REPLACE TRIGGER catalog_outbox AFTER INSERT OR UPDATE"
                       f" OR DELETE ON {table} FOR EACH ROW"
                       f" EXECUTE FUNCTION catalog_outbox_capture({args})")
        else:
            out.append(f"DROP TRIGGER IF EXISTS catalog_outbox ON {table}")
    return out


# ------------------------------------------------------------------ SQLite


def _sqlite_keys(alias: str, columns: tuple[str, ...]) -> str:
    return "json_object(" + ", ".join(f"'{c}', {alias}.{c}" for c in columns) + ")"


def _sqlite_statements(enabled: bool) -> list[str]:
    out = []
    for table, captured in CAPTURED.items():
        for op in _OPS:
            name = f"catalog_outbox_{table}_{op}"
            # DROP + CREATE in one transaction: a changed trigger body replaces
            # the old one (CREATE TRIGGER IF NOT EXISTS would keep it).
            out.append(f"DROP TRIGGER IF EXISTS {name}")
            if not enabled:
                continue
            old = "NULL" if op == "insert" else _sqlite_keys("OLD", captured.columns)
            new = "NULL" if op == "delete" else _sqlite_keys("NEW", captured.columns)
            out.append(
                f"CREATE TRIGGER {name} AFTER {op.upper()} ON {table} BEGIN"
                f" INSERT INTO cache_outbox (data_type, op, old_keys, new_keys, created_at)"
                f" VALUES ('{captured.data_type}', '{op}', {old}, {new}, {_SQLITE_NOW});"
                f" END")
    return out


async def install(conn: AsyncConnection, dialect: str, *, enabled: bool = True) -> None:
    """Create (or, disabled, drop) the capture triggers, inside the caller's
    schema transaction: idempotent, and atomic with the tables they watch."""
    statements = _pg_statements(enabled) if dialect == "postgresql" else _sqlite_statements(enabled)
    for statement in statements:
        await conn.exec_driver_sql(statement)
    if dialect == "sqlite":
        await conn.exec_driver_sql(
            "INSERT OR IGNORE INTO cache_relay_lease (name, holder, expires_at)"
            " VALUES ('outbox', '', 0)")
