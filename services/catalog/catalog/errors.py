"""Errors the service answers with, and how they become JSON responses.

Every error body is ``{"error": "<short code>", "detail": <what was wrong>}``
(DESIGN.md). Nothing a client sends may produce a 500: handlers below turn
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

log = logging.getLogger("catalog.errors")


class ApiError(Exception):
    """An error with an HTTP status, a short machine-readable code and a detail."""

    status = 400
    code = "bad_request"

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


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               409: "conflict", 413: "payload_too_large", 422: "invalid"}


async def api_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return json_response({"error": exc.code, "detail": exc.detail}, status=exc.status)


async def http_error_handler(_request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no such route / method) as JSON."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return json_response({"error": code, "detail": exc.detail}, status=exc.status_code,
                         headers=dict(exc.headers or {}))


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path,
                  exc_info=exc)
    return json_response({"error": "internal", "detail": "internal error (logged)"}, status=500)
