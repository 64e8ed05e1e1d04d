"""A write/read load on cache replicas, and the ledger that judges it like
the checker judges the catalog: every value is a version, each write is
recorded with when it returned and whether every live replica acknowledged
it; a read is stale after an acknowledged write if it returns an older
version than one acknowledged before the read began, and stale beyond budget
if older than one written more than the budget before. Shared by the
failover tests (Sentinel, Redis Cluster)."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from hybridcache import HybridCache

KEYS = [f"item:{i}" for i in range(8)]
LEASE = 1.0
# Any write that returned is reflected everywhere within a backplane lease
# plus the ack margin; one more second absorbs a loaded machine.
BUDGET = LEASE + 0.5 + 1.0


@dataclass
class Ledger:
    db: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYS, 0))
    # key, version, when it returned, acknowledged by every live replica
    writes: list[tuple[str, int, float, bool]] = field(default_factory=list)
    reads: list[tuple[str, int, float]] = field(default_factory=list)  # key, ver, started
    failures: list[str] = field(default_factory=list)

    def judge(self) -> tuple[int, int]:
        stale_after_ack = stale_beyond_budget = 0
        for key, version, started in self.reads:
            newer = [(v, done, acked) for k, v, done, acked in self.writes
                     if k == key and v > version]
            if any(acked and done < started for _, done, acked in newer):
                stale_after_ack += 1
            if any(done < started - BUDGET for _, done, _ in newer):
                stale_beyond_budget += 1
        return stale_after_ack, stale_beyond_budget


async def run_load(nodes: list[HybridCache], ledger: Ledger, stop: asyncio.Event) -> None:
    rng = random.Random(7)

    async def writer(node: HybridCache) -> None:
        while not stop.is_set():
            key = rng.choice(KEYS)
            ledger.db[key] += 1
            version = ledger.db[key]
            try:
                result = await node.remove(key, ack_timeout=1.0)
            except Exception as exc:  # a failure here is what the test is about
                ledger.failures.append(f"remove: {exc!r}")
                continue
            ledger.writes.append((key, version, time.monotonic(),
                                  result is not None and result.complete))
            await asyncio.sleep(0.01)

    async def reader(node: HybridCache) -> None:
        while not stop.is_set():
            key = rng.choice(KEYS)
            started = time.monotonic()

            async def load(key: str = key) -> int:
                return ledger.db[key]

            try:
                value = await node.get_or_create(key, load)
            except Exception as exc:
                ledger.failures.append(f"get_or_create: {exc!r}")
                continue
            ledger.reads.append((key, value, started))
            await asyncio.sleep(0.002)

    tasks = [asyncio.create_task(writer(n)) for n in nodes]
    tasks += [asyncio.create_task(reader(n)) for n in nodes for _ in range(2)]
    await stop.wait()
    await asyncio.gather(*tasks)
