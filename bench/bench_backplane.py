"""Backplane lag (publish -> the other node applied it) vs raw redis-py
pub/sub one-way latency, same server, same run. Target: p99 <= 2x raw."""

from __future__ import annotations

import asyncio
import os
import time

import redis.asyncio as aioredis

from bench.common import percentile, verdict
from tests.support.redis_server import RedisServer

N = int(os.environ.get("BENCH_N_BP", "2000"))


async def raw_one_way(url: str) -> list[float]:
    sub_client, pub_client = aioredis.Redis.from_url(url), aioredis.Redis.from_url(url)
    pubsub = sub_client.pubsub()
    await pubsub.subscribe("raw")
    await pubsub.get_message(timeout=1)
    samples = []
    for _ in range(N):
        await pub_client.publish("raw", repr(time.perf_counter()))
        while (msg := await pubsub.get_message(timeout=1)) is None:
            pass
        samples.append(time.perf_counter() - float(msg["data"]))
    await pubsub.aclose()
    await sub_client.aclose()
    await pub_client.aclose()
    return samples


async def cache_lag(url: str) -> list[float]:
    from hybridcache import CacheOptions, HybridCache

    a = HybridCache(CacheOptions(redis_url=url, node_id="sender"))
    b = HybridCache(CacheOptions(redis_url=url, node_id="receiver"))
    samples = []
    async with a, b:
        applied = asyncio.Event()

        def observed(op: str, ident: str, origin: str) -> None:
            if op == "tag" and origin == "remote":
                applied.set()

        b.on_invalidated(observed)
        for i in range(N):
            applied.clear()
            t0 = time.perf_counter()
            await a.remove_by_tag(f"t{i % 100}")
            await applied.wait()
            samples.append(time.perf_counter() - t0)
    return samples


async def run(url: str) -> int:
    raw = await raw_one_way(url)
    ours = await cache_lag(url)
    rp99, op99 = percentile(raw, 0.99), percentile(ours, 0.99)
    for label, samples, p99 in (("raw pub/sub one-way ", raw, rp99),
                                ("invalidation applied", ours, op99)):
        print(f"{label} p50 {percentile(samples, 0.5) * 1e6:7.1f} us  p99 {p99 * 1e6:7.1f} us")
    ratio = op99 / rp99
    print(f"backplane p99 / raw p99: {ratio:.2f}x (target <= 2x: {verdict(ratio <= 2)})")
    return 0


def main() -> int:
    with RedisServer() as server:
        return asyncio.run(run(server.url))
