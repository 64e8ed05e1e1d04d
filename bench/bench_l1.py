"""L1-hit get_or_create vs the in-memory peers, each awaited in a coroutine loop.

Targets: >= 1.3x faster than cachetools TTLCache.get, >= 3x faster than cashews mem://.
"""

from __future__ import annotations

import asyncio
import os

from bench.common import per_call_ns, verdict

N = int(os.environ.get("BENCH_N", "200000"))


async def run() -> int:
    import cachetools
    from aiocache import SimpleMemoryCache
    from cashews import Cache
    from hybridcache import CacheOptions, EntryOptions, HybridCache

    value = {"id": 42, "name": "x" * 180}
    cache = HybridCache(CacheOptions(redis_url=None, node_id="bench"))
    opts = EntryOptions(expiration=3600)

    async def factory() -> dict[str, object]:
        return value

    await cache.get_or_create("product:42", factory, tags=["product:42"], options=opts)

    async def ours() -> object:
        return await cache.get_or_create("product:42", factory, tags=["product:42"], options=opts)

    ttl = cachetools.TTLCache(maxsize=100_000, ttl=3600)
    ttl["product:42"] = value

    async def cachetools_get() -> object:
        return ttl.get("product:42")

    cashews = Cache()
    cashews.setup("mem://")
    await cashews.set("product:42", value, expire=3600)

    async def cashews_get() -> object:
        return await cashews.get("product:42")

    aio = SimpleMemoryCache()
    await aio.set("product:42", value, ttl=3600)

    async def aiocache_get() -> object:
        return await aio.get("product:42")

    results = {}
    for name, fn, n in (("hybridcache", ours, N), ("cachetools", cachetools_get, N),
                        ("cashews", cashews_get, N // 4), ("aiocache", aiocache_get, N // 8)):
        results[name] = await per_call_ns(fn, n)
    for name, ns in results.items():
        print(f"{name:12s} {ns / 1000:7.3f} us/op")
    ours_ns = results["hybridcache"]
    r_ct = results["cachetools"] / ours_ns
    r_cs = results["cashews"] / ours_ns
    r_ai = results["aiocache"] / ours_ns
    print(f"speed-up vs cachetools: {r_ct:.2f}x (target >= 1.3x: {verdict(r_ct >= 1.3)})")
    print(f"speed-up vs cashews:    {r_cs:.2f}x (target >= 3x: {verdict(r_cs >= 3)})")
    print(f"speed-up vs aiocache:   {r_ai:.2f}x")
    return 0


def main() -> int:
    return asyncio.run(run())
