"""Products, their price and stock: ``/products...``.

``GET /products/{id}`` is the hot path and is kept flat: no helper layers,
counted inline rather than wrapped.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import repo, validation
from .bodies import NewProduct, PriceChange, ProductChange, StockChange
from .cached import CachedCatalog, Invalidation
from .errors import NotFound
from .jsonresp import RawJSONResponse, json_response
from .metrics import HTTP_RESPONSES
from .routing import body, catalog, invalidation_headers, node_headers, route

log = logging.getLogger("catalog.products")
_HOT_KEY = ("/products/{id}", "GET", 200)


async def get_product(request: Request) -> Response:
    cached: CachedCatalog = request.scope["app"].catalog
    product_id = validation.path_id(request.path_params["id"], "product")
    body, layers = await cached.product_json(product_id)
    if body is None:
        raise NotFound(f"product {product_id} does not exist")
    counts = HTTP_RESPONSES.counts
    counts[_HOT_KEY] = counts.get(_HOT_KEY, 0) + 1
    return RawJSONResponse(body, [(b"x-cache", layers), (b"x-node", cached.node_id_bytes)])


async def product_page(request: Request, category_id: int | None) -> Response:
    """A page of products (``limit``/``offset`` from the query), whole products."""
    cached = catalog(request)
    params = request.query_params
    limit = validation.query_int(params, "limit", validation.LIMIT_DEFAULT, 1,
                                 validation.LIMIT_MAX)
    offset = validation.query_int(params, "offset", 0, 0, validation.OFFSET_MAX)
    assert limit is not None and offset is not None
    ids = await cached.product_ids(category_id, limit, offset)
    items = []
    for product_id in ids:
        found, _ = await cached.full_product(product_id)
        if found is not None:
            items.append(found)
    return json_response({"items": items, "limit": limit, "offset": offset},
                         headers=node_headers(request))


async def list_products(request: Request) -> Response:
    category_id = validation.query_int(request.query_params, "category_id", None, 1,
                                       validation.ID_MAX)
    return await product_page(request, category_id)


async def _respond_product(request: Request, product_id: int, status: int,
                           *invalidations: Invalidation) -> Response:
    headers = invalidation_headers(*invalidations)
    found, layers = await catalog(request).full_product(product_id)
    if found is None:  # deleted concurrently, after our write
        raise NotFound(f"product {product_id} does not exist")
    headers["X-Cache"] = layers
    return json_response(found, status=status, headers=node_headers(request, headers))


async def create_product(request: Request) -> Response:
    fields = (await body(request, NewProduct)).fields()
    cached = catalog(request)
    record = await repo.create_product(cached.db, fields)
    price = {"id": record["id"], "product_id": record["id"]}
    invalidations = (await cached.invalidate("product", "create", None, record),
                     await cached.invalidate("price", "create", None, price),
                     await cached.invalidate("stock", "create", None, price))
    log.info("created product %s", record["id"])
    response = await _respond_product(request, record["id"], 201, *invalidations)
    response.headers["Location"] = f"/products/{record['id']}"
    return response


async def patch_product(request: Request) -> Response:
    product_id = validation.path_id(request.path_params["id"], "product")
    fields = (await body(request, ProductChange)).present()
    cached = catalog(request)
    old, new = await repo.update_product(cached.db, product_id, fields)
    inv = await cached.invalidate("product", "update", old, new)
    log.info("updated product %s: %s", product_id, sorted(fields))
    return await _respond_product(request, product_id, 200, inv)


async def delete_product(request: Request) -> Response:
    product_id = validation.path_id(request.path_params["id"], "product")
    cached = catalog(request)
    old = await repo.delete_product(cached.db, product_id)
    ids = {"id": product_id, "product_id": product_id}
    invalidations = (await cached.invalidate("product", "delete", old, None),
                     await cached.invalidate("price", "delete", ids, None),
                     await cached.invalidate("stock", "delete", ids, None))
    headers = invalidation_headers(*invalidations)
    log.info("deleted product %s", product_id)
    return Response(status_code=204, headers=node_headers(request, headers))


async def put_price(request: Request) -> Response:
    product_id = validation.path_id(request.path_params["id"], "product")
    cents = (await body(request, PriceChange)).cents()
    cached = catalog(request)
    old, new = await repo.set_price(cached.db, product_id, cents)
    inv = await cached.invalidate("price", "update", old, new)
    log.info("price of product %s: %s -> %s", product_id, old["price"], new["price"])
    return await _respond_product(request, product_id, 200, inv)


async def put_stock(request: Request) -> Response:
    product_id = validation.path_id(request.path_params["id"], "product")
    change = await body(request, StockChange)
    cached = catalog(request)
    old, new = await repo.set_stock(cached.db, product_id, **change.present())
    inv = await cached.invalidate("stock", "update", old, new)
    log.info("stock of product %s: %s -> %s", product_id, old["stock"], new["stock"])
    return await _respond_product(request, product_id, 200, inv)


ROUTES = [  # the hot read first: the router tries routes in order
    Route("/products/{id}", get_product, methods=["GET"]),  # counts itself
    route("/products", list_products, "GET"),
    route("/products", create_product, "POST"),
    route("/products/{id}", patch_product, "PATCH"),
    route("/products/{id}", delete_product, "DELETE"),
    route("/products/{id}/price", put_price, "PUT"),
    route("/products/{id}/stock", put_stock, "PUT"),
]
