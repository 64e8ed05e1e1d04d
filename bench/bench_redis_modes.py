"""Redis modes against one server addressed directly (redis://), in one run:

- Sentinel (redis+sentinel://) vs the same master addressed directly:
  L2-hit latency and backplane lag, interleaved. Both caches talk to the
  very same redis-server, so the ratio isolates the client path (Sentinel
  is consulted only when a connection opens); target parity (<= 1.1x).
- Redis Cluster (redis+cluster://, 3 masters + 3 replicas) vs that server:
  L2-hit latency (a plain GET routed by redis-py's slot map) and backplane
  lag (sharded pub/sub from the state slot's master), interleaved.
  Invalidation throughput (key removals from 64 concurrent callers, batched
  by the sender) on a 1-shard vs a 3-shard cluster (and one server, for
  reference: a removal there is one script call, on a cluster three steps): the invalidation state
  lives in one slot, so every invalidation passes through one shard
  (docs/design.md, "Redis Cluster"); 3 shards do not raise it, and the
  target is only that they cost no more than 1 (>= 0.8x).

BENCH_QUICK=1 takes fewer samples (about 20 s, mostly forming the groups)."""

from __future__ import annotations

import asyncio
import os
import time

from bench.common import median, percentile, verdict
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_sentinel import Sentinels

QUICK = os.environ.get("BENCH_QUICK") == "1"
N_HIT = int(os.environ.get("BENCH_N_MODES_L2", "500" if QUICK else "4000"))
N_LAG = int(os.environ.get("BENCH_N_MODES_BP", "200" if QUICK else "1500"))
N_INV = int(os.environ.get("BENCH_N_MODES_INV", "2000" if QUICK else "10000"))
ROUNDS = 3  # throughput runs per cluster, alternated


async def run(urls: dict[str, str]) -> dict[str, tuple[float, float]]:
    """L2 hit and backplane lag p50 per mode (name -> url), interleaved."""
    from hybridcache import CacheOptions, EntryOptions, HybridCache

    opts = EntryOptions(expiration=3600, skip_l1_read=True, skip_l1_write=True)
    value = {"id": 42, "name": "x" * 180}

    async def factory() -> dict[str, object]:
        return value

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
        for _ in range(N_HIT):  # interleaved so every mode sees the same noise
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
    return {m: (median(hits[m]), median(lags[m])) for m in urls}


async def throughput(url: str, prefix: str) -> float:
    """Key removals per second from 64 concurrent callers on one replica
    (another replica listening), each removal a new version in the state
    slot and a mark + delete in the key's slot."""
    from hybridcache import CacheOptions, HybridCache

    sender = HybridCache(CacheOptions(redis_url=url, node_id="inv-a", key_prefix=prefix))
    listener = HybridCache(CacheOptions(redis_url=url, node_id="inv-b", key_prefix=prefix))
    for cache in (sender, listener):
        await cache.start()
        await cache.wait_connected()
    try:
        todo = iter(range(N_INV))

        async def caller() -> None:
            for i in todo:
                await sender.remove(f"product:{i % 5000}")

        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(64)))
        rate = N_INV / (time.perf_counter() - t0)
        errors = sender.stats().l2_errors
        if errors:  # a removal that failed was queued, not made: not a rate
            raise RuntimeError(f"{errors} Redis errors during the throughput run ({url})")
        return rate
    finally:
        await sender.close()
        await listener.close()


def main() -> int:
    with Sentinels() as group, RedisCluster() as three, \
            RedisCluster(masters=1, replicas=0) as one:
        p50 = asyncio.run(run({"standalone": group.master.url, "sentinel": group.url(),
                               "cluster": three.url()}))
        rates: dict[str, list[float]] = {"standalone": [], "1 shard": [], "3 shards": []}
        for r in range(ROUNDS):  # alternated, so all see the same noise
            rates["standalone"].append(asyncio.run(throughput(group.master.url, f"s{r}:")))
            rates["1 shard"].append(asyncio.run(throughput(one.url(), f"one{r}:")))
            rates["3 shards"].append(asyncio.run(throughput(three.url(), f"three{r}:")))
    for name, values in rates.items():
        print(f"invalidation throughput, {name:10}: median {median(values):8.0f} removals/s"
              f" ({', '.join(f'{v:.0f}' for v in values)})")
    base_hit, base_lag = p50["standalone"]
    for mode, target in (("sentinel", 1.1), ("cluster", 1.3)):
        hit_ratio, lag_ratio = p50[mode][0] / base_hit, p50[mode][1] / base_lag
        print(f"{mode} / standalone: L2 hit p50 {hit_ratio:.2f}x"
              f" (target <= {target}x: {verdict(hit_ratio <= target)}),"
              f" backplane lag p50 {lag_ratio:.2f}x"
              f" (target <= {target}x: {verdict(lag_ratio <= target)})")
    inv_ratio = median(rates["3 shards"]) / median(rates["1 shard"])
    print(f"invalidation throughput 3 shards / 1 shard: {inv_ratio:.2f}x"
          f" (target >= 0.8x: {verdict(inv_ratio >= 0.8)}); 3 shards / standalone:"
          f" {median(rates['3 shards']) / median(rates['standalone']):.2f}x (reported)")
    return 0
