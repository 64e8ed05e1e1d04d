"""Data access: one function per query, returning plain dict records.

Records are what the cache stores and what tag templates are rendered with.
Each write runs in one transaction and returns the record before and after,
so the caller can invalidate the tags of both (a product moving category must
invalidate the old category's tag as well as the new one's).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from . import db
from .db import Database, now
from .errors import Conflict, Invalid, NotFound
from .metrics import DB_QUERIES

Record = dict[str, Any]

# The labelled children, made once (labels() per query costs a lock and a lookup).
_QUERY_COUNTERS = {(dt, kind): DB_QUERIES.labels(dt, kind)
                   for dt in ("product", "price", "stock", "category", "country")
                   for kind in ("read", "write")}


def _count(data_type: str, kind: str = "read") -> None:
    _QUERY_COUNTERS[data_type, kind].inc()


def format_cents(cents: int) -> str:
    """12345 -> "123.45" (prices travel as decimal strings)."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def _product(row: Any) -> Record:
    return {"id": row.id, "name": row.name, "description": row.description,
            "category_id": row.category_id, "updated_at": row.updated_at}


def _price(row: Any) -> Record:
    return {"id": row.product_id, "price": format_cents(row.cents), "updated_at": row.updated_at}


def _stock(row: Any) -> Record:
    return {"id": row.product_id, "stock": row.quantity, "updated_at": row.updated_at}


def _category(row: Any) -> Record:
    return {"id": row.id, "name": row.name, "updated_at": row.updated_at}


def _country(row: Any) -> Record:
    return {"code": row.code, "name": row.name, "currency": row.currency,
            "updated_at": row.updated_at}


# ---------------------------------------------------------------- reads

async def get_product(database: Database, product_id: int) -> Record | None:
    _count("product")
    async with database.read.connect() as conn:
        row = (await conn.execute(
            select(db.products).where(db.products.c.id == product_id))).first()
    return None if row is None else _product(row)


async def get_price(database: Database, product_id: int) -> Record | None:
    _count("price")
    async with database.read.connect() as conn:
        row = (await conn.execute(
            select(db.prices).where(db.prices.c.product_id == product_id))).first()
    return None if row is None else _price(row)


async def get_stock(database: Database, product_id: int) -> Record | None:
    _count("stock")
    async with database.read.connect() as conn:
        row = (await conn.execute(
            select(db.stock).where(db.stock.c.product_id == product_id))).first()
    return None if row is None else _stock(row)


async def list_product_ids(database: Database, category_id: int | None,
                           limit: int, offset: int) -> list[int]:
    _count("product")
    query = select(db.products.c.id).order_by(db.products.c.id).limit(limit).offset(offset)
    if category_id is not None:
        query = query.where(db.products.c.category_id == category_id)
    async with database.read.connect() as conn:
        return [r.id for r in await conn.execute(query)]


async def get_category(database: Database, category_id: int) -> Record | None:
    _count("category")
    async with database.read.connect() as conn:
        row = (await conn.execute(
            select(db.categories).where(db.categories.c.id == category_id))).first()
    return None if row is None else _category(row)


async def list_categories(database: Database) -> list[Record]:
    _count("category")
    async with database.read.connect() as conn:
        rows = await conn.execute(select(db.categories).order_by(db.categories.c.id))
        return [_category(r) for r in rows]


async def list_countries(database: Database) -> list[Record]:
    _count("country")
    async with database.read.connect() as conn:
        rows = await conn.execute(select(db.countries).order_by(db.countries.c.code))
        return [_country(r) for r in rows]


# ---------------------------------------------------------------- writes

async def _require_category(conn: AsyncConnection, category_id: int) -> None:
    found = (await conn.execute(
        select(db.categories.c.id).where(db.categories.c.id == category_id))).first()
    if found is None:
        raise Invalid({"category_id": f"category {category_id} does not exist"})


async def _locked_product(conn: AsyncConnection, product_id: int) -> Record:
    row = (await conn.execute(select(db.products).where(db.products.c.id == product_id)
                              .with_for_update())).first()
    if row is None:
        raise NotFound(f"product {product_id} does not exist")
    return _product(row)


async def create_product(database: Database, fields: Record) -> Record:
    """Insert a product with its price and stock; returns the product record."""
    _count("product", "write")
    stamp = now()
    async with database.write.begin() as conn:
        await _require_category(conn, fields["category_id"])
        result = await conn.execute(insert(db.products).values(
            name=fields["name"], description=fields.get("description", ""),
            category_id=fields["category_id"], updated_at=stamp).returning(db.products.c.id))
        product_id = result.scalar_one()
        await conn.execute(insert(db.prices).values(
            product_id=product_id, cents=fields.get("cents", 0), updated_at=stamp))
        await conn.execute(insert(db.stock).values(
            product_id=product_id, quantity=fields.get("stock", 0), updated_at=stamp))
        row = (await conn.execute(select(db.products).where(db.products.c.id == product_id))).one()
    return _product(row)


async def update_product(database: Database, product_id: int,
                         fields: Record) -> tuple[Record, Record]:
    _count("product", "write")
    async with database.write.begin() as conn:
        old = await _locked_product(conn, product_id)
        if "category_id" in fields and fields["category_id"] != old["category_id"]:
            await _require_category(conn, fields["category_id"])
        await conn.execute(update(db.products).where(db.products.c.id == product_id)
                           .values(**fields, updated_at=now()))
        row = (await conn.execute(select(db.products).where(db.products.c.id == product_id))).one()
    return old, _product(row)


async def delete_product(database: Database, product_id: int) -> Record:
    _count("product", "write")
    async with database.write.begin() as conn:
        old = await _locked_product(conn, product_id)
        await conn.execute(delete(db.prices).where(db.prices.c.product_id == product_id))
        await conn.execute(delete(db.stock).where(db.stock.c.product_id == product_id))
        await conn.execute(delete(db.products).where(db.products.c.id == product_id))
    return old


async def set_price(database: Database, product_id: int, cents: int) -> tuple[Record, Record]:
    _count("price", "write")
    async with database.write.begin() as conn:
        old = (await conn.execute(select(db.prices).where(db.prices.c.product_id == product_id)
                                  .with_for_update())).first()
        if old is None:
            raise NotFound(f"product {product_id} does not exist")
        await conn.execute(update(db.prices).where(db.prices.c.product_id == product_id)
                           .values(cents=cents, updated_at=now()))
        row = (await conn.execute(
            select(db.prices).where(db.prices.c.product_id == product_id))).one()
    return _price(old), _price(row)


async def set_stock(database: Database, product_id: int, *, stock: int | None = None,
                    delta: int | None = None) -> tuple[Record, Record]:
    """Set the level to ``stock``, or add ``delta`` atomically (never below zero).

    The delta form is one UPDATE, so concurrent adjustments from any number of
    replicas add up exactly; going below zero is a 409 and changes nothing.
    """
    _count("stock", "write")
    async with database.write.begin() as conn:
        old = (await conn.execute(select(db.stock).where(db.stock.c.product_id == product_id)
                                  .with_for_update())).first()
        if old is None:
            raise NotFound(f"product {product_id} does not exist")
        if delta is not None:
            new_quantity = db.stock.c.quantity + delta
            result = await conn.execute(
                update(db.stock).where(db.stock.c.product_id == product_id,
                                      new_quantity >= 0, new_quantity <= 2_147_483_647)
                .values(quantity=new_quantity, updated_at=now()))
            if result.rowcount == 0:
                raise Conflict(f"stock of product {product_id} is {old.quantity};"
                               f" a change of {delta} would leave it out of range")
        else:
            await conn.execute(update(db.stock).where(db.stock.c.product_id == product_id)
                               .values(quantity=stock, updated_at=now()))
        row = (await conn.execute(
            select(db.stock).where(db.stock.c.product_id == product_id))).one()
    return _stock(old), _stock(row)


async def _update_one(database: Database, table: Any, key_column: Any, key: object,
                      what: str, fields: Record,
                      shape: Any) -> tuple[Record, Record]:
    """Update one row by key in a transaction; the row before and after."""
    async with database.write.begin() as conn:
        old = (await conn.execute(select(table).where(key_column == key)
                                  .with_for_update())).first()
        if old is None:
            raise NotFound(f"{what} {key} does not exist")
        await conn.execute(update(table).where(key_column == key)
                           .values(**fields, updated_at=now()))
        row = (await conn.execute(select(table).where(key_column == key))).one()
    return shape(old), shape(row)


async def update_category(database: Database, category_id: int,
                          name: str) -> tuple[Record, Record]:
    _count("category", "write")
    return await _update_one(database, db.categories, db.categories.c.id, category_id,
                             "category", {"name": name}, _category)


async def update_country(database: Database, code: str,
                         fields: Record) -> tuple[Record, Record]:
    _count("country", "write")
    return await _update_one(database, db.countries, db.countries.c.code, code,
                             "country", fields, _country)

