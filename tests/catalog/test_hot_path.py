"""Ready answers of ``GET /products/{id}`` (catalog/hot.py): served before the
route while their three parts are unchanged L1 hits, and never after any
part was removed, replaced or expired."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from catalog.app import create_app
from catalog.config import Settings
from hybridcache import CacheOptions, HybridCache
from starlette.testclient import TestClient

from tests.support import plain_sql


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(sqlite_url: str, clock: Clock) -> Iterator[TestClient]:
    settings = Settings(database_url=sqlite_url, node_name="hot-node", outbox=False)
    cache = HybridCache(CacheOptions(redis_url=None, node_id="hot-node", monotonic=clock))
    with TestClient(create_app(settings, cache=cache), raise_server_exceptions=False) as c:
        c.sqlite_url = sqlite_url  # type: ignore[attr-defined]
        yield c


def _route_disabled(client: TestClient) -> list[int]:
    """Make the route's own rendering fail loudly; returns the ids it was asked for."""
    asked: list[int] = []

    async def refuse(product_id: int) -> Any:
        asked.append(product_id)
        raise AssertionError("the route ran")

    client.app.state.catalog.product_json = refuse  # type: ignore[attr-defined]
    return asked


def test_a_repeated_read_is_answered_from_the_ready_bytes(client: TestClient) -> None:
    first = client.get("/products/1")
    assert first.status_code == 200
    asked = _route_disabled(client)
    again = client.get("/products/1")
    assert asked == []
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["x-cache"] == "product=l1, price=l1, stock=l1"
    assert again.headers["x-node"] == "hot-node"
    assert again.headers["content-type"] == "application/json"
    assert int(again.headers["content-length"]) == len(first.content)


@pytest.mark.parametrize(("key", "sql", "field", "expected"), [
    ("product:1", "UPDATE products SET name = 'renamed' WHERE id = 1", "name", "renamed"),
    ("price:1", "UPDATE prices SET cents = 4321 WHERE product_id = 1", "price", "43.21"),
    ("stock:1", "UPDATE stock SET quantity = 777 WHERE product_id = 1", "stock", 777),
])
def test_a_removed_part_is_never_served_from_the_old_bytes(
        client: TestClient, key: str, sql: str, field: str, expected: object) -> None:
    client.get("/products/1")
    assert client.get("/products/1").headers["x-cache"] == "product=l1, price=l1, stock=l1"
    plain_sql.run(client.sqlite_url, sql)  # type: ignore[attr-defined]
    client.portal.call(client.app.state.catalog.cache.remove, key)  # type: ignore[attr-defined,union-attr]
    changed = client.get("/products/1")
    assert changed.json()[field] == expected
    assert "miss" in changed.headers["x-cache"]
    assert client.get("/products/1").json()[field] == expected


def test_an_expired_part_is_never_served_from_the_old_bytes(client: TestClient,
                                                            clock: Clock) -> None:
    client.get("/products/1")
    plain_sql.run(client.sqlite_url,  # type: ignore[attr-defined]
                  "UPDATE prices SET cents = 1234 WHERE product_id = 1")
    assert client.get("/products/1").json()["price"] != "12.34"  # still cached
    clock.now += 31  # past the price's 30 s L1 lifetime
    after = client.get("/products/1")
    assert after.json()["price"] == "12.34"
    assert "price=miss" in after.headers["x-cache"]


def test_other_forms_of_the_path_go_through_the_route(client: TestClient) -> None:
    client.get("/products/1")
    asked = _route_disabled(client)
    assert client.get("/products/01").status_code == 500  # the route ran (and refused)
    assert client.head("/products/1").status_code == 500
    assert asked == [1, 1]
