"""Reads under a trickle of writes: 3 replicas (real processes, one Redis, one
SQLite database, 1,000 products), zipf-distributed ``GET /products/{id}``
over the replicas, with 0%, 1% and 5% of the requests being writes of one
data type (product rename, price, stock) to uniformly chosen products.

Reports, per run: reads/s, and the hit ratio per layer and data type from the
replicas' ``hybridcache_requests_total`` (L1: hits / L1 lookups; L2: hits / L2
lookups, i.e. of the L1 misses). Target (same invocation, ratios): with 1%
product renames, reads/s >= 0.8x the read-only run and product L1 hit ratio
>= 90%. Run: ``.venv/bin/python -m bench bench_write_mix``
(``BENCH_SECONDS`` per run, default 8).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PRODUCTS = 1000
SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
CONNECTIONS = 24
ZIPF_S = 1.1
DATA_TYPES = ("product", "price", "stock")
MIXES = [(None, 0.0)] + [(dt, pct) for dt in DATA_TYPES for pct in (0.01, 0.05)]
TARGET_RATE, TARGET_L1 = 0.8, 0.90
_METRIC = re.compile(r'^hybridcache_requests_total\{([^}]*)\} ([0-9.e+]+)$', re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Run:
    writes_of: str | None
    share: float
    reads: int
    writes: int
    seconds: float
    ratios: dict[tuple[str, str], float]  # (data_type, layer) -> hit ratio

    @property
    def label(self) -> str:
        return "read-only" if self.writes_of is None else f"{self.share:.0%} {self.writes_of}"

    @property
    def rate(self) -> float:
        return self.reads / self.seconds


def zipf_sampler(rng: random.Random) -> list[int]:
    """A million product ids drawn with P(rank k) ~ 1/k^s over a shuffled id order."""
    ids = list(range(1, PRODUCTS + 1))
    rng.shuffle(ids)
    cum, total = [], 0.0
    for k in range(1, PRODUCTS + 1):
        total += 1.0 / k ** ZIPF_S
        cum.append(total)
    return [ids[bisect.bisect_left(cum, rng.random() * total)] for _ in range(1_000_000)]


def counters(texts: list[str]) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for text in texts:
        for labels, value in _METRIC.findall(text):
            found = dict(_LABEL.findall(labels))
            key = (found["data_type"], found["layer"], found["result"])
            out[key] = out.get(key, 0.0) + float(value)
    return out


def _write(data_type: str, pid: int, n: int) -> tuple[str, str, bytes]:
    if data_type == "product":
        return "PATCH", f"/products/{pid}", b'{"name": "bench product %d"}' % n
    if data_type == "price":
        return "PUT", f"/products/{pid}/price", b'{"price": "%d.%02d"}' % (n % 1000, n % 100)
    return "PUT", f"/products/{pid}/stock", b'{"stock": %d}' % (n % 10_000)


async def _scrape(ports: list[int]) -> list[str]:
    async def one(port: int) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = await reader.read()
        writer.close()
        return raw.split(b"\r\n\r\n", 1)[1].decode()
    return list(await asyncio.gather(*[one(p) for p in ports]))


async def warm(ports: list[int]) -> None:
    """Every replica reads every product once, so each run starts from a warm cache."""
    async def reader(port: int, ids: range) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for pid in ids:
            w.write(f"GET /products/{pid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await r.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await r.readexactly(int(length.group(1)) if length else 0)
        w.close()
    step = PRODUCTS // 8
    await asyncio.gather(*[reader(port, range(1 + i * step, 1 + (i + 1) * step))
                           for port in ports for i in range(8)])


async def run_mix(ports: list[int], reads_from: list[int], writes_of: str | None,
                  share: float, seconds: float, rng: random.Random) -> Run:
    before = counters(await _scrape(ports))
    draw = itertools.cycle(reads_from)
    counter = itertools.count(1)
    done = {"reads": 0, "writes": 0}
    deadline = time.monotonic() + seconds

    async def connection(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < deadline:
            if writes_of is not None and rng.random() < share:
                method, path, body = _write(writes_of, rng.randint(1, PRODUCTS), next(counter))
                writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             f"application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                             .encode() + body)
                kind = "writes"
            else:
                writer.write(f"GET /products/{next(draw)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                kind = "reads"
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            done[kind] += 1
        writer.close()

    started = time.monotonic()
    await asyncio.gather(*[connection(ports[i % len(ports)]) for i in range(CONNECTIONS)])
    elapsed = time.monotonic() - started
    after = counters(await _scrape(ports))
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    ratios = {}
    for data_type in DATA_TYPES:
        for layer in ("l1", "l2"):
            hit = delta.get((data_type, layer, "hit"), 0.0)
            miss = delta.get((data_type, layer, "miss"), 0.0)
            ratios[data_type, layer] = hit / (hit + miss) if hit + miss else float("nan")
    return Run(writes_of, share, done["reads"], done["writes"], elapsed, ratios)


def report(runs: list[Run]) -> bool:
    base = runs[0]
    print(f"{'mix':<14}{'reads/s':>9}{'x r/o':>7}{'writes':>8}"
          + "".join(f"{dt + ' ' + layer:>12}" for dt in DATA_TYPES for layer in ("L1", "L2")))
    for run in runs:
        cells = "".join(f"{run.ratios[dt, layer.lower()]:>12.1%}"
                        for dt in DATA_TYPES for layer in ("L1", "L2"))
        print(f"{run.label:<14}{run.rate:>9.0f}{run.rate / base.rate:>7.2f}{run.writes:>8}"
              + cells)
    renames = next(r for r in runs if r.writes_of == "product" and r.share == 0.01)
    rate_ok = renames.rate >= TARGET_RATE * base.rate
    l1_ok = renames.ratios["product", "l1"] >= TARGET_L1
    print(f"1% product renames: reads/s {renames.rate / base.rate:.2f}x read-only "
          f"(target >= {TARGET_RATE}x: {'meets' if rate_ok else 'MISSES'}); product L1 hit "
          f"{renames.ratios['product', 'l1']:.1%} (target >= {TARGET_L1:.0%}: "
          f"{'meets' if l1_ok else 'MISSES'})")
    return rate_ok and l1_ok


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from tests.support.catalog_cluster import Cluster, seed_database
    from tests.support.redis_server import RedisServer

    rng = random.Random(14)
    reads_from = zipf_sampler(rng)
    with tempfile.TemporaryDirectory(prefix="bench-write-mix-") as tmp, RedisServer() as redis:
        work = Path(tmp)
        database_url = f"sqlite+aiosqlite:///{work / 'catalog.db'}"
        seed_database(database_url, PRODUCTS)
        with Cluster(3, database_url=database_url, redis_url=redis.url, workdir=work,
                     extra_env={"LOG_LEVEL": "WARNING"}) as cluster:
            ports = [r.port for r in cluster.replicas]
            asyncio.run(warm(ports))
            runs = [asyncio.run(run_mix(ports, reads_from, dt, share, SECONDS, rng))
                    for dt, share in MIXES]
    print(f"{PRODUCTS} products, zipf s={ZIPF_S} reads over 3 replicas, {CONNECTIONS} "
          f"connections, {SECONDS:g} s per run; writes to uniformly chosen products")
    return 0 if report(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
