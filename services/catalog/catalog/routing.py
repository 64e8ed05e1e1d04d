"""What every endpoint module shares: the replica's state from a request,
response headers, and routes that count their responses and time them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from msgspec import Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import bodies, validation
from .auth import BODY_METHODS, WRITE_METHODS, authorize_write, require_json
from .cached import CachedCatalog, Invalidation, iso
from .config import Settings
from .metrics import HTTP_DURATIONS, HTTP_RESPONSES, Latency

Endpoint = Callable[[Request], Awaitable[Response]]
B = TypeVar("B", bound=Struct)


def catalog(request: Request) -> CachedCatalog:
    cached: CachedCatalog = request.app.state.catalog
    return cached


def settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


async def body(request: Request, kind: type[B]) -> B:
    """The request body decoded as ``kind`` (413/400/422 on bad input)."""
    raw = await validation.read_body(request, settings(request).max_body_bytes)
    return bodies.decode(raw, kind)


def node_headers(request: Request, extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = {"X-Node": catalog(request).cache.node_id}
    if extra:
        headers.update(extra)
    return headers


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record as served: timestamps as ISO 8601 strings."""
    out = dict(record)
    if "updated_at" in out:
        out["updated_at"] = iso(out["updated_at"])
    return out


def invalidation_headers(*invalidations: Invalidation) -> dict[str, str]:
    """One set of headers for one or more invalidations (values joined)."""
    merged: dict[str, list[str]] = {}
    for inv in invalidations:
        for name, value in inv.headers().items():
            merged.setdefault(name, [])
            for part in value.split(", "):
                if part not in merged[name] and part != "-":
                    merged[name].append(part)
    return {name: ", ".join(parts) or "-" for name, parts in merged.items()}


def count(route: str, method: str, status: int) -> None:
    counts = HTTP_RESPONSES.counts
    key = (route, method, status)
    counts[key] = counts.get(key, 0) + 1


def _counted(path: str, method: str, endpoint: Endpoint) -> Endpoint:
    """Count the endpoint's responses by route template and status. Done here
    rather than in ASGI middleware (which would wrap ``send`` on every request);
    responses made by the exception handlers are counted there."""

    async def counted(request: Request) -> Response:
        response = await endpoint(request)
        count(path, method, response.status_code)
        return response

    counted.__name__ = getattr(endpoint, "__name__", "endpoint")
    counted.__doc__ = endpoint.__doc__
    return counted


def _guarded(method: str, endpoint: Endpoint) -> Endpoint:
    """A write endpoint behind the write token (401) and, when it takes a body,
    the JSON content type (415); checked before the body is read. Wrapping
    the write routes only keeps the checks off the read path."""
    needs_json = method in BODY_METHODS

    async def guarded(request: Request) -> Response:
        authorize_write(request, settings(request).write_token)
        if needs_json:
            require_json(request)
        return await endpoint(request)

    guarded.__name__ = getattr(endpoint, "__name__", "endpoint")
    guarded.__doc__ = endpoint.__doc__
    return guarded


def route(path: str, endpoint: Endpoint, method: str) -> Route:
    if method in WRITE_METHODS:
        endpoint = _guarded(method, endpoint)
    return Route(path, _counted(path, method, endpoint), methods=[method])


def _timed_app(app: ASGIApp, latency: Latency) -> ASGIApp:
    """``app`` observing its own duration into ``latency``, exceptions included
    (their responses come from the exception handlers outside the route)."""
    observe = latency.observe
    clock = time.perf_counter

    async def timed(scope: Scope, receive: Receive, send: Send) -> None:
        start = clock()
        try:
            await app(scope, receive, send)
        finally:
            observe(clock() - start)

    return timed


def timed(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """The routes, each timed into ``catalog_http_request_duration_seconds``
    under its template and method. Wrapping each route's own ASGI app (not the
    whole application in a middleware) keeps ``send`` unwrapped and times only
    requests that matched a route, so the label set is the route table."""
    for r in routes:
        if isinstance(r, Route):
            method = sorted((r.methods or {"GET"}) - {"HEAD"})[0]
            r.app = _timed_app(r.app, HTTP_DURATIONS.for_route(method, r.path))
    return list(routes)
