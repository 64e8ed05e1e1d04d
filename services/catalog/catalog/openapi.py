"""The OpenAPI 3.0 description of the HTTP API, served at ``/openapi.json``.

Paths are written by hand (they are few); request bodies are the JSON Schema
of the very Structs that decode them (``bodies.py``), and path and query
limits come from ``validation.py``, so the document states the limits that are
enforced. The fuzz tests generate requests from it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from .bodies import (
    REQUEST_BODIES,
    CategoryChange,
    CountryChange,
    NewProduct,
    PriceChange,
    ProductChange,
    StockChange,
)
from .validation import COUNTRY_PATTERN, ID_MAX, LIMIT_MAX, OFFSET_MAX

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed request (e.g. body is not JSON)",
            401: "Missing or wrong bearer token (when the replica has a write token)",
            404: "No such resource",
            409: "Conflicts with the current state", 413: "Request body too large",
            415: "Content-Type is not application/json",
            422: "Invalid field values", 503: "Database unavailable"}
    return {str(c): {"description": text[c],
                     "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _ok(schema: dict[str, Any], status: int = 200, desc: str = "OK") -> dict[str, Any]:
    return {str(status): {"description": desc, "content": {"application/json": {"schema": schema}}}}


_REF = "#/components/schemas/{name}"


def _request_bodies() -> tuple[dict[type[msgspec.Struct], Any], dict[str, Any]]:
    """Each body Struct's schema (a reference, plus any object-level rules) and
    the components they refer to."""
    schemas, components = msgspec.json.schema_components(list(REQUEST_BODIES.values()),
                                                         ref_template=_REF)
    by_struct = {}
    for struct, schema in zip(REQUEST_BODIES, schemas, strict=True):
        ref = schema.pop("$ref")
        # OpenAPI 3.0 ignores siblings of $ref: state extra rules beside an allOf.
        by_struct[struct] = {"allOf": [{"$ref": ref}], **schema} if schema else {"$ref": ref}
    for component in components.values():
        if component.get("required") == []:  # OpenAPI 3.0: required has 1+ items
            del component["required"]
    return by_struct, components


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _id(name: str = "id") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": ID_MAX}}


_PAGE = [
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX}},
    {"name": "offset", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 0, "maximum": OFFSET_MAX}},
]
_PRODUCT = {"$ref": "#/components/schemas/Product"}
_WRITE = _errors(400, 401, 404, 409, 413, 415, 422, 503)
# Writes need the bearer token when the replica has one (CATALOG_WRITE_TOKEN).
_AUTH: list[dict[str, list[str]]] = [{"writeToken": []}]


@cache
def openapi_document() -> dict[str, Any]:
    bodies, body_schemas = _request_bodies()
    return {
        "openapi": "3.0.3",
        "info": {"title": "hybrid-catalog", "version": "0.1.0",
                 "description": "Catalog replicas reading through a hybrid cache."},
        "paths": {
            "/products": {
                "get": {"summary": "A page of products",
                        "parameters": [{"name": "category_id", "in": "query", "required": False,
                                        "schema": {"type": "integer", "minimum": 1,
                                                   "maximum": ID_MAX}}, *_PAGE],
                        "responses": {**_ok({"$ref": "#/components/schemas/Page"}),
                                      **_errors(422)}},
                "post": {"summary": "Create a product (with its price and stock)",
                         "security": _AUTH,
                         "requestBody": _body(bodies[NewProduct]),
                         "responses": {**_ok(_PRODUCT, 201, "Created"), **_WRITE}},
            },
            "/products/{id}": {
                "parameters": [_id()],
                "get": {"summary": "One product, composed from product, price and stock entries",
                        "responses": {**_ok(_PRODUCT), **_errors(404)}},
                "patch": {"summary": "Change name, description or category", "security": _AUTH,
                          "requestBody": _body(bodies[ProductChange]),
                          "responses": {**_ok(_PRODUCT), **_WRITE}},
                "delete": {"summary": "Delete a product", "security": _AUTH,
                           "responses": {"204": {"description": "Deleted"},
                                         **_errors(401, 404, 503)}},
            },
            "/products/{id}/price": {
                "parameters": [_id()],
                "put": {"summary": "Set the price (decimal string)", "security": _AUTH,
                        "requestBody": _body(bodies[PriceChange]),
                        "responses": {**_ok(_PRODUCT), **_WRITE}},
            },
            "/products/{id}/stock": {
                "parameters": [_id()],
                "put": {"summary": "Set the stock level, or change it by a delta",
                        "security": _AUTH,
                        "requestBody": _body(bodies[StockChange]),
                        "responses": {**_ok(_PRODUCT), **_WRITE}},
            },
            "/categories": {"get": {"summary": "All categories",
                                    "responses": _ok({"$ref": "#/components/schemas/Items"})}},
            "/categories/{id}": {
                "parameters": [_id()],
                "get": {"summary": "One category",
                        "responses": {**_ok({"type": "object"}), **_errors(404)}},
                "patch": {"summary": "Rename a category", "security": _AUTH,
                          "requestBody": _body(bodies[CategoryChange]),
                          "responses": {**_ok({"type": "object"}), **_WRITE}},
            },
            "/categories/{id}/products": {
                "parameters": [_id()],
                "get": {"summary": "A page of a category's products", "parameters": _PAGE,
                        "responses": {**_ok({"$ref": "#/components/schemas/Page"}),
                                      **_errors(404, 422)}},
            },
            "/countries": {"get": {"summary": "All countries",
                                   "responses": _ok({"$ref": "#/components/schemas/Items"})}},
            "/countries/{code}": {
                "parameters": [{"name": "code", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": COUNTRY_PATTERN}}],
                "patch": {"summary": "Change a country's name or currency", "security": _AUTH,
                          "requestBody": _body(bodies[CountryChange]),
                          "responses": {**_ok({"type": "object"}), **_WRITE}},
            },
            "/policies": {"get": {"summary": "The effective cache policy per data type",
                                  "responses": _ok({"type": "object"})}},
            "/healthz": {"get": {"summary": "Process alive", "responses": _ok({"type": "object"})}},
            "/readyz": {"get": {"summary": "Database reachable (Redis down = degraded)",
                                "responses": {**_ok({"type": "object"}),
                                              "503": {"description": "Database unreachable"}}}},
        },
        "components": {"securitySchemes": {"writeToken": {"type": "http", "scheme": "bearer"}},
                       "schemas": {
            **body_schemas,
            "Error": {"type": "object", "required": ["error", "detail"],
                      "properties": {"error": {"type": "string"}, "detail": {}}},
            "Product": {"type": "object",
                        "required": ["id", "name", "description", "category_id", "price",
                                     "stock", "updated_at"],
                        "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                                       "description": {"type": "string"},
                                       "category_id": {"type": "integer"},
                                       "price": {"type": "string"}, "stock": {"type": "integer"},
                                       "updated_at": {"type": "string"}}},
            "Page": {"type": "object", "required": ["items", "limit", "offset"],
                     "properties": {"items": {"type": "array", "items": _PRODUCT},
                                    "limit": {"type": "integer"}, "offset": {"type": "integer"}}},
            "Items": {"type": "object", "required": ["items"],
                      "properties": {"items": {"type": "array", "items": {"type": "object"}}}},
        }},
    }
