"""Small helpers shared by the catalog tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy (cross-process state has
    no event to await); fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


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
