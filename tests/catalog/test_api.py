"""Every endpoint and error path, in process (Starlette's TestClient), on a
seeded SQLite file; the cache runs L1-only unless a test gives it Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from catalog.app import create_app
from catalog.config import Settings
from starlette.testclient import TestClient

from tests.support.redis_server import RedisServer

from .helpers import layers


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=sqlite_url, node_name="test-node", max_body_bytes=4096)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _error(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status, (response.status_code, response.text)  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error", "detail"} and body["detail"]
    return body  # type: ignore[no-any-return]


def test_get_product_is_composed_and_cached(client: TestClient) -> None:
    first = client.get("/products/3")
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"id", "name", "description", "category_id", "price", "stock",
                         "updated_at"}
    assert body["id"] == 3 and isinstance(body["price"], str) and "." in body["price"]
    assert layers(first) == {"product": "miss", "price": "miss", "stock": "miss"}
    assert first.headers["x-node"] == "test-node"
    assert layers(client.get("/products/3")) == {"product": "l1", "price": "l1", "stock": "l1"}


def test_price_write_invalidates_and_returns_the_product(client: TestClient) -> None:
    client.get("/products/4")
    response = client.put("/products/4/price", json={"price": "12.5"})
    assert response.status_code == 200
    assert response.json()["price"] == "12.50"
    assert response.headers["x-invalidated-tags"] == "price:4"  # the price entry only
    assert response.headers["x-invalidation"] == "price=active/eventual"
    assert client.get("/products/4").json()["price"] == "12.50"


def test_stock_set_and_delta(client: TestClient) -> None:
    assert client.put("/products/5/stock", json={"stock": 10}).json()["stock"] == 10
    assert client.put("/products/5/stock", json={"delta": -3}).json()["stock"] == 7
    _error(client.put("/products/5/stock", json={"delta": -8}), 409)
    assert client.get("/products/5").json()["stock"] == 7


def test_create_patch_delete_product(client: TestClient) -> None:
    created = client.post("/products", json={"name": "Teapot", "category_id": 2,
                                             "price": "3.10", "stock": 4, "description": "d"})
    assert created.status_code == 201
    body = created.json()
    assert body["price"] == "3.10" and body["stock"] == 4
    assert created.headers["location"] == f"/products/{body['id']}"
    pid = body["id"]
    page = client.get("/products", params={"category_id": 2, "limit": 100}).json()
    assert pid in [p["id"] for p in page["items"]]
    patched = client.patch(f"/products/{pid}", json={"name": "Big Teapot", "category_id": 3})
    assert patched.status_code == 200 and patched.json()["category_id"] == 3
    assert patched.headers["x-invalidated-tags"] == (
        f"product:{pid}, list:category:2, list:category:3")
    page = client.get("/categories/2/products", params={"limit": 100}).json()
    assert pid not in [p["id"] for p in page["items"]]
    assert client.delete(f"/products/{pid}").status_code == 204
    _error(client.get(f"/products/{pid}"), 404)
    _error(client.delete(f"/products/{pid}"), 404)


def test_lists_categories_countries(client: TestClient) -> None:
    page = client.get("/products", params={"limit": 5, "offset": 2}).json()
    assert [p["id"] for p in page["items"]] == [3, 4, 5, 6, 7]
    cats = client.get("/categories").json()["items"]
    assert len(cats) == 10 and cats[0]["name"] == "Books"
    assert client.get("/categories/1").json()["name"] == "Books"
    countries = client.get("/countries").json()["items"]
    assert {"code": "DE", "name": "Germany", "currency": "EUR"}.items() <= countries[4].items()
    _error(client.get("/categories/99/products"), 404)


def test_ttl_types_are_not_invalidated(client: TestClient) -> None:
    assert client.get("/categories/3").json()["name"] == "Garden"
    renamed = client.patch("/categories/3", json={"name": "Yard"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Yard"
    assert renamed.headers["x-invalidation"] == "category=ttl/eventual"
    assert client.get("/categories/3").json()["name"] == "Garden"  # cached until expiry
    changed = client.patch("/countries/DE", json={"currency": "DEM"})
    assert changed.status_code == 200 and changed.json()["currency"] == "DEM"


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("PUT", "/products/1/price", b"{not json", 400),
    ("PUT", "/products/1/price", b"", 400),
    ("PUT", "/products/1/price", b"[1, 2]", 422),
    ("PUT", "/products/1/price", b'{"price": 12.5}', 422),
    ("PUT", "/products/1/price", b'{"price": "-1.00"}', 422),
    ("PUT", "/products/1/price", b'{"price": "1.234"}', 422),
    ("PUT", "/products/1/price", b'{"price": "abc"}', 422),
    ("PUT", "/products/1/price", b'{"price": "NaN"}', 422),
    ("PUT", "/products/1/price", b'{"price": "1e3"}', 422),
    ("PUT", "/products/1/price", b'{"price": "1.00", "x": 1}', 422),
    ("PUT", "/products/1/stock", b'{"stock": -1}', 422),
    ("PUT", "/products/1/stock", b'{"stock": "5"}', 422),
    ("PUT", "/products/1/stock", b'{"stock": true}', 422),
    ("PUT", "/products/1/stock", b'{"stock": 1.5}', 422),
    ("PUT", "/products/1/stock", b'{"stock": 1, "delta": 1}', 422),
    ("PUT", "/products/1/stock", b'{"stock": 99999999999}', 422),
    ("PUT", "/products/999/price", b'{"price": "1.00"}', 404),
    ("PUT", "/products/999/stock", b'{"stock": 1}', 404),
    ("PATCH", "/products/1", b"{}", 422),
    ("PATCH", "/products/1", b'{"name": ""}', 422),
    ("PATCH", "/products/1", b'{"category_id": 999}', 422),
    ("PATCH", "/products/999", b'{"name": "x"}', 404),
    ("POST", "/products", b'{"name": "x"}', 422),
    ("POST", "/products", b'{"name": "x", "category_id": 77}', 422),
    ("POST", "/products", b'{"name": "x", "category_id": "1"}', 422),
    ("PATCH", "/categories/1", b'{"name": 5}', 422),
    ("PATCH", "/categories/42", b'{"name": "x"}', 404),
    ("PATCH", "/countries/XX", b'{"name": "x"}', 404),
    ("PATCH", "/countries/de", b'{"name": "x"}', 404),
    ("PATCH", "/countries/DE", b'{"currency": "euro"}', 422),
])
def test_bad_input_is_a_json_4xx(client: TestClient, method: str, path: str, body: bytes,
                                 status: int) -> None:
    response = client.request(method, path, content=body,
                              headers={"content-type": "application/json"})
    _error(response, status)


@pytest.mark.parametrize(("path", "status"), [
    ("/products/0", 404), ("/products/-1", 404), ("/products/abc", 404),
    ("/products/2147483648", 404), ("/products/99999999999999999999", 404),
    ("/products/1.5", 404), ("/products/999", 404), ("/nowhere", 404),
    ("/products?limit=0", 422), ("/products?limit=101", 422), ("/products?offset=-1", 422),
    ("/products?category_id=x", 422), ("/categories/0", 404),
])
def test_bad_paths_and_queries(client: TestClient, path: str, status: int) -> None:
    _error(client.get(path), status)


def test_oversized_body_is_413(client: TestClient) -> None:
    big = b'{"name": "' + b"x" * 5000 + b'"}'
    json_type = {"content-type": "application/json"}
    _error(client.patch("/products/1", content=big, headers=json_type), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(10):
            yield b" " * 1000

    _error(client.patch("/products/1", content=chunks(), headers=json_type), 413)


def test_wrong_method_is_json_405(client: TestClient) -> None:
    body = _error(client.post("/products/1"), 405)
    assert body["error"] == "method_not_allowed"


def test_health_ready_metrics_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz").json()
    assert ready["database"] == "ok" and ready["redis"].startswith("disabled")
    client.get("/products/1")
    metrics = client.get("/metrics").text
    assert 'hybridcache_requests_total{data_type="product"' in metrics
    assert 'catalog_db_queries_total{data_type="price",kind="read"}' in metrics
    assert 'catalog_http_responses_total{method="GET",route="/products/{id}"' in metrics
    assert client.get("/openapi.json").json()["openapi"].startswith("3.")


def test_readyz_reports_redis_down_as_degraded(sqlite_url: str, redis_server: RedisServer) -> None:
    settings = Settings(database_url=sqlite_url, redis_url=redis_server.url, node_name="n-r")
    with TestClient(create_app(settings)) as c:
        assert c.get("/readyz").json()["redis"] == "ok"
        redis_server.stop()
        deadline_body = None
        for _ in range(500):  # the cache notices the loss within its heartbeat timeout
            deadline_body = c.get("/readyz")
            if deadline_body.json()["redis"].startswith("degraded"):
                break
        assert deadline_body is not None and deadline_body.status_code == 200
        assert deadline_body.json()["status"] == "degraded"
        assert c.get("/products/1").status_code == 200
        assert c.put("/products/1/price", json={"price": "2.00"}).status_code == 200


def test_readyz_unready_when_database_unreachable(tmp_path: object) -> None:
    settings = Settings(database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none",
                        node_name="n-db", db_startup_timeout=0.5)
    app = create_app(settings)
    # Start-up retries for DB_STARTUP_TIMEOUT, then fails: never half-working.
    with pytest.raises(OSError), TestClient(app):
        pass


def test_create_reports_every_invalidation(client: TestClient) -> None:
    created = client.post("/products", json={"name": "Cup", "category_id": 4})
    assert created.status_code == 201
    pid = created.json()["id"]
    assert created.headers["x-invalidation"] == (
        "product=active/eventual, price=active/eventual, stock=active/eventual")
    # the new product's three entries, and the lists it joins (all products,
    # category 4): nothing else
    assert created.headers["x-invalidated-tags"] == (
        f"product:{pid}, list:products, list:category:4, price:{pid}, stock:{pid}")


def test_product_entries_carry_their_category_tag(client: TestClient) -> None:
    """category:{category_id} is only known once the product is loaded; the
    entry still carries it, so invalidating the category drops the product."""
    body = client.get("/products/6").json()
    assert layers(client.get("/products/6"))["product"] == "l1"
    cache = client.app.state.catalog.cache  # type: ignore[attr-defined]
    client.portal.call(cache.remove_by_tag, f"category:{body['category_id'] + 1000}")  # type: ignore[union-attr]
    assert layers(client.get("/products/6"))["product"] == "l1"
    client.portal.call(cache.remove_by_tag, f"category:{body['category_id']}")  # type: ignore[union-attr]
    assert layers(client.get("/products/6"))["product"] == "miss"
