"""The Starlette application: routes, error handling, metrics, lifespan.

One app per replica. The lifespan opens the database (creating the schema)
and the hybrid cache (L1, plus Redis L2 and backplane when REDIS_URL is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from hybridcache import CacheOptions, HybridCache
from hybridcache.policy import Policy
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import repo, validation
from .config import Settings
from .db import Database
from .errors import (
    ApiError,
    NotFound,
    api_error_handler,
    count_error,
    http_error_handler,
    unexpected_error_handler,
)
from .jsonresp import RawJSONResponse, json_response
from .metrics import HTTP_RESPONSES
from .openapi import openapi_document
from .store import CatalogStore, Invalidation, iso

log = logging.getLogger("catalog.app")
Endpoint = Callable[[Request], Awaitable[Response]]


def _store(request: Request) -> CatalogStore:
    store: CatalogStore = request.app.state.store
    return store


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _node_headers(request: Request, extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = {"X-Node": _store(request).cache.node_id}
    if extra:
        headers.update(extra)
    return headers


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record as served: timestamps as ISO 8601 strings."""
    out = dict(record)
    if "updated_at" in out:
        out["updated_at"] = iso(out["updated_at"])
    return out


# ------------------------------------------------------------------ products

async def get_product(request: Request) -> Response:
    """The hot path: kept flat (no helper layers; counted inline, not wrapped)."""
    store: CatalogStore = request.scope["app"].catalog_store
    product_id = validation.path_id(request.path_params["id"], "product")
    body, layers = await store.product_json(product_id)
    if body is None:
        raise NotFound(f"product {product_id} does not exist")
    counts = HTTP_RESPONSES.counts
    counts[_HOT_KEY] = counts.get(_HOT_KEY, 0) + 1
    return RawJSONResponse(body, [(b"x-cache", layers), (b"x-node", store.node_id_bytes)])


_HOT_KEY = ("/products/{id}", "GET", 200)


async def _product_page(request: Request, category_id: int | None) -> Response:
    store = _store(request)
    params = request.query_params
    limit = validation.query_int(params, "limit", validation.LIMIT_DEFAULT, 1,
                                 validation.LIMIT_MAX)
    offset = validation.query_int(params, "offset", 0, 0, validation.OFFSET_MAX)
    assert limit is not None and offset is not None
    ids = await store.product_ids(category_id, limit, offset)
    items = []
    for product_id in ids:
        body, _ = await store.full_product(product_id)
        if body is not None:
            items.append(body)
    return json_response({"items": items, "limit": limit, "offset": offset},
                         headers=_node_headers(request))


async def list_products(request: Request) -> Response:
    category_id = validation.query_int(request.query_params, "category_id", None, 1,
                                       validation.ID_MAX)
    return await _product_page(request, category_id)


async def category_products(request: Request) -> Response:
    category_id = validation.path_id(request.path_params["id"], "category")
    if await _store(request).category(category_id) is None:
        raise NotFound(f"category {category_id} does not exist")
    return await _product_page(request, category_id)


def _invalidation_headers(*invalidations: Invalidation) -> dict[str, str]:
    """One set of headers for one or more invalidations (values joined)."""
    merged: dict[str, list[str]] = {}
    for inv in invalidations:
        for name, value in inv.headers().items():
            merged.setdefault(name, [])
            for part in value.split(", "):
                if part not in merged[name] and part != "-":
                    merged[name].append(part)
    return {name: ", ".join(parts) or "-" for name, parts in merged.items()}


async def _respond_product(request: Request, product_id: int, status: int,
                           *invalidations: Invalidation) -> Response:
    headers = _invalidation_headers(*invalidations)
    body, layers = await _store(request).full_product(product_id)
    if body is None:  # deleted concurrently, after our write
        raise NotFound(f"product {product_id} does not exist")
    headers["X-Cache"] = layers
    return json_response(body, status=status, headers=_node_headers(request, headers))


async def create_product(request: Request) -> Response:
    fields = validation.product_create(
        await validation.read_json(request, _settings(request).max_body_bytes))
    store = _store(request)
    record = await repo.create_product(store.db, fields)
    price = {"id": record["id"], "product_id": record["id"]}
    invalidations = (await store.invalidate("product", record),
                     await store.invalidate("price", price),
                     await store.invalidate("stock", price))
    log.info("created product %s", record["id"])
    response = await _respond_product(request, record["id"], 201, *invalidations)
    response.headers["Location"] = f"/products/{record['id']}"
    return response


async def patch_product(request: Request) -> Response:
    product_id = validation.path_id(request.path_params["id"], "product")
    fields = validation.product_patch(
        await validation.read_json(request, _settings(request).max_body_bytes))
    store = _store(request)
    old, new = await repo.update_product(store.db, product_id, fields)
    inv = await store.invalidate("product", old, new)
    log.info("updated product %s: %s", product_id, sorted(fields))
    return await _respond_product(request, product_id, 200, inv)


async def delete_product(request: Request) -> Response:
    product_id = validation.path_id(request.path_params["id"], "product")
    store = _store(request)
    old = await repo.delete_product(store.db, product_id)
    ids = {"id": product_id, "product_id": product_id}
    invalidations = (await store.invalidate("product", old),
                     await store.invalidate("price", ids),
                     await store.invalidate("stock", ids))
    headers = _invalidation_headers(*invalidations)
    log.info("deleted product %s", product_id)
    return Response(status_code=204, headers=_node_headers(request, headers))


async def put_price(request: Request) -> Response:
    product_id = validation.path_id(request.path_params["id"], "product")
    cents = validation.price_put(
        await validation.read_json(request, _settings(request).max_body_bytes))
    store = _store(request)
    old, new = await repo.set_price(store.db, product_id, cents)
    inv = await store.invalidate("price", old, new)
    log.info("price of product %s: %s -> %s", product_id, old["price"], new["price"])
    return await _respond_product(request, product_id, 200, inv)


async def put_stock(request: Request) -> Response:
    product_id = validation.path_id(request.path_params["id"], "product")
    value, delta = validation.stock_put(
        await validation.read_json(request, _settings(request).max_body_bytes))
    store = _store(request)
    old, new = await repo.set_stock(store.db, product_id, value=value, delta=delta)
    inv = await store.invalidate("stock", old, new)
    log.info("stock of product %s: %s -> %s", product_id, old["stock"], new["stock"])
    return await _respond_product(request, product_id, 200, inv)


# ------------------------------------------------------------------ categories, countries

async def list_categories(request: Request) -> Response:
    items = [_public(c) for c in await _store(request).categories()]
    return json_response({"items": items}, headers=_node_headers(request))


async def get_category(request: Request) -> Response:
    category_id = validation.path_id(request.path_params["id"], "category")
    record = await _store(request).category(category_id)
    if record is None:
        raise NotFound(f"category {category_id} does not exist")
    return json_response(_public(record), headers=_node_headers(request))


async def patch_category(request: Request) -> Response:
    category_id = validation.path_id(request.path_params["id"], "category")
    name = validation.category_patch(
        await validation.read_json(request, _settings(request).max_body_bytes))
    store = _store(request)
    old, new = await repo.update_category(store.db, category_id, name)
    inv = await store.invalidate("category", old, new)
    return json_response(_public(new), headers=_node_headers(request, inv.headers()))


async def list_countries(request: Request) -> Response:
    items = [_public(c) for c in await _store(request).countries()]
    return json_response({"items": items}, headers=_node_headers(request))


async def patch_country(request: Request) -> Response:
    code = validation.country_code(request.path_params["code"])
    fields = validation.country_patch(
        await validation.read_json(request, _settings(request).max_body_bytes))
    store = _store(request)
    old, new = await repo.update_country(store.db, code, fields)
    inv = await store.invalidate("country", old, new)
    return json_response(_public(new), headers=_node_headers(request, inv.headers()))


# ------------------------------------------------------------------ operations

async def healthz(request: Request) -> Response:
    return json_response({"status": "ok", "node": _store(request).cache.node_id})


async def readyz(request: Request) -> Response:
    """Ready while the database answers; Redis down only degrades (L1 + DB)."""
    store = _store(request)
    body: dict[str, Any] = {"node": store.cache.node_id}
    try:
        await asyncio.wait_for(store.db.ping(), timeout=2.0)
        body["database"] = "ok"
    except Exception as exc:
        body["database"] = f"unreachable: {type(exc).__name__}: {exc}"[:300]
    if store.settings.redis_url is None:
        body["redis"] = "disabled (L1 only)"
    else:
        body["redis"] = "ok" if store.cache.connected else "degraded (L1 + database only)"
    ready = body["database"] == "ok"
    body["status"] = ("ready" if body["redis"] != "degraded (L1 + database only)"
                      else "degraded") if ready else "unready"
    body["policies"] = {dt: _policy_summary(store.policy(dt))
                        for dt in ("product", "price", "stock", "category", "country")}
    return json_response(body, status=200 if ready else 503)


def _policy_summary(policy: Policy) -> dict[str, Any]:
    return policy.to_dict()  # the library's one serialization (also stored in Redis)


async def policies(request: Request) -> Response:
    store = _store(request)
    return json_response({dt: _policy_summary(store.policy(dt))
                          for dt in ("product", "price", "stock", "category", "country")},
                         headers=_node_headers(request))


async def metrics(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def openapi(_request: Request) -> Response:
    return json_response(openapi_document())


# ------------------------------------------------------------------ plumbing

async def database_error(request: Request, exc: Exception) -> Response:
    """The database refused or is away: 409 for constraint races, else 503."""
    count_error(request, 409 if isinstance(exc, IntegrityError) else 503)
    if isinstance(exc, IntegrityError):
        return json_response({"error": "conflict", "detail": "the change conflicts with"
                              " a concurrent change; retry"}, status=409)
    log.warning("database error: %s", exc)
    return json_response({"error": "unavailable", "detail": "database unavailable; retry"},
                         status=503, headers={"Retry-After": "1"})


def _count(route: str, method: str, status: int) -> None:
    counts = HTTP_RESPONSES.counts
    key = (route, method, status)
    counts[key] = counts.get(key, 0) + 1


def _counted(path: str, method: str, endpoint: Endpoint) -> Endpoint:
    """Count the endpoint's responses by route template and status. Done here
    rather than in ASGI middleware (which would wrap ``send`` on every request);
    responses made by the exception handlers are counted there."""

    async def counted(request: Request) -> Response:
        response = await endpoint(request)
        _count(path, method, response.status_code)
        return response

    counted.__name__ = getattr(endpoint, "__name__", "endpoint")
    counted.__doc__ = endpoint.__doc__
    return counted


def _route(path: str, endpoint: Endpoint, method: str) -> Route:
    return Route(path, _counted(path, method, endpoint), methods=[method])


ROUTES = [  # the hot read first: the router tries routes in order
    Route("/products/{id}", get_product, methods=["GET"]),  # counts itself
    _route("/products", list_products, "GET"),
    _route("/products", create_product, "POST"),
    _route("/products/{id}", patch_product, "PATCH"),
    _route("/products/{id}", delete_product, "DELETE"),
    _route("/products/{id}/price", put_price, "PUT"),
    _route("/products/{id}/stock", put_stock, "PUT"),
    _route("/categories", list_categories, "GET"),
    _route("/categories/{id}", get_category, "GET"),
    _route("/categories/{id}", patch_category, "PATCH"),
    _route("/categories/{id}/products", category_products, "GET"),
    _route("/countries", list_countries, "GET"),
    _route("/countries/{code}", patch_country, "PATCH"),
    _route("/policies", policies, "GET"),
    _route("/healthz", healthz, "GET"),
    _route("/readyz", readyz, "GET"),
    _route("/metrics", metrics, "GET"),
    _route("/openapi.json", openapi, "GET"),
]


def _log_policy_change(data_type: str, policy: Policy | None) -> None:
    if policy is None:
        log.info("policy for %s removed; back to the built-in default", data_type)
    else:
        log.info("policy for %s applied: %s/%s generation %s from %s", data_type,
                 policy.strategy, policy.consistency, policy.generation, policy.source)


async def _create_schema(db: Database, timeout: float) -> None:
    """Create the schema, retrying while the database is unreachable."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            await db.create_schema()
            return
        except (OSError, OperationalError, DBAPIError) as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("database unreachable for %.0fs; giving up: %s", timeout, exc)
                raise
            log.warning("database unreachable (%s); retrying for %.0fs more", exc, left)
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)


def create_app(settings: Settings | None = None, *, database: Database | None = None,
               cache: HybridCache | None = None) -> Starlette:
    """Build one replica's app. ``database``/``cache`` may be injected by tests."""
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = database or Database(settings.database_url, pool_size=settings.db_pool_size)
        hc = cache or HybridCache(CacheOptions(redis_url=settings.redis_url,
                                               key_prefix=settings.key_prefix,
                                               node_id=settings.node_name))
        await _create_schema(db, settings.db_startup_timeout)
        await hc.start()
        hc.policies.add_listener(_log_policy_change)
        app.state.store = app.catalog_store = CatalogStore(hc, db, settings)  # type: ignore[attr-defined]
        log.info("replica %s ready (database %s, redis %s)", hc.node_id, db.dialect,
                 "on" if settings.redis_url else "off")
        # What exists now lives as long as the process: keep it out of the
        # garbage collector's full passes (less pause time under load).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await hc.close()
            await db.dispose()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            ApiError: api_error_handler,
            HTTPException: http_error_handler,
            OperationalError: database_error,
            IntegrityError: database_error,
            DBAPIError: database_error,
            OSError: database_error,
            Exception: unexpected_error_handler,
        },
    )
    app.state.settings = settings
    return app
