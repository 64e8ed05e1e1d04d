"""What the invalidation outbox costs a write, and how fast it carries a change
made outside the API to every replica.

1. ``PUT /products/{id}/price`` latency (p50/p99), sequential requests on one
   replica of a 3-replica cluster with the outbox (triggers + relay) and of
   another without it (``CATALOG_OUTBOX=0``: no triggers, no relay), the two
   measured in alternating rounds of the same run. Target: with/without p50
   and p99 <= 1.2x.
2. From a plain-SQL commit (a separate connection, as psql would) to every
   replica serving the new value: p50/p99, against the price's 1 s
   ``maxStaleness``. Every replica holds the old value in L1 beforehand.

Both on PostgreSQL (the local server, a private database) and on SQLite.
Run: ``.venv/bin/python -m bench bench_write_path`` (``BENCH_DB=sqlite`` or
``postgres`` for one; ``BENCH_WRITES``, ``BENCH_CHANGES`` for sample counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.common import percentile, verdict

WRITES = int(os.environ.get("BENCH_WRITES", "300"))
ROUNDS = 6
CHANGES = int(os.environ.get("BENCH_CHANGES", "40"))
TARGET = 1.2
BUDGET = 1.0  # the price's default maxStaleness
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


# ---------------------------------------------------------------- databases

async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def database(kind: str, work: Path, name: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{work / (name + '.db')}"
        return
    db = f"catalog_bench_{name}_{secrets.token_hex(3)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{db}"'))
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


def sql_setter(url: str) -> Callable[[int, int], object]:
    """A price change through a connection of its own (not the catalog's)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1], timeout=30, isolation_level=None)

        def set_sqlite(pid: int, cents: int) -> None:
            conn.execute("UPDATE prices SET cents = ? WHERE product_id = ?", (cents, pid))
        return set_sqlite

    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    holder: dict[str, asyncpg.Connection] = {}

    async def set_pg(pid: int, cents: int) -> None:
        if "c" not in holder:
            holder["c"] = await asyncpg.connect(dsn)
        await holder["c"].execute("UPDATE prices SET cents = $1 WHERE product_id = $2",
                                  cents, pid)
    return set_pg


# ---------------------------------------------------------------- measurements

def put_latencies(client: httpx.Client, url: str, pids: range, n: int,
                  base: int) -> list[float]:
    out = []
    for i in range(n):
        pid = pids[i % len(pids)]
        started = time.perf_counter()
        response = client.put(f"{url}/products/{pid}/price",
                              json={"price": f"{base + i}.{i % 100:02d}"})
        out.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"PUT price: {response.status_code} {response.text}")
    return out


async def commit_to_served(urls: list[str], set_price: Callable[[int, int], object],
                           n: int, redis_url: str, channel: str,
                           ) -> tuple[list[float], list[float]]:
    """Per change: seconds from the commit to every replica serving it, and
    from the commit to the relay's invalidation appearing on the backplane
    (heard by a subscriber of this benchmark's own): the part the relay
    accounts for; the rest is the replicas'."""
    import orjson
    import redis.asyncio as aioredis

    samples: list[float] = []
    relayed: list[float] = []
    heard: dict[str, float] = {}
    subscriber = aioredis.Redis.from_url(redis_url)
    pubsub = subscriber.pubsub()
    await pubsub.subscribe(channel)

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            with contextlib.suppress(ValueError):
                body = orjson.loads(message["data"])
                if isinstance(body, dict) and body.get("op") == "tag":
                    heard.setdefault("first", time.perf_counter())

    listener = asyncio.create_task(listen())
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            for i in range(n):
                pid = 100 + i
                for url in urls:  # old value in every L1
                    for _ in range(2):
                        (await client.get(f"{url}/products/{pid}")).raise_for_status()
                cents = 500_000 + i
                want = f"{cents // 100}.{cents % 100:02d}"
                heard.clear()
                done = set_price(pid, cents)
                if asyncio.iscoroutine(done):
                    await done
                committed = time.perf_counter()

                async def served(url: str, pid: int = pid, want: str = want,
                                 committed: float = committed) -> float:
                    while True:
                        body = (await client.get(f"{url}/products/{pid}")).json()
                        if body["price"] == want:
                            return time.perf_counter()
                        if time.perf_counter() - committed > 30:
                            raise RuntimeError(f"{url} still serves {body['price']} after 30 s")
                        await asyncio.sleep(0.002)

                seen = await asyncio.gather(*(served(u) for u in urls))
                samples.append(max(seen) - committed)
                # a price change that reached the replicas was relayed: the
                # message is heard by now (or within a moment)
                for _ in range(500):
                    if "first" in heard:
                        break
                    await asyncio.sleep(0.002)
                relayed.append(max(0.0, heard.get("first", committed) - committed))
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await pubsub.aclose()
        await subscriber.aclose()
    return samples, relayed


_EVENTS = ("hybridcache_backplane_resyncs_total", "catalog_invalidation_unconfirmed_total")


def _counted(urls: list[str]) -> dict[str, float]:
    """Events that would explain a slow change: resyncs (L1 flushed, the
    receive loop held) and acknowledged invalidations not confirmed in time."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    with httpx.Client(timeout=10.0) as client:
        for url in urls:
            text = client.get(f"{url}/metrics").text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name in _EVENTS:
                        name = sample.name.removesuffix("_total")
                        label = ",".join(f"{v}" for v in sample.labels.values())
                        key = f"{name}{{{label}}}" if label else name
                        out[key] = out.get(key, 0.0) + sample.value
    return out


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def run_one(kind: str, work: Path) -> bool:
    from tests.support.catalog_cluster import Cluster, seed_database
    from tests.support.redis_server import RedisServer

    with RedisServer() as redis, database(kind, work, "outbox") as with_url, \
            database(kind, work, "plain") as without_url:
        for url in (with_url, without_url):
            seed_database(url, 200)
        common = {"LOG_LEVEL": "WARNING"}
        with Cluster(3, database_url=with_url, redis_url=redis.url, workdir=work / kind / "on",
                     key_prefix="bw1:", extra_env=common, name_prefix="on") as on, \
                Cluster(3, database_url=without_url, redis_url=redis.url,
                        workdir=work / kind / "off", key_prefix="bw0:",
                        extra_env={**common, "CATALOG_OUTBOX": "0"}, name_prefix="off") as off:
            with_s: list[float] = []
            without_s: list[float] = []
            with httpx.Client(timeout=10.0) as client:
                put_latencies(client, on.urls[0], range(1, 50), 30, 1)  # warm-up
                put_latencies(client, off.urls[0], range(1, 50), 30, 1)
                per_round = max(1, WRITES // ROUNDS)
                for r in range(ROUNDS):  # alternate: drift hits both alike
                    with_s += put_latencies(client, on.urls[0], range(1, 50), per_round, r + 10)
                    without_s += put_latencies(client, off.urls[0], range(1, 50), per_round,
                                               r + 10)
            lag, relayed = asyncio.run(commit_to_served(on.urls, sql_setter(with_url), CHANGES,
                                                        redis.url, "bw1:backplane"))
            events = _counted(on.urls)
    w50, w99 = percentile(with_s, 0.5), percentile(with_s, 0.99)
    o50, o99 = percentile(without_s, 0.5), percentile(without_s, 0.99)
    l50, l99 = percentile(lag, 0.5), percentile(lag, 0.99)
    r50, r99 = percentile(relayed, 0.5), percentile(relayed, 0.99)
    ok_write = w50 <= TARGET * o50 and w99 <= TARGET * o99
    ok_lag = l99 <= BUDGET
    print(f"[{kind}] PUT price, {len(with_s)} writes each:"
          f" outbox p50 {ms(w50)} p99 {ms(w99)};"
          f" no outbox p50 {ms(o50)} p99 {ms(o99)};"
          f" ratio p50 {w50 / o50:.2f}x p99 {w99 / o99:.2f}x"
          f" (target <= {TARGET}x: {verdict(ok_write)})")
    print(f"[{kind}] SQL commit -> all 3 replicas serve it, {len(lag)} changes:"
          f" p50 {ms(l50)} p99 {ms(l99)} max {ms(max(lag))}"
          f" (budget {BUDGET:g} s: {verdict(ok_lag)}; p99/budget {l99 / BUDGET:.2f});"
          f" of which commit -> invalidation on the backplane p50 {ms(r50)} p99 {ms(r99)};"
          f" during the run, summed over the replicas: {events or 'no resync, no unconfirmed'}")
    return ok_write and ok_lag


def main() -> int:
    kinds = [os.environ["BENCH_DB"]] if os.environ.get("BENCH_DB") else ["postgres", "sqlite"]
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-write-") as tmp:
        for kind in kinds:
            ok = run_one(kind, Path(tmp)) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
