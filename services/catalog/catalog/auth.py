"""Who may write, and in what format.

Reads are public. When the replica has a write token (CATALOG_WRITE_TOKEN or
CATALOG_WRITE_TOKEN_FILE), every POST/PUT/PATCH/DELETE must carry
``Authorization: Bearer <token>``; the comparison takes the same time whatever
the guess, so the token cannot be found byte by byte. Writes that carry a body
must say it is JSON: a form post from a browser page (the classic cross-site
request) is refused with 415 before its body is read.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from .errors import ApiError

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


def authorize_write(request: Request, token: str | None) -> None:
    """Raise 401 unless writes are open (no token) or the request carries it."""
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("writes need an 'Authorization: Bearer <token>' header")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("the bearer token is not the write token")


def require_json(request: Request) -> None:
    """Raise 415 unless the body is declared ``application/json`` (any charset)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        shown = media_type or "none"
        raise UnsupportedMediaType(f"request body must be application/json, got {shown}")
