"""L2-hit latency (L1 bypassed) vs a raw redis-py asyncio GET of the same
bytes, both against the same private redis-server. Target: <= 1.3x raw."""

from __future__ import annotations

import asyncio
import os
import time

import redis.asyncio as aioredis

from bench.common import median, percentile, verdict
from tests.support.redis_server import RedisServer

N = int(os.environ.get("BENCH_N_L2", "5000"))


async def run(url: str) -> int:
    from hybridcache import CacheOptions, EntryOptions, HybridCache

    value = {"id": 42, "name": "x" * 180}
    opts = EntryOptions(expiration=3600, skip_l1_read=True, skip_l1_write=True)
    async with HybridCache(CacheOptions(redis_url=url, node_id="bench")) as cache:

        async def factory() -> dict[str, object]:
            return value

        await cache.get_or_create("product:42", factory, options=opts)
        client = aioredis.Redis.from_url(url)
        raw_payload = await client.get(cache.keys.entry("product:42"))
        await client.set("raw:product:42", raw_payload)
        ours: list[float] = []
        raw: list[float] = []
        for _ in range(N):  # interleaved so both see the same noise
            t0 = time.perf_counter()
            await cache.get_or_create("product:42", factory, options=opts)
            t1 = time.perf_counter()
            await client.get("raw:product:42")
            t2 = time.perf_counter()
            ours.append(t1 - t0)
            raw.append(t2 - t1)
        await client.aclose()
    o50, r50 = median(ours), median(raw)
    print(f"L2 hit      p50 {o50 * 1e6:7.1f} us  p99 {percentile(ours, 0.99) * 1e6:7.1f} us")
    print(f"raw GET     p50 {r50 * 1e6:7.1f} us  p99 {percentile(raw, 0.99) * 1e6:7.1f} us")
    ratio = o50 / r50
    print(f"L2 hit / raw GET (p50): {ratio:.2f}x (target <= 1.3x: {verdict(ratio <= 1.3)})")
    return 0


def main() -> int:
    with RedisServer() as server:
        return asyncio.run(run(server.url))
