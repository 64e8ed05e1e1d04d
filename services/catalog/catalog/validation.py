"""Turning untrusted input (path, query, the raw body) into typed values.

Each function either returns clean values or raises an ApiError naming the
field and the problem, so handlers never see bad data and never crash on it.
JSON bodies are then decoded into the Structs of ``bodies.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import ClientDisconnect, Request

from .errors import BadRequest, Invalid, NotFound, PayloadTooLarge

ID_MAX = 2_147_483_647  # PostgreSQL INTEGER
STOCK_MAX = ID_MAX
NAME_MAX = 200
DESCRIPTION_MAX = 10_000
LIMIT_DEFAULT, LIMIT_MAX, OFFSET_MAX = 20, 100, 1_000_000
COUNTRY_NAME_MAX = 100
# Patterns are also published in the OpenAPI document (JSON Schema, ECMA 262
# syntax): anchored, since JSON Schema patterns match anywhere in the string.
PRICE_PATTERN = r"^(0|[1-9][0-9]{0,9})(\.([0-9]{1,2}))?$"
COUNTRY_PATTERN = r"^[A-Z]{2}$"
_PRICE = re.compile(PRICE_PATTERN)
_INT = re.compile(r"[0-9]{1,12}")
_COUNTRY = re.compile(COUNTRY_PATTERN)


def path_id(raw: str, what: str) -> int:
    """A resource id from the path: a positive integer that fits the database.

    Anything else cannot name an existing resource, hence 404 (with the reason).
    """
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10 and 1 <= int(raw) <= ID_MAX):
        raise NotFound(f"{what} id must be an integer from 1 to {ID_MAX}, got {raw!r}")
    return int(raw)


def country_code(raw: str) -> str:
    if _COUNTRY.fullmatch(raw) is None:
        raise NotFound(f"country code must be two upper-case letters, got {raw!r}")
    return raw


def query_int(params: Mapping[str, str], name: str, default: int | None,
              low: int, high: int) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if _INT.fullmatch(raw) is None or not low <= int(raw) <= high:
        raise Invalid({name: f"must be an integer from {low} to {high}, got {raw!r}"})
    return int(raw)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw request body; 413 past ``max_bytes`` (counted while streaming,
    so a missing or lying Content-Length does not help), 400 if empty."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body larger than {max_bytes} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise PayloadTooLarge(f"request body larger than {max_bytes} bytes")
    except ClientDisconnect:
        raise BadRequest("client disconnected before sending the whole body") from None
    if not body.strip():
        raise BadRequest("request body is empty; send a JSON object")
    return bytes(body)


def price_cents(value: Any, name: str = "price") -> int:
    """A decimal string with at most two decimals, not negative: "12.50" -> 1250."""
    if not isinstance(value, str):
        kind = type(value).__name__
        raise Invalid({name: f'must be a decimal string such as "12.50", got {kind}'})
    match = _PRICE.fullmatch(value)
    if match is None:
        raise Invalid({name: f"{value!r} is not a non-negative decimal with at most"
                             " two decimal places (e.g. \"12.50\")"})
    units, cents = match.group(1), (match.group(3) or "0").ljust(2, "0")
    return int(units) * 100 + int(cents)
