"""Reference data: categories and countries (``/categories...``, ``/countries...``).

Small, rarely written lists, cached whole; by default ``ttl`` policies, so a
rename is seen once the cached entry expires.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import repo, validation
from .bodies import CategoryChange, CountryChange
from .errors import NotFound
from .jsonresp import json_response
from .products import product_page
from .routing import body, catalog, node_headers, public, route


async def list_categories(request: Request) -> Response:
    items = [public(c) for c in await catalog(request).categories()]
    return json_response({"items": items}, headers=node_headers(request))


async def get_category(request: Request) -> Response:
    category_id = validation.path_id(request.path_params["id"], "category")
    record = await catalog(request).category(category_id)
    if record is None:
        raise NotFound(f"category {category_id} does not exist")
    return json_response(public(record), headers=node_headers(request))


async def patch_category(request: Request) -> Response:
    category_id = validation.path_id(request.path_params["id"], "category")
    name = (await body(request, CategoryChange)).name
    cached = catalog(request)
    old, new = await repo.update_category(cached.db, category_id, name)
    inv = await cached.invalidate("category", "update", old, new)
    return json_response(public(new), headers=node_headers(request, inv.headers()))


async def category_products(request: Request) -> Response:
    category_id = validation.path_id(request.path_params["id"], "category")
    if await catalog(request).category(category_id) is None:
        raise NotFound(f"category {category_id} does not exist")
    return await product_page(request, category_id)


async def list_countries(request: Request) -> Response:
    items = [public(c) for c in await catalog(request).countries()]
    return json_response({"items": items}, headers=node_headers(request))


async def patch_country(request: Request) -> Response:
    code = validation.country_code(request.path_params["code"])
    fields = (await body(request, CountryChange)).present()
    cached = catalog(request)
    old, new = await repo.update_country(cached.db, code, fields)
    inv = await cached.invalidate("country", "update", old, new)
    return json_response(public(new), headers=node_headers(request, inv.headers()))


ROUTES: list[Route] = [
    route("/categories", list_categories, "GET"),
    route("/categories/{id}", get_category, "GET"),
    route("/categories/{id}", patch_category, "PATCH"),
    route("/categories/{id}/products", category_products, "GET"),
    route("/countries", list_countries, "GET"),
    route("/countries/{code}", patch_country, "PATCH"),
]
