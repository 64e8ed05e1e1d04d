"""Request bodies as msgspec Structs: the one statement of what a write accepts.

Decoding validates types, ranges, lengths, patterns and unknown fields in one
pass, and ``openapi.py`` publishes the JSON Schema of these same Structs, so
the enforced rules and the documented ones cannot drift apart. Rules that a
JSON Schema of the Struct cannot carry (exactly one of two fields) live in
``__post_init__`` and in the ``extra_json_schema`` of the aliases at the end.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from .errors import BadRequest, Invalid
from .validation import (
    COUNTRY_NAME_MAX,
    DESCRIPTION_MAX,
    ID_MAX,
    NAME_MAX,
    PRICE_PATTERN,
    STOCK_MAX,
    price_cents,
)

# PostgreSQL text cannot hold NUL; a name also needs one visible character.
# (Lengths are checked before patterns, so the pattern runs on short input.)
_NAME_PATTERN = r"^[^\x00]*[^\x00\s][^\x00]*$"
_TEXT_PATTERN = r"^[^\x00]*$"
_CURRENCY_PATTERN = r"^[A-Z]{3}$"
_HINTS = {  # pattern -> what it means, for error details and the published schema
    _NAME_PATTERN: "must not be blank or contain NUL characters",
    _TEXT_PATTERN: "must not contain NUL characters",
    _CURRENCY_PATTERN: "must be three upper-case letters",
    PRICE_PATTERN: 'must be a non-negative decimal with at most two decimal places'
                   ' (e.g. "12.50")',
}

Name = Annotated[str, Meta(min_length=1, max_length=NAME_MAX, pattern=_NAME_PATTERN,
                           description=_HINTS[_NAME_PATTERN])]
Description = Annotated[str, Meta(max_length=DESCRIPTION_MAX, pattern=_TEXT_PATTERN,
                                  description=_HINTS[_TEXT_PATTERN])]
CategoryId = Annotated[int, Meta(ge=1, le=ID_MAX)]
Price = Annotated[str, Meta(pattern=PRICE_PATTERN, description=_HINTS[PRICE_PATTERN],
                            extra_json_schema={"example": "12.50"})]
Stock = Annotated[int, Meta(ge=0, le=STOCK_MAX)]
Delta = Annotated[int, Meta(ge=-STOCK_MAX, le=STOCK_MAX)]
CountryName = Annotated[str, Meta(min_length=1, max_length=COUNTRY_NAME_MAX,
                                  pattern=_NAME_PATTERN, description=_HINTS[_NAME_PATTERN])]
# max_length too: a pattern's ``$`` also matches before a final newline.
Currency = Annotated[str, Meta(min_length=3, max_length=3, pattern=_CURRENCY_PATTERN,
                               description=_HINTS[_CURRENCY_PATTERN])]


class _Body(Struct, forbid_unknown_fields=True):
    def present(self) -> dict[str, Any]:
        """The fields the client sent."""
        return {name: value for name in self.__struct_fields__
                if (value := getattr(self, name)) is not UNSET}


class NewProduct(_Body):
    """``POST /products``: a product with its price and stock."""

    name: Name
    category_id: CategoryId
    description: Description | UnsetType = UNSET
    price: Price | UnsetType = UNSET
    stock: Stock | UnsetType = UNSET

    def fields(self) -> dict[str, Any]:
        """As ``repo.create_product`` takes them (the price in cents)."""
        out = self.present()
        if "price" in out:
            out["cents"] = price_cents(out.pop("price"))
        return out


class ProductChange(_Body):
    """``PATCH /products/{id}``: any of name, description, category."""

    name: Name | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    category_id: CategoryId | UnsetType = UNSET

    def __post_init__(self) -> None:
        if not self.present():
            raise ValueError("nothing to change: send name, description and/or category_id")


class PriceChange(_Body):
    """``PUT /products/{id}/price``."""

    price: Price

    def cents(self) -> int:
        return price_cents(self.price)


class StockChange(_Body):
    """``PUT /products/{id}/stock``: ``stock`` sets the level, ``delta`` adjusts it
    atomically; exactly one of them."""

    stock: Stock | UnsetType = UNSET
    delta: Delta | UnsetType = UNSET

    def __post_init__(self) -> None:
        if (self.stock is UNSET) == (self.delta is UNSET):
            raise ValueError('send exactly one of "stock" (new level) or "delta" (change)')


class CategoryChange(_Body):
    """``PATCH /categories/{id}``: a new name."""

    name: Name


class CountryChange(_Body):
    """``PATCH /countries/{code}``: any of name, currency."""

    name: CountryName | UnsetType = UNSET
    currency: Currency | UnsetType = UNSET

    def __post_init__(self) -> None:
        if not self.present():
            raise ValueError("nothing to change: send name and/or currency")


# What the request bodies are decoded as (and published as): the Structs, plus
# the object-level rules of their __post_init__ that JSON Schema can state.
_AT_LEAST_ONE = Meta(extra_json_schema={"minProperties": 1})
REQUEST_BODIES: dict[type[Struct], Any] = {
    NewProduct: NewProduct,
    ProductChange: Annotated[ProductChange, _AT_LEAST_ONE],
    PriceChange: PriceChange,
    StockChange: Annotated[StockChange, Meta(extra_json_schema={"minProperties": 1,
                                                                "maxProperties": 1})],
    CategoryChange: CategoryChange,
    CountryChange: Annotated[CountryChange, _AT_LEAST_ONE],
}
_DECODERS: dict[type[Struct], msgspec.json.Decoder[Any]] = {
    cls: msgspec.json.Decoder(cls) for cls in REQUEST_BODIES}
_AT = re.compile(r"^(?P<msg>.*) - at `\$\.(?P<field>[A-Za-z_]+)`$")
_REGEX = re.compile(r"matching regex (?P<pattern>'.*')$")  # msgspec shows repr(pattern)
_HINTS_BY_REPR = {repr(pattern): hint for pattern, hint in _HINTS.items()}

B = TypeVar("B", bound=Struct)


def decode(raw: bytes, body: type[B]) -> B:
    """``raw`` as a ``body``: 400 if it is not JSON, 422 naming the field otherwise."""
    try:
        decoded: B = _DECODERS[body].decode(raw)
    except msgspec.ValidationError as exc:
        raise Invalid(_detail(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    return decoded


def _detail(message: str) -> str | dict[str, str]:
    """msgspec's message as ``{field: problem}`` when it names a field, with
    patterns said in words."""
    at = _AT.match(message)
    if at is None:
        return message
    problem = at["msg"]
    regex = _REGEX.search(problem)
    if regex is not None and regex["pattern"] in _HINTS_BY_REPR:
        problem = _HINTS_BY_REPR[regex["pattern"]]
    return {at["field"]: problem}
