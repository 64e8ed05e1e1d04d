"""What operators and probes read: ``/healthz``, ``/readyz``, ``/policies``,
``/metrics`` and ``/openapi.json``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hybridcache.policy import Policy
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .jsonresp import json_response
from .openapi import openapi_document
from .redact import scrub
from .routing import catalog, node_headers, route, settings

DATA_TYPES = ("product", "price", "stock", "category", "country")
_DEGRADED = "degraded (L1 + database only)"
log = logging.getLogger("catalog.operations")


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok", "node": catalog(request).cache.node_id})


async def readyz(request: Request) -> Response:
    """Ready while the database answers; Redis down only degrades (L1 + DB)."""
    cached = catalog(request)
    body: dict[str, Any] = {"node": cached.cache.node_id}
    try:
        await asyncio.wait_for(cached.db.ping(), timeout=2.0)
        body["database"] = "ok"
    except Exception as exc:
        # Driver text names hosts, users and schemas: the log keeps it (redacted),
        # anyone may read this response.
        body["database"] = "unreachable"
        log.warning("readiness: database unreachable: %s",
                    scrub(f"{type(exc).__name__}: {exc}", cached.settings.database_url)[:500])
    if cached.settings.redis_url is None:
        body["redis"] = "disabled (L1 only)"
    else:
        body["redis"] = "ok" if cached.cache.connected else _DEGRADED
    ready = body["database"] == "ok"
    body["status"] = ("ready" if body["redis"] != _DEGRADED else "degraded") if ready else "unready"
    body["policies"] = {dt: _policy_summary(cached.policy(dt)) for dt in DATA_TYPES}
    return json_response(body, status=200 if ready else 503)


def _policy_summary(policy: Policy) -> dict[str, Any]:
    return policy.to_dict()  # the library's one serialization (also stored in Redis)


async def policies(request: Request) -> Response:
    cached = catalog(request)
    return json_response({dt: _policy_summary(cached.policy(dt)) for dt in DATA_TYPES},
                         headers=node_headers(request))


async def metrics(request: Request) -> Response:
    if settings(request).metrics_port is not None:
        # METRICS_PORT set: served there only (metrics_server.py), not to clients.
        return json_response({"error": "not_found", "detail": "metrics are served on"
                              " the metrics port"}, status=404)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def openapi(_request: Request) -> Response:
    return json_response(openapi_document())


ROUTES: list[Route] = [
    route("/policies", policies, "GET"),
    route("/healthz", healthz, "GET"),
    route("/readyz", readyz, "GET"),
    route("/metrics", metrics, "GET"),
    route("/openapi.json", openapi, "GET"),
]
