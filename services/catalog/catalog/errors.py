"""Errors the service answers with, and how they become JSON responses.

Every error body is ``{"error": "<short code>", "detail": <what was wrong>}``
(docs/design.md). Nothing a client sends may produce a 500: handlers below turn
every expected failure into a 4xx, and the catch-all logs and answers 500 only
for genuine bugs (which the fuzz tests hunt for).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .jsonresp import json_response
from .metrics import HTTP_RESPONSES

log = logging.getLogger("catalog.errors")


def count_error(request: Request, status: int) -> None:
    """Count a response made by an exception handler, under its route if known."""
    counts = HTTP_RESPONSES.counts
    key = (getattr(request.scope.get("route"), "path", "unmatched"), request.method, status)
    counts[key] = counts.get(key, 0) + 1


class ApiError(Exception):
    """An error with an HTTP status, a short machine-readable code and a detail."""

    status = 400
    code = "bad_request"
    headers: dict[str, str] | None = None

    def __init__(self, detail: Any, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(str(detail))
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class Invalid(ApiError):
    status, code = 422, "invalid"


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               409: "conflict", 413: "payload_too_large", 422: "invalid"}


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    count_error(request, exc.status)
    return json_response({"error": exc.code, "detail": exc.detail}, status=exc.status,
                         headers=exc.headers)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no such route / method) as JSON."""
    assert isinstance(exc, HTTPException)
    count_error(request, exc.status_code)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return json_response({"error": code, "detail": exc.detail}, status=exc.status_code,
                         headers=dict(exc.headers or {}))


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    count_error(request, 500)
    log.exception("unhandled error on %s %s", request.method, request.url.path,
                  exc_info=exc)
    return json_response({"error": "internal", "detail": "internal error (logged)"}, status=500)
