"""Hot-key miss storm: 3 replicas (real processes, one Redis, one SQLite
database), 300 concurrent ``GET /products/{id}`` for one product nobody has
read yet, spread over the replicas. Counts the database queries the storm
caused (``catalog_db_queries_total`` summed over the replicas), per data type.

Limit: 1 query per data type (product, price, stock) for the whole cluster --
cluster-wide single flight. The ratio printed is queries / limit (1.00x =
at the limit). Run: ``.venv/bin/python -m bench bench_catalog_stampede``.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

REQUESTS = 300
PRODUCT = 77
DATA_TYPES = ("product", "price", "stock")


def db_reads(metrics_text: str) -> dict[str, float]:
    out = dict.fromkeys(DATA_TYPES, 0.0)
    pattern = re.compile(
        r'^catalog_db_queries_total\{data_type="(\w+)",kind="read"\} ([0-9.e+]+)$', re.M)
    for data_type, value in pattern.findall(metrics_text):
        if data_type in out:
            out[data_type] += float(value)
    return out


async def storm(urls: list[str]) -> tuple[list[int], float, dict[str, float]]:
    import httpx

    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        async def totals() -> dict[str, float]:
            texts = await asyncio.gather(*[client.get(f"{u}/metrics") for u in urls])
            sums = dict.fromkeys(DATA_TYPES, 0.0)
            for t in texts:
                for k, v in db_reads(t.text).items():
                    sums[k] += v
            return sums

        before = await totals()
        # Open the connections first so the storm is requests, not TCP handshakes.
        await asyncio.gather(*[client.get(f"{urls[i % len(urls)]}/healthz")
                               for i in range(REQUESTS)])
        started = time.perf_counter()
        responses = await asyncio.gather(*[client.get(f"{urls[i % len(urls)]}/products/{PRODUCT}")
                                           for i in range(REQUESTS)])
        elapsed = time.perf_counter() - started
        after = await totals()
    return ([r.status_code for r in responses], elapsed,
            {k: after[k] - before[k] for k in DATA_TYPES})


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from tests.support.catalog_cluster import Cluster, seed_database
    from tests.support.redis_server import RedisServer

    with tempfile.TemporaryDirectory(prefix="bench-stampede-") as tmp, RedisServer() as redis:
        work = Path(tmp)
        database_url = f"sqlite+aiosqlite:///{work / 'catalog.db'}"
        seed_database(database_url, 100)
        with Cluster(3, database_url=database_url, redis_url=redis.url, workdir=work,
                     extra_env={"LOG_LEVEL": "WARNING"}) as cluster:
            statuses, elapsed, queries = asyncio.run(storm(cluster.urls))
    ok = statuses.count(200)
    print(f"{REQUESTS} concurrent GET /products/{PRODUCT} (uncached) over 3 replicas:"
          f" {ok} x 200 in {elapsed * 1000:.0f} ms")
    worst = max(queries.values())
    for data_type in DATA_TYPES:
        print(f"  database queries for {data_type:7}: {queries[data_type]:.0f}"
              f"  (limit 1 -> {queries[data_type] / 1:.2f}x; without single flight:"
              f" up to {REQUESTS})")
    print(f"worst data type: {worst:.0f} queries = {worst:.2f}x the limit of 1"
          f" ({'OK' if worst <= 1 else 'ABOVE LIMIT'}); {REQUESTS / max(worst, 1):.0f}x fewer"
          f" than one query per request")
    return 0 if ok == REQUESTS else 1


if __name__ == "__main__":
    sys.exit(main())
