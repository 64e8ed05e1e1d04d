"""Turning untrusted input (path, query, JSON body) into typed values.

Each function either returns clean values or raises an ApiError naming the
field and the problem, so handlers never see bad data and never crash on it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from .errors import BadRequest, Invalid, NotFound, PayloadTooLarge

ID_MAX = 2_147_483_647  # PostgreSQL INTEGER
STOCK_MAX = ID_MAX
NAME_MAX = 200
DESCRIPTION_MAX = 10_000
LIMIT_DEFAULT, LIMIT_MAX, OFFSET_MAX = 20, 100, 1_000_000
_PRICE = re.compile(r"(0|[1-9][0-9]{0,9})(\.([0-9]{1,2}))?")
_INT = re.compile(r"[0-9]{1,12}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_CURRENCY = re.compile(r"[A-Z]{3}")


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


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object; 413 past ``max_bytes``, 400 if not JSON."""
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
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Invalid(f"request body must be a JSON object, got {type(data).__name__}")
    return data


def _only(body: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Invalid({unknown[0]: f"unknown field (allowed: {', '.join(sorted(allowed))})"})


def _int_field(body: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = body[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid({name: f"must be an integer, got {type(value).__name__}"})
    if not low <= value <= high:
        raise Invalid({name: f"must be from {low} to {high}, got {value}"})
    return value


def _text_field(body: Mapping[str, Any], name: str, max_len: int, *, empty_ok: bool) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise Invalid({name: f"must be a string, got {type(value).__name__}"})
    if not empty_ok and not value.strip():
        raise Invalid({name: "must not be empty"})
    if len(value) > max_len:
        raise Invalid({name: f"must be at most {max_len} characters"})
    if "\x00" in value:
        raise Invalid({name: "must not contain NUL characters"})
    return value


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


def product_create(body: Mapping[str, Any]) -> dict[str, Any]:
    _only(body, {"name", "description", "category_id", "price", "stock"})
    for required in ("name", "category_id"):
        if required not in body:
            raise Invalid({required: "required"})
    out: dict[str, Any] = {
        "name": _text_field(body, "name", NAME_MAX, empty_ok=False),
        "category_id": _int_field(body, "category_id", 1, ID_MAX),
    }
    if "description" in body:
        out["description"] = _text_field(body, "description", DESCRIPTION_MAX, empty_ok=True)
    if "price" in body:
        out["cents"] = price_cents(body["price"])
    if "stock" in body:
        out["stock"] = _int_field(body, "stock", 0, STOCK_MAX)
    return out


def product_patch(body: Mapping[str, Any]) -> dict[str, Any]:
    _only(body, {"name", "description", "category_id"})
    if not body:
        raise Invalid("nothing to change: send name, description and/or category_id")
    out: dict[str, Any] = {}
    if "name" in body:
        out["name"] = _text_field(body, "name", NAME_MAX, empty_ok=False)
    if "description" in body:
        out["description"] = _text_field(body, "description", DESCRIPTION_MAX, empty_ok=True)
    if "category_id" in body:
        out["category_id"] = _int_field(body, "category_id", 1, ID_MAX)
    return out


def price_put(body: Mapping[str, Any]) -> int:
    _only(body, {"price"})
    if "price" not in body:
        raise Invalid({"price": "required"})
    return price_cents(body["price"])


def stock_put(body: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """``{"stock": n}`` sets, ``{"delta": d}`` adjusts; exactly one of them."""
    _only(body, {"stock", "delta"})
    if ("stock" in body) == ("delta" in body):
        raise Invalid('send exactly one of "stock" (new level) or "delta" (change)')
    if "stock" in body:
        return _int_field(body, "stock", 0, STOCK_MAX), None
    delta = _int_field(body, "delta", -STOCK_MAX, STOCK_MAX)
    return None, delta


def category_patch(body: Mapping[str, Any]) -> str:
    _only(body, {"name"})
    if "name" not in body:
        raise Invalid({"name": "required"})
    return _text_field(body, "name", NAME_MAX, empty_ok=False)


def country_patch(body: Mapping[str, Any]) -> dict[str, Any]:
    _only(body, {"name", "currency"})
    if not body:
        raise Invalid("nothing to change: send name and/or currency")
    out: dict[str, Any] = {}
    if "name" in body:
        out["name"] = _text_field(body, "name", 100, empty_ok=False)
    if "currency" in body:
        cur = body["currency"]
        if not isinstance(cur, str) or _CURRENCY.fullmatch(cur) is None:
            raise Invalid({"currency": f"must be three upper-case letters, got {cur!r}"})
        out["currency"] = cur
    return out
