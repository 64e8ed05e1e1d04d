"""L2-hit latency and backplane lag through Sentinel (redis+sentinel://) vs
the same master addressed directly (redis://), in one run, interleaved.

Both caches talk to the very same redis-server (the Sentinel group's
master), so the ratio isolates the client path: Sentinel is consulted only
when a connection is opened, never per command, and the target is parity
(<= 1.1x). BENCH_QUICK=1 takes fewer samples (about 15 s, mostly the
group's start-up)."""

from __future__ import annotations

import asyncio
import os
import time

from bench.common import median, percentile, verdict
from tests.support.redis_sentinel import Sentinels

QUICK = os.environ.get("BENCH_QUICK") == "1"
N_HIT = int(os.environ.get("BENCH_N_MODES_L2", "500" if QUICK else "4000"))
N_LAG = int(os.environ.get("BENCH_N_MODES_BP", "200" if QUICK else "1500"))


async def run(direct: str, sentinel: str) -> int:
    from hybridcache import CacheOptions, EntryOptions, HybridCache

    opts = EntryOptions(expiration=3600, skip_l1_read=True, skip_l1_write=True)
    value = {"id": 42, "name": "x" * 180}

    async def factory() -> dict[str, object]:
        return value

    urls = {"standalone": direct, "sentinel": sentinel}
    senders = {m: HybridCache(CacheOptions(redis_url=u, node_id=f"{m}-a", key_prefix=f"{m}:"))
               for m, u in urls.items()}
    receivers = {m: HybridCache(CacheOptions(redis_url=u, node_id=f"{m}-b", key_prefix=f"{m}:"))
                 for m, u in urls.items()}
    caches = [*senders.values(), *receivers.values()]
    for cache in caches:
        await cache.start()
        await cache.wait_connected()
    try:
        hits: dict[str, list[float]] = {m: [] for m in urls}
        for cache in senders.values():
            await cache.get_or_create("product:42", factory, options=opts)
        for _ in range(N_HIT):  # interleaved so both see the same noise
            for mode, cache in senders.items():
                t0 = time.perf_counter()
                await cache.get_or_create("product:42", factory, options=opts)
                hits[mode].append(time.perf_counter() - t0)
        lags: dict[str, list[float]] = {m: [] for m in urls}
        applied = {m: asyncio.Event() for m in urls}
        for mode, cache in receivers.items():
            cache.on_invalidated(lambda op, _id, origin, e=applied[mode]:
                                 e.set() if op == "tag" and origin == "remote" else None)
        for i in range(N_LAG):
            for mode, cache in senders.items():
                applied[mode].clear()
                t0 = time.perf_counter()
                await cache.remove_by_tag(f"t{i % 100}")
                await applied[mode].wait()
                lags[mode].append(time.perf_counter() - t0)
    finally:
        for cache in caches:
            await cache.close()
    for mode in urls:
        print(f"{mode:10} L2 hit p50 {median(hits[mode]) * 1e6:7.1f} us"
              f"  backplane lag p50 {median(lags[mode]) * 1e6:7.1f} us"
              f"  p99 {percentile(lags[mode], 0.99) * 1e6:7.1f} us")
    hit_ratio = median(hits["sentinel"]) / median(hits["standalone"])
    lag_ratio = median(lags["sentinel"]) / median(lags["standalone"])
    print(f"sentinel / standalone: L2 hit p50 {hit_ratio:.2f}x"
          f" (target <= 1.1x: {verdict(hit_ratio <= 1.1)}),"
          f" backplane lag p50 {lag_ratio:.2f}x (target <= 1.1x: {verdict(lag_ratio <= 1.1)})")
    return 0


def main() -> int:
    with Sentinels() as group:
        return asyncio.run(run(group.master.url, group.url()))
