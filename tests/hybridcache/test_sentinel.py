"""Sentinel: two replicas on ``redis+sentinel://``, the master killed with
SIGKILL under load. Real processes: a master, a replica, three sentinels.

Judged like the checker judges the catalog: every value is a version, each
write is recorded with when it returned and whether every live replica
acknowledged it; a read is stale after an acknowledged write if it returns
an older version than one acknowledged before the read began, and stale
beyond budget if older than one written more than the budget before.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hybridcache import CacheOptions, EntryOptions, HybridCache

from tests.support.redis_sentinel import Sentinels
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

KEYS = [f"item:{i}" for i in range(8)]
LEASE = 1.0
# Any write that returned is reflected everywhere within a backplane lease
# plus the ack margin; one more second absorbs a loaded machine.
BUDGET = LEASE + 0.5 + 1.0


@pytest.fixture
def sentinels() -> Iterator[Sentinels]:
    with Sentinels() as s:
        yield s


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


async def _node(url: str, name: str) -> HybridCache:
    node = HybridCache(CacheOptions(
        redis_url=url, node_id=name, heartbeat_interval=0.2, heartbeat_timeout=1.0,
        backplane_lease=LEASE, reconnect_backoff_max=0.2, socket_timeout=0.5,
        default_entry_options=EntryOptions(expiration=60)))
    await node.start()
    await node.wait_connected()
    return node


async def _load(nodes: list[HybridCache], ledger: Ledger, stop: asyncio.Event) -> None:
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


async def test_master_killed_under_load(sentinels: Sentinels) -> None:
    a = await _node(sentinels.url(), "a")
    b = await _node(sentinels.url(), "b")
    try:
        ledger, stop = Ledger(), asyncio.Event()
        load = asyncio.create_task(_load([a, b], ledger, stop))
        await eventually(lambda: len(ledger.writes) > 20 and len(ledger.reads) > 100,
                         timeout=15, what="load before the failover")
        resyncs = sum(a.stats().resyncs.values()) + sum(b.stats().resyncs.values())
        down: dict[str, float] = {}
        killed = time.monotonic()
        new_master = sentinels.kill_master()

        def both_back() -> bool:
            for node, name in ((a, "a"), (b, "b")):
                if not node.connected and name not in down:
                    down[name] = time.monotonic()
            return len(down) == 2 and a.connected and b.connected

        await eventually(both_back, timeout=25, interval=0.01,
                         what="both replicas back on the promoted master")
        without_l2 = time.monotonic() - killed
        # A stretch of load on the new master: 30 more acknowledged writes.
        back = time.monotonic()
        await eventually(lambda: sum(1 for w in ledger.writes if w[2] > back and w[3]) >= 30,
                         timeout=15, what="acknowledged writes after the failover")
        stop.set()
        await load
        assert sentinels.master_port() == new_master.port
        print(f"\nsentinel failover: {without_l2:.2f}s from kill -9 to both replicas"
              f" on the new master (down-after {sentinels.down_after_ms} ms);"
              f" {len(ledger.reads)} reads, {len(ledger.writes)} writes")
        assert not ledger.failures, ledger.failures[:5]
        stale_after_ack, stale_beyond_budget = ledger.judge()
        assert stale_after_ack == 0
        assert stale_beyond_budget == 0
        # Both resubscribed and resynchronised on the new master...
        assert sum(a.stats().resyncs.values()) + sum(b.stats().resyncs.values()) > resyncs
        # ... and hear each other there: an acknowledged write reaches b.
        await a.get_or_create("after", _const("old"))
        assert await b.get_or_create("after", _const("old")) == "old"
        result = await a.remove("after", ack_timeout=2.0)
        assert result is not None and result.complete and "b" in result.acked
        assert await b.get_or_create("after", _const("new")) == "new"
    finally:
        await a.close()
        await b.close()


def _const(value: object):  # type: ignore[no-untyped-def]
    async def load() -> object:
        return value
    return load


async def test_a_demoted_master_keeps_no_subscriber(sentinels: Sentinels) -> None:
    """SENTINEL FAILOVER: the old master lives on as a replica, so nothing
    breaks the connections to it by itself. The subscriptions must still
    end up on the new master (they hear nothing on the old one: the lease
    runs out, and the resubscription asks the sentinels again), and an
    acknowledged invalidation must reach the other replica there."""
    a = await _node(sentinels.url(), "a")
    b = await _node(sentinels.url(), "b")
    try:
        old = sentinels.master
        new = sentinels.replica
        sentinels.failover()
        sentinels.wait_failover(new)

        def subscribers(server: object) -> int:
            return int(server.cli("pubsub", "numsub", "hc:backplane").split()[-1])  # type: ignore[attr-defined]

        await eventually(lambda: subscribers(new) == 2 and subscribers(old) == 0, timeout=20,
                         what="both subscriptions on the new master, none on the old")
        await eventually(lambda: a.connected and b.connected, timeout=10,
                         what="both replicas connected")
        await a.get_or_create("k", _const("old"))
        assert await b.get_or_create("k", _const("old")) == "old"
        result = await a.remove("k", ack_timeout=2.0)
        assert result is not None and result.complete and "b" in result.acked
        assert await b.get_or_create("k", _const("new")) == "new"
    finally:
        await a.close()
        await b.close()
