"""One replica's Starlette application: routes by resource, error handling,
and the lifespan that opens the database (creating the schema) and the hybrid
cache (L1, plus Redis L2 and backplane when REDIS_URL is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from hybridcache import CacheOptions, HybridCache
from hybridcache.policy import Policy
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import crashpoint, operations, products, reference
from .cached import CachedCatalog
from .claims import Claims, ClaimsMiddleware
from .config import Settings
from .db import Database
from .errors import (
    ApiError,
    api_error_handler,
    count_error,
    http_error_handler,
    unexpected_error_handler,
)
from .hot import PREFIX, HotProducts
from .jsonresp import json_response
from .redact import scrub
from .relay import Relay, catalog_publisher
from .routing import timed

log = logging.getLogger("catalog.app")

# Products first: the router tries routes in order, and GET /products/{id} is hot.
ROUTES = timed([*products.ROUTES, *reference.ROUTES, *operations.ROUTES])


async def database_error(request: Request, exc: Exception) -> Response:
    """The database refused or is away: 409 for constraint races, else 503."""
    count_error(request, 409 if isinstance(exc, IntegrityError) else 503)
    if isinstance(exc, IntegrityError):
        return json_response({"error": "conflict", "detail": "the change conflicts with"
                              " a concurrent change; retry"}, status=409)
    log.warning("database error: %s", scrub(str(exc), request.app.state.settings.database_url))
    return json_response({"error": "unavailable", "detail": "database unavailable; retry"},
                         status=503, headers={"Retry-After": "1"})


def _log_policy_change(data_type: str, policy: Policy | None) -> None:
    if policy is None:
        log.info("policy for %s removed; back to the built-in default", data_type)
    else:
        log.info("policy for %s applied: %s/%s generation %s from %s", data_type,
                 policy.strategy, policy.consistency, policy.generation, policy.source)


async def _create_schema(db: Database, timeout: float, *, outbox: bool = True) -> None:
    """Migrate (tables, outbox triggers), retrying while the database is unreachable."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            await db.create_schema(outbox=outbox)
            return
        except (OSError, OperationalError, DBAPIError) as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("database unreachable for %.0fs; giving up: %s", timeout,
                          scrub(str(exc), db.url))
                raise
            log.warning("database unreachable (%s); retrying for %.0fs more",
                        scrub(str(exc), db.url), left)
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)


async def _no_outbox() -> None:
    return None


def _start_outbox(app: Starlette, cached: CachedCatalog,
                  settings: Settings) -> Callable[[], Awaitable[None]]:
    """This replica's outbox relay candidate (one is active per database) and
    the claims of its own writes; returns what stops them."""
    if not settings.outbox:
        return _no_outbox
    hc = cached.cache
    reachable = (lambda: hc.connected) if settings.redis_url else (lambda: True)
    relay = Relay(cached.db, catalog_publisher(cached), node=hc.node_id,
                  poll_interval=settings.relay_poll_interval, lease=settings.relay_lease,
                  grace=settings.relay_grace, reachable=reachable)
    claims = app.state.outbox_claims = Claims(cached.db, node=hc.node_id, connected=reachable)
    relay.start()

    async def stop() -> None:
        await relay.stop()
        await claims.close()

    return stop


class CatalogApp(Starlette):
    """The Starlette application with one shortcut in front of it: a ``GET``
    of a product whose ready answer still matches L1 is answered before the
    middleware stack and the router (hot.py says when, and why it is safe)."""

    hot: HotProducts | None = None  # set by the lifespan once the cache is up

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "GET" and self.hot is not None
                and scope["path"].startswith(PREFIX) and not scope.get("root_path")
                and await self.hot.serve(scope["path"], send)):
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, *, database: Database | None = None,
               cache: HybridCache | None = None) -> Starlette:
    """Build one replica's app. ``database``/``cache`` may be injected by tests."""
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: CatalogApp) -> AsyncIterator[None]:
        db = database or Database(settings.database_url, pool_size=settings.db_pool_size)
        hc = cache or HybridCache(CacheOptions(redis_url=settings.redis_url,
                                               key_prefix=settings.key_prefix,
                                               node_id=settings.node_name))
        await _create_schema(db, settings.db_startup_timeout, outbox=settings.outbox)
        await hc.start()
        hc.policies.add_listener(_log_policy_change)
        # Also an attribute of the app itself: the hot path reads it from the
        # scope without going through app.state.
        app.state.catalog = app.catalog = CachedCatalog(hc, db, settings)  # type: ignore[attr-defined]
        app.hot = app.catalog.hot  # type: ignore[attr-defined]
        stop_outbox = _start_outbox(app, app.catalog, settings)  # type: ignore[attr-defined]
        crashpoint.install(db.write)
        log.info("replica %s ready (database %s, redis %s)", hc.node_id, db.dialect,
                 "on" if settings.redis_url else "off")
        # What exists now lives as long as the process: keep it out of the
        # garbage collector's full passes (less pause time under load).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            app.hot = None
            await stop_outbox()
            await hc.close()
            await db.dispose()

    app = CatalogApp(
        routes=ROUTES,
        lifespan=lifespan,
        middleware=[Middleware(ClaimsMiddleware)],
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
