"""Small helpers shared by the catalog tests."""

from __future__ import annotations

import httpx


def get_ok(client: httpx.Client, url: str) -> httpx.Response:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.text)
    return response


def layers(response: httpx.Response) -> dict[str, str]:
    """``X-Cache: product=l1, price=l2, stock=miss`` as a dict."""
    return dict(part.strip().split("=", 1) for part in response.headers["x-cache"].split(","))


def served_price(client: httpx.Client, url: str, product_id: int) -> str:
    """The price ``url`` serves for a product right now."""
    return str(get_ok(client, f"{url}/products/{product_id}").json()["price"])
