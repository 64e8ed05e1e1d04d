"""The OpenAPI 3.0 description of the HTTP API, served at ``/openapi.json``.

Written by hand (the routes are few) so that it states the real limits the
validators enforce; the fuzz tests generate requests from it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .validation import DESCRIPTION_MAX, ID_MAX, LIMIT_MAX, NAME_MAX, OFFSET_MAX, STOCK_MAX

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed request (e.g. body is not JSON)", 404: "No such resource",
            409: "Conflicts with the current state", 413: "Request body too large",
            422: "Invalid field values", 503: "Database unavailable"}
    return {str(c): {"description": text[c],
                     "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _ok(schema: dict[str, Any], status: int = 200, desc: str = "OK") -> dict[str, Any]:
    return {str(status): {"description": desc, "content": {"application/json": {"schema": schema}}}}


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
_WRITE = _errors(400, 404, 409, 413, 422, 503)


@cache
def openapi_document() -> dict[str, Any]:
    name = {"type": "string", "minLength": 1, "maxLength": NAME_MAX}
    price = {"type": "string", "pattern": r"^(0|[1-9][0-9]{0,9})(\.[0-9]{1,2})?$",
             "example": "12.50"}
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
                         "requestBody": _body({
                             "type": "object", "additionalProperties": False,
                             "required": ["name", "category_id"],
                             "properties": {"name": name,
                                            "description": {"type": "string",
                                                            "maxLength": DESCRIPTION_MAX},
                                            "category_id": {"type": "integer", "minimum": 1,
                                                            "maximum": ID_MAX},
                                            "price": price,
                                            "stock": {"type": "integer", "minimum": 0,
                                                      "maximum": STOCK_MAX}}}),
                         "responses": {**_ok(_PRODUCT, 201, "Created"), **_WRITE}},
            },
            "/products/{id}": {
                "parameters": [_id()],
                "get": {"summary": "One product, composed from product, price and stock entries",
                        "responses": {**_ok(_PRODUCT), **_errors(404)}},
                "patch": {"summary": "Change name, description or category",
                          "requestBody": _body({
                              "type": "object", "additionalProperties": False, "minProperties": 1,
                              "properties": {"name": name,
                                             "description": {"type": "string",
                                                             "maxLength": DESCRIPTION_MAX},
                                             "category_id": {"type": "integer", "minimum": 1,
                                                             "maximum": ID_MAX}}}),
                          "responses": {**_ok(_PRODUCT), **_WRITE}},
                "delete": {"summary": "Delete a product",
                           "responses": {"204": {"description": "Deleted"}, **_errors(404, 503)}},
            },
            "/products/{id}/price": {
                "parameters": [_id()],
                "put": {"summary": "Set the price (decimal string)",
                        "requestBody": _body({"type": "object", "additionalProperties": False,
                                              "required": ["price"],
                                              "properties": {"price": price}}),
                        "responses": {**_ok(_PRODUCT), **_WRITE}},
            },
            "/products/{id}/stock": {
                "parameters": [_id()],
                "put": {"summary": "Set the stock level, or change it by a delta",
                        "requestBody": _body({
                            "type": "object", "additionalProperties": False,
                            "minProperties": 1, "maxProperties": 1,
                            "properties": {"stock": {"type": "integer", "minimum": 0,
                                                     "maximum": STOCK_MAX},
                                           "delta": {"type": "integer", "minimum": -STOCK_MAX,
                                                     "maximum": STOCK_MAX}}}),
                        "responses": {**_ok(_PRODUCT), **_WRITE}},
            },
            "/categories": {"get": {"summary": "All categories",
                                    "responses": _ok({"$ref": "#/components/schemas/Items"})}},
            "/categories/{id}": {
                "parameters": [_id()],
                "get": {"summary": "One category",
                        "responses": {**_ok({"type": "object"}), **_errors(404)}},
                "patch": {"summary": "Rename a category",
                          "requestBody": _body({"type": "object", "additionalProperties": False,
                                                "required": ["name"],
                                                "properties": {"name": name}}),
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
                                "schema": {"type": "string", "pattern": "^[A-Z]{2}$"}}],
                "patch": {"summary": "Change a country's name or currency",
                          "requestBody": _body({
                              "type": "object", "additionalProperties": False, "minProperties": 1,
                              "properties": {"name": {"type": "string", "minLength": 1,
                                                      "maxLength": 100},
                                             "currency": {"type": "string",
                                                          "pattern": "^[A-Z]{3}$"}}}),
                          "responses": {**_ok({"type": "object"}), **_WRITE}},
            },
            "/policies": {"get": {"summary": "The effective cache policy per data type",
                                  "responses": _ok({"type": "object"})}},
            "/healthz": {"get": {"summary": "Process alive", "responses": _ok({"type": "object"})}},
            "/readyz": {"get": {"summary": "Database reachable (Redis down = degraded)",
                                "responses": {**_ok({"type": "object"}),
                                              "503": {"description": "Database unreachable"}}}},
        },
        "components": {"schemas": {
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
