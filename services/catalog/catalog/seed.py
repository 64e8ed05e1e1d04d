"""`python -m catalog seed --products N`: fill the database, idempotently.

Rows have fixed ids and deterministic contents, and are inserted with
"ON CONFLICT DO NOTHING", so running the seed twice (or on two replicas at
once) leaves the same data, and never overwrites rows that were changed since.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from . import db as t
from .db import Database, now

CATEGORIES = ["Books", "Music", "Garden", "Kitchen", "Toys", "Sports", "Tools",
              "Office", "Outdoor", "Games"]
COUNTRIES = [("AT", "Austria", "EUR"), ("BR", "Brazil", "BRL"), ("CA", "Canada", "CAD"),
             ("CH", "Switzerland", "CHF"), ("DE", "Germany", "EUR"), ("FR", "France", "EUR"),
             ("GB", "United Kingdom", "GBP"), ("IN", "India", "INR"), ("JP", "Japan", "JPY"),
             ("US", "United States", "USD")]
_ADJECTIVES = ["Red", "Small", "Sturdy", "Quiet", "Golden", "Swift", "Gentle", "Bold"]
_NOUNS = ["Lamp", "Kettle", "Chair", "Guitar", "Novel", "Rake", "Puzzle", "Racket", "Drill"]
BATCH = 500


def product_row(i: int, stamp: float) -> dict[str, Any]:
    """Deterministic contents of seeded product ``i``."""
    name = f"{_ADJECTIVES[i % len(_ADJECTIVES)]} {_NOUNS[(i // 3) % len(_NOUNS)]} #{i}"
    return {"id": i, "name": name, "description": f"Seeded product number {i}.",
            "category_id": (i - 1) % len(CATEGORIES) + 1, "updated_at": stamp}


async def seed(database: Database, products: int, *, outbox: bool = True) -> int:
    """Migrate, then insert whatever is missing of the seed data; returns the
    number of products. The outbox triggers record the inserted rows like any
    other change, so replicas already running drop what they cached about them."""
    if products < 0:
        raise ValueError(f"--products must not be negative, got {products}")
    await database.create_schema(outbox=outbox)
    stamp = now()
    insert = sqlite.insert if database.dialect == "sqlite" else postgresql.insert

    def rows_insert(table: Table, rows: list[dict[str, Any]]) -> Any:
        return insert(table).values(rows).on_conflict_do_nothing()

    async with database.write.begin() as conn:
        await conn.execute(rows_insert(t.categories, [
            {"id": i + 1, "name": n, "updated_at": stamp} for i, n in enumerate(CATEGORIES)]))
        await conn.execute(rows_insert(t.countries, [
            {"code": c, "name": n, "currency": cur, "updated_at": stamp}
            for c, n, cur in COUNTRIES]))
        for start in range(1, products + 1, BATCH):
            ids = range(start, min(start + BATCH, products + 1))
            await conn.execute(rows_insert(t.products, [product_row(i, stamp) for i in ids]))
            await conn.execute(rows_insert(t.prices, [
                {"product_id": i, "cents": 100 + (i * 37) % 9900, "updated_at": stamp}
                for i in ids]))
            await conn.execute(rows_insert(t.stock, [
                {"product_id": i, "quantity": (i * 7) % 50, "updated_at": stamp} for i in ids]))
        await database.fix_sequences(conn)
    return products
