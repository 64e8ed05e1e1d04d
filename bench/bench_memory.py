"""Bytes of Python heap per L1 entry holding a 200-byte value, measured with
tracemalloc, next to cachetools TTLCache holding the same values."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

N = 50_000
TARGET = 1.3


def _value(i: int) -> dict[str, object]:
    return {"id": i, "name": f"{i:08d}" + "x" * 170}  # ~200 bytes as JSON


async def ours() -> float:
    from hybridcache import CacheOptions, EntryOptions, HybridCache

    values = [_value(i) for i in range(N)]
    cache = HybridCache(CacheOptions(redis_url=None, node_id="mem", l1_max_entries=N + 1))
    opts = EntryOptions(expiration=3600)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, v in enumerate(values):
        async def f(v: dict[str, object] = v) -> dict[str, object]:
            return v
        await cache.get_or_create(f"product:{i}", f, tags=[f"product:{i}"], options=opts)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / N


def peer() -> float:
    import cachetools

    values = [_value(i) for i in range(N)]
    c = cachetools.TTLCache(maxsize=N + 1, ttl=3600)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, v in enumerate(values):
        c[f"product:{i}"] = v
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / N


def main() -> int:
    o = asyncio.run(ours())
    p = peer()
    print(f"hybridcache L1: {o:6.0f} bytes/entry beyond the value object (key, tags, metadata)")
    print(f"cachetools TTL: {p:6.0f} bytes/entry beyond the value object")
    print(f"ratio: {o / p:.2f}x (the difference buys tags, versions and expiry per entry)"
          f" target <= {TARGET}x -> {'OK' if o / p <= TARGET else 'ABOVE TARGET'}")
    return 0
