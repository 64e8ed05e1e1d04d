"""Ready responses for ``GET /products/{id}`` served from L1, before the
Starlette stack.

A product's answer is composed from three cache entries (product, price,
stock). Once the route has answered a product, its finished ASGI messages are
kept here together with the three values they were rendered from. The next
request for the same path is answered from these messages when all three keys
are L1 hits whose values are *the same objects* the messages were built from:
L1 hands out a new object whenever an entry is reloaded, so an invalidated,
expired or replaced part never matches, and the request falls through to the
route, which renders (and remembers) the answer again. The bytes therefore
never outlive any of their parts, and a hit skips routing, middleware, the
Request/Response objects and header building, which together cost more than
the three L1 lookups.

Only what the route itself would answer with three L1 hits is served here:
``GET`` of the canonical path (``/products/42``, not ``/products/042``), at
the application's root, with ``X-Cache: product=l1, price=l1, stock=l1``.
The RED metrics count and time these responses under the route's labels.
A request that falls through after some of its parts matched has peeked
those parts here and again in the route, so their L1 hit counters count that
one read twice (once per change of a part, not per request).

The kept answer is also the route's memo of the rendered body (``body_for``),
so a product costs one tuple and its body here; the response start message
depends only on the body's length and is shared by every product of that
length.
"""

from __future__ import annotations

import time
from typing import Any

from .metrics import HTTP_DURATIONS, HTTP_RESPONSES

ROUTE = "/products/{id}"
PREFIX = "/products/"
_COUNT_KEY = (ROUTE, "GET", 200)
_ALL_L1 = b"product=l1, price=l1, stock=l1"
# Bounded like the other per-product memos: cleared when full (cheap to rebuild).
_MAX = 100_000


class HotProducts:
    """Paths to ready answers, each checked against L1 on every use."""

    __slots__ = ("_latency", "_node", "_peek", "_ready", "_starts")

    def __init__(self, peek: Any, node_id: bytes) -> None:
        self._peek = peek
        self._node = node_id
        self._ready: dict[str, tuple[Any, ...]] = {}
        self._starts: dict[int, dict[str, Any]] = {}
        self._latency = HTTP_DURATIONS.for_route("GET", ROUTE)

    def body_for(self, product_id: int, product: Any, price: Any, stock: Any) -> bytes | None:
        """The body already rendered from exactly these three values, if any."""
        ready = self._ready.get(f"{PREFIX}{product_id}")
        if ready is not None and ready[6] is product and ready[7] is price \
                and ready[8] is stock:
            body: bytes = ready[10]
            return body
        return None

    def remember(self, product_id: int, keys: tuple[Any, ...], parts: tuple[Any, Any, Any],
                 body: bytes) -> None:
        """Keep the answer for ``product_id`` rendered as ``body`` from
        ``parts`` (product, price, stock values), whose keys and entry options
        are ``keys`` (product key, options, price key, options, stock key,
        options)."""
        ready = self._ready
        if len(ready) >= _MAX:
            ready.clear()
        start = self._starts.get(len(body))
        if start is None:
            start = self._starts[len(body)] = {
                "type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"x-cache", _ALL_L1), (b"x-node", self._node)]}
        ready[f"{PREFIX}{product_id}"] = (*keys, *parts, start, body)

    def forget(self) -> None:
        self._ready.clear()

    async def serve(self, path: str, send: Any) -> bool:
        """Answer ``GET path`` if its ready answer still matches L1; else False
        (nothing was sent)."""
        ready = self._ready.get(path)
        if ready is None:
            return False
        started = time.perf_counter()
        pk, po, rk, ro, sk, so, product, price, stock, start, body = ready
        peek = self._peek
        hit = peek(pk, po)
        if hit is None or hit.value is not product:
            return False
        hit = peek(rk, ro)
        if hit is None or hit.value is not price:
            return False
        hit = peek(sk, so)
        if hit is None or hit.value is not stock:
            return False
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})
        counts = HTTP_RESPONSES.counts
        counts[_COUNT_KEY] = counts.get(_COUNT_KEY, 0) + 1
        self._latency.observe(time.perf_counter() - started)
        return True
