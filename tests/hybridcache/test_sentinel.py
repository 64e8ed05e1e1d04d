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
import time
from collections.abc import Iterator

import pytest
from hybridcache import CacheOptions, EntryOptions, HybridCache

from tests.support.load_ledger import LEASE, Ledger, run_load
from tests.support.redis_sentinel import Sentinels
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

@pytest.fixture
def sentinels() -> Iterator[Sentinels]:
    with Sentinels() as s:
        yield s


async def _node(url: str, name: str) -> HybridCache:
    node = HybridCache(CacheOptions(
        redis_url=url, node_id=name, heartbeat_interval=0.2, heartbeat_timeout=1.0,
        backplane_lease=LEASE, reconnect_backoff_max=0.2, socket_timeout=0.5,
        default_entry_options=EntryOptions(expiration=60)))
    await node.start()
    await node.wait_connected()
    return node


async def test_master_killed_under_load(sentinels: Sentinels) -> None:
    a = await _node(sentinels.url(), "a")
    b = await _node(sentinels.url(), "b")
    try:
        ledger, stop = Ledger(), asyncio.Event()
        load = asyncio.create_task(run_load([a, b], ledger, stop))
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
