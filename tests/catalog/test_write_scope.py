"""A write invalidates what it changed: the entity's own tag, plus the lists
whose membership it changed, and nothing else; lists are cached in blocks so
equivalent queries share keys. In process (Starlette's TestClient) on a seeded
SQLite file, L1 only (what an entry carries is the same with Redis)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from catalog import lists
from catalog.app import create_app
from catalog.config import Settings
from catalog.policies import DEFAULT_POLICIES
from catalog.write_scope import tags_for_write
from hybridcache.policy import Policy
from starlette.testclient import TestClient

from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

from .helpers import layers

PRODUCT = DEFAULT_POLICIES["product"]


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=sqlite_url, node_name="test-node", max_body_bytes=4096)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _cache(client: TestClient) -> Any:
    return client.app.state.catalog.cache  # type: ignore[attr-defined]


def _cached(client: TestClient, key: str) -> bool:
    return _cache(client).peek(key) is not None


def _entries(client: TestClient) -> int:
    return int(_cache(client).stats().l1_entries)


# ------------------------------------------------------------ the decision

@pytest.mark.parametrize(("change", "before", "after", "tags"), [
    ("update", {"id": 7, "category_id": 2}, {"id": 7, "category_id": 2}, ["product:7"]),
    ("update", {"id": 7, "category_id": 2}, {"id": 7, "category_id": 5},
     ["product:7", "list:category:2", "list:category:5"]),
    ("create", None, {"id": 9, "category_id": 4},
     ["product:9", "list:products", "list:category:4"]),
    ("delete", {"id": 9, "category_id": 4}, None,
     ["product:9", "list:products", "list:category:4"]),
])
def test_product_writes_invalidate_their_own_tag_and_changed_lists(
        change: Any, before: Any, after: Any, tags: list[str]) -> None:
    assert tags_for_write(PRODUCT, change, before, after) == tags


def test_other_data_types_have_no_lists_and_ttl_invalidates_nothing() -> None:
    price = DEFAULT_POLICIES["price"]
    assert tags_for_write(price, "create", None, {"id": 3, "product_id": 3}) == ["price:3"]
    stock = DEFAULT_POLICIES["stock"]
    assert tags_for_write(stock, "update", {"id": 3}, {"id": 3}) == ["stock:3"]
    # both still carry the product's tag: its writes and a flush of it remove them
    assert "product:{id}" in price.tags and "product:{id}" in stock.tags
    assert tags_for_write(DEFAULT_POLICIES["category"], "update", {"id": 1}, {"id": 1}) == []


def test_a_policy_may_widen_what_a_write_invalidates() -> None:
    wide = Policy.from_spec({"dataType": "product", "tags": list(PRODUCT.tags),
                             "invalidates": ["product:{id}", "products"]})
    assert tags_for_write(wide, "update", {"id": 1, "category_id": 1},
                          {"id": 1, "category_id": 1}) == ["product:1", "products"]


def test_bad_calls_are_value_errors() -> None:
    with pytest.raises(ValueError, match="change must be one of"):
        tags_for_write(PRODUCT, "rename", {"id": 1}, {"id": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="before or after"):
        tags_for_write(PRODUCT, "update", None, None)


# ------------------------------------------------------------ through the API

def test_a_rename_keeps_every_other_product_cached(client: TestClient) -> None:
    for pid in (7, 8, 9):
        client.get(f"/products/{pid}")
    client.get("/products", params={"limit": 20})
    renamed = client.patch("/products/7", json={"name": "Renamed"})
    assert renamed.headers["x-invalidated-tags"] == "product:7"
    assert client.get("/products/7").json()["name"] == "Renamed"
    for pid in (8, 9):
        assert layers(client.get(f"/products/{pid}"))["product"] == "l1"
    assert _cached(client, lists.block_key(None, 0))  # the list did not change


def test_a_price_change_keeps_the_product_and_its_stock_cached(client: TestClient) -> None:
    """A price write invalidates the price entry only (its own tag): the first
    read after it reloads one entry, not three (the time from a commit to every
    replica serving it is mostly those reloads)."""
    client.get("/products/4")
    assert layers(client.get("/products/4")) == {"product": "l1", "price": "l1", "stock": "l1"}
    changed = client.put("/products/4/price", json={"price": "12.34"})
    assert changed.status_code == 200
    assert changed.headers["x-invalidated-tags"] == "price:4"
    after = client.get("/products/4")
    assert after.json()["price"] == "12.34"
    assert layers(after)["product"] == layers(after)["stock"] == "l1"


def test_a_category_move_drops_exactly_the_two_lists(client: TestClient) -> None:
    moving = client.get("/products/10").json()
    old = moving["category_id"]
    new = old % 10 + 1
    other = new % 10 + 1
    for category in (old, new, other):
        client.get("/products", params={"category_id": category})
    client.get("/products")
    client.patch("/products/10", json={"category_id": new})
    assert not _cached(client, lists.block_key(old, 0))
    assert not _cached(client, lists.block_key(new, 0))
    assert _cached(client, lists.block_key(other, 0))
    assert _cached(client, lists.block_key(None, 0))  # ordered by id: unchanged
    old_ids = [p["id"] for p in client.get(f"/categories/{old}/products").json()["items"]]
    new_ids = [p["id"] for p in client.get(f"/categories/{new}/products").json()["items"]]
    assert 10 not in old_ids and 10 in new_ids


def test_create_and_delete_update_the_lists(client: TestClient) -> None:
    before = [p["id"] for p in client.get("/products", params={"limit": 100}).json()["items"]]
    pid = client.post("/products", json={"name": "New", "category_id": 3}).json()["id"]
    after = [p["id"] for p in client.get("/products", params={"limit": 100}).json()["items"]]
    assert after == [*before, pid]
    assert pid in [p["id"] for p in client.get("/categories/3/products").json()["items"]]
    assert client.delete(f"/products/{pid}").status_code == 204
    assert pid not in [p["id"] for p in client.get("/categories/3/products").json()["items"]]
    assert [p["id"] for p in client.get("/products", params={"limit": 100}).json()["items"]] \
        == before


def test_every_limit_and_offset_shares_the_same_blocks(client: TestClient) -> None:
    """50 seeded products: one cached block for the whole list, whatever the page."""
    for pid in range(1, 51):
        client.get(f"/products/{pid}")
    held = _entries(client)
    pages = [(limit, offset) for limit in (1, 7, 20, 100) for offset in (0, 3, 17, 49, 60)]
    for limit, offset in pages:
        body = client.get("/products", params={"limit": limit, "offset": offset}).json()
        assert [p["id"] for p in body["items"]] == list(range(offset + 1, 51))[:limit]
    assert _entries(client) == held + 1
    assert _cached(client, lists.block_key(None, 0))


def test_missing_records_and_empty_lists_are_not_cached(client: TestClient) -> None:
    held = _entries(client)
    for pid in (999_999, 1_000_000, 2_147_483_647):
        assert client.get(f"/products/{pid}").status_code == 404
    assert client.get("/products", params={"category_id": 12345}).json()["items"] == []
    assert client.get("/products", params={"offset": 5000}).json()["items"] == []
    assert client.get("/categories/77/products").status_code == 404
    assert _entries(client) == held
    assert _cache(client).inspect("product:999999") is None


@pytest.mark.parametrize(("limit", "offset", "blocks"), [
    (1, 0, [0]), (100, 0, [0]), (100, 1, [0, 1]), (20, 99, [0, 1]), (20, 100, [1]),
])
def test_blocks_cover_the_page(limit: int, offset: int, blocks: list[int]) -> None:
    assert list(lists.blocks(limit, offset)) == blocks
    loaded = [list(range(b * lists.BLOCK, (b + 1) * lists.BLOCK)) for b in blocks]
    assert lists.page(loaded, blocks[0], limit, offset) == list(range(offset, offset + limit))


# ------------------------------------------------------------ explicit flush

def _flush(redis_url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update({"DATABASE_URL": "sqlite+aiosqlite:///unused.db", "CACHE_KEY_PREFIX": "hc:",
                "LOG_LEVEL": "INFO"})
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return subprocess.run([sys.executable, "-m", "catalog", "flush", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_flush_drops_a_whole_data_type_on_purpose(sqlite_url: str,
                                                  redis_server: RedisServer) -> None:
    """`python -m catalog flush --data-type product` removes the broad tag
    (``products``) on every replica: every product entry and list block goes;
    prices stay."""
    settings = Settings(database_url=sqlite_url, redis_url=redis_server.url, node_name="n-f")
    with TestClient(create_app(settings)) as c:
        for pid in (1, 2):
            c.get(f"/products/{pid}")
        c.get("/products")
        assert _cached(c, "product:1") and _cached(c, lists.block_key(None, 0))
        done = _flush(redis_server.url, "--data-type", "product")
        assert done.returncode == 0, done.stderr
        assert "removed tags products" in done.stderr
        wait_until(lambda: not _cached(c, "product:1") and not _cached(c, "product:2")
                   and not _cached(c, lists.block_key(None, 0)), what="the flush to arrive")
        assert layers(c.get("/products/1")) == {"product": "miss", "price": "l1",
                                                "stock": "l1"}


@pytest.mark.parametrize(("redis", "args", "words"), [
    (False, ["--data-type", "product"], "REDIS_URL is not set"),
    (True, ["--data-type", "country"], "strategy ttl"),
    (True, ["--data-type", "price"], "no tag without placeholders"),
    (True, ["--data-type", "widget"], "unknown data type 'widget'"),
])
def test_flush_refuses_with_a_reason(redis_server: RedisServer, redis: bool, args: list[str],
                                     words: str) -> None:
    done = _flush(redis_server.url if redis else None, *args)
    assert done.returncode == 1
    assert words in done.stderr and "Traceback" not in done.stderr
