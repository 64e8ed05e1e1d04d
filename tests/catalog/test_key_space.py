"""Hostile reads cannot fill Redis or the replicas' memory: requests for
missing or invalid ids and arbitrary list parameters, against two real replica
processes and a real private redis-server, add no key to Redis and no entry to
either replica's L1. What Redis can hold is bounded by the data
(services/catalog/README.md, "Bounded key space"):

    3 x products + categories + list blocks + 2 entries, + the library's fixed keys

where list blocks are ceil(products / 100) for all products plus, per
category, ceil(its products / 100).

The property is structural: a request shape either keys something on its
parameters or it does not, and the first request of a shape that does adds a
key. So the requests are stratified (the same number of every shape, each with
its own random parameters) rather than many: 2,000 of each of the six shapes
prove what 100,000 mixed ones did, at an eighth of the cost. Set
KEY_SPACE_REQUESTS for a longer soak."""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.support.catalog_cluster import Cluster, http_json
from tests.support.redis_server import RedisServer

REQUESTS = int(os.environ.get("KEY_SPACE_REQUESTS", "12000"))
CONNECTIONS = 32
FIXED_KEYS = 8  # the library's own: clock, tag table, policies, per-replica stats, ...
# Every missing id costs a database query (nothing is remembered): on a busy
# 2-core machine this runs at a few hundred requests per second.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _hostile_paths(rng: random.Random, n: int) -> list[str]:
    """``n`` requests, the same number of each shape (every shape is covered
    however small ``n`` is), in a random order."""
    kinds = [
        lambda: f"/products/{rng.randint(51, 2_147_483_647)}",  # missing
        lambda: f"/products/{rng.choice(['0', '-1', 'x1', '9' * 11, '1e3'])}{rng.randint(0, 9)}",
        lambda: (f"/products?category_id={rng.randint(1, 2_147_483_647)}"
                 f"&limit={rng.randint(1, 100)}&offset={rng.randint(0, 1_000_000)}"),
        lambda: f"/products?limit={rng.randint(1, 100)}&offset={rng.randint(0, 1_000_000)}",
        lambda: f"/categories/{rng.randint(11, 2_147_483_647)}/products"
                f"?offset={rng.randint(0, 1_000_000)}",
        lambda: f"/categories/{rng.randint(1, 10)}/products?limit={rng.randint(1, 100)}"
                f"&offset={rng.randint(0, 1_000_000)}",
    ]
    paths = [kinds[i % len(kinds)]() for i in range(n)]
    rng.shuffle(paths)
    return paths


def _l1_entries(url: str) -> float:
    """The replica's ``hybridcache_l1_entries`` (its L1 holds this many values)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "hybridcache_l1_entries":
            return sum(sample.value for sample in family.samples)
    raise AssertionError("hybridcache_l1_entries not exported")


async def _fire(ports: list[int], paths: list[str]) -> dict[int, int]:
    """Keep-alive HTTP/1.1 over CONNECTIONS sockets spread over the replicas;
    counts responses by status."""
    host = "127.0.0.1"
    statuses: dict[int, int] = {}
    queue = iter(paths)

    async def connection(port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        for path in queue:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            assert length is not None, head
            await reader.readexactly(int(length.group(1)))
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    await asyncio.gather(*[connection(ports[i % len(ports)]) for i in range(CONNECTIONS)])
    return statuses


def test_hostile_reads_add_no_key_to_redis(sqlite_url: str, redis_server: RedisServer,
                                           tmp_path: Path) -> None:
    # Two replicas, so the hostile load uses both cores of a small machine.
    with Cluster(2, database_url=sqlite_url, redis_url=redis_server.url,
                 workdir=tmp_path) as cluster:
        # Everything that exists, read once on each replica: what Redis and
        # each L1 may legitimately hold.
        for url in cluster.urls:
            products = [http_json(f"{url}/products/{pid}")[2] for pid in range(1, 51)]
            for category in range(1, 11):
                http_json(f"{url}/categories/{category}/products")
            http_json(f"{url}/products")
            http_json(f"{url}/categories")
            http_json(f"{url}/countries")
        per_category: dict[int, int] = {}
        for p in products:
            per_category[p["category_id"]] = per_category.get(p["category_id"], 0) + 1
        r = redis.Redis.from_url(redis_server.url)
        before = set(r.scan_iter(match="hc:e:*", count=1000))  # cache entries
        blocks = math.ceil(50 / 100) + sum(math.ceil(n / 100) for n in per_category.values())
        bound = 3 * 50 + 10 + blocks + 2
        assert len(before) <= bound, (len(before), bound, sorted(before))
        l1_before = [_l1_entries(u) for u in cluster.urls]

        paths = _hostile_paths(random.Random(14), REQUESTS)
        started = time.monotonic()
        statuses = asyncio.run(_fire([r.port for r in cluster.replicas], paths))
        print(f"{REQUESTS} hostile requests in {time.monotonic() - started:.1f}s: {statuses}")
        assert sum(statuses.values()) == REQUESTS
        assert set(statuses) <= {200, 404}, statuses  # never a 500
        entries = set(r.scan_iter(match="hc:e:*", count=1000))
        assert entries - before == set()  # not one new entry (some may have expired)
        others = sorted(set(r.keys()) - entries)
        assert len(others) <= FIXED_KEYS, others
        # nor in the replicas' memory: no hostile answer was kept in L1
        l1_after = [_l1_entries(u) for u in cluster.urls]
        assert all(a <= b for a, b in zip(l1_after, l1_before, strict=True)), (
            l1_before, l1_after)
