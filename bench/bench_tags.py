"""remove_by_tag cost over 100k tagged entries vs over 1 entry (L1 + L2).
O(1) means the ratio stays near 1. Target: <= 2."""

from __future__ import annotations

import asyncio
import os
import time

from bench.common import median, verdict
from tests.support.redis_server import RedisServer

ENTRIES = int(os.environ.get("BENCH_TAG_ENTRIES", "100000"))
ROUNDS = 200


async def run(url: str) -> int:
    from hybridcache import CacheOptions, EntryOptions, HybridCache

    opts = EntryOptions(expiration=3600)
    async with HybridCache(CacheOptions(redis_url=url, node_id="bench",
                                        l1_max_entries=ENTRIES + 10)) as cache:
        async def one() -> int:
            return 1

        await cache.get_or_create("single:0", one, tags=["small"], options=opts)
        for start in range(0, ENTRIES, 1000):
            await asyncio.gather(*(cache.get_or_create(f"many:{i}", one, tags=["big"],
                                                       options=opts)
                                   for i in range(start, start + 1000)))
        big, small = [], []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            await cache.remove_by_tag("big")
            t1 = time.perf_counter()
            await cache.remove_by_tag("small")
            t2 = time.perf_counter()
            big.append(t1 - t0)
            small.append(t2 - t1)
        # Invalidation really took effect on the big set:
        calls = 0

        async def counted() -> int:
            nonlocal calls
            calls += 1
            return 2

        await cache.get_or_create("many:7", counted, tags=["big"], options=opts)
        assert calls == 1
    ratio = median(big) / median(small)
    print(f"remove_by_tag over {ENTRIES} entries: p50 {median(big) * 1e6:7.1f} us")
    print(f"remove_by_tag over 1 entry:          p50 {median(small) * 1e6:7.1f} us")
    print(f"ratio: {ratio:.2f} (target <= 2: {verdict(ratio <= 2)})")
    return 0


def main() -> int:
    with RedisServer() as server:
        return asyncio.run(run(server.url))
