"""A replica in its own process, for tests that need real separate processes.

Usage: python -m tests.hybridcache.replica_process REDIS_URL NODE_ID KEY N
Waits for a 'go' on the Redis list ``go:<NODE_ID>`` (so every process starts its
burst at once), then issues N concurrent get_or_create calls for KEY whose
factory counts its runs in Redis (``factory-runs``), and prints a JSON line.
"""

from __future__ import annotations

import asyncio
import sys

import orjson
import redis.asyncio as aioredis
from hybridcache import CacheOptions, HybridCache


async def main(url: str, node_id: str, key: str, n: int) -> None:
    counter = aioredis.Redis.from_url(url)
    async with HybridCache(CacheOptions(redis_url=url, node_id=node_id)) as cache:
        await cache.wait_connected()
        await counter.rpush(f"ready:{node_id}", 1)
        await counter.blpop([f"go:{node_id}"], timeout=30)

        async def load() -> dict[str, str]:
            await counter.incr("factory-runs")
            await asyncio.sleep(0.3)  # a slow query: the others must wait, not load
            return {"loaded_by": node_id}

        results = await asyncio.gather(*(cache.get_or_create(key, load) for _ in range(n)))
        print(orjson.dumps({"node": node_id, "distinct": sorted({r["loaded_by"] for r in results}),
                            "count": len(results)}).decode(), flush=True)
    await counter.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
