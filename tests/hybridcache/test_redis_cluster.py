"""Redis Cluster (``redis+cluster://``): replicas on a real 3-master /
3-replica cluster formed by ``redis-cli --cluster create``, one per module
(forming it costs seconds). Each test uses its own key prefix, so tests share
the cluster without sharing state.

What is proven here: entries spread over every master while the state keeps
to one slot; invalidations (key, tag, '*') cross between replicas by sharded
pub/sub; the stale-set race stays closed with the entry and the state in
different slots; one factory run per hot miss across replicas; a kill -9 of
the state shard's master and a migration of slots (the state slot among
them) under load give no error to a caller and no stale read beyond the
budget; no script or command ever fails (CROSSSLOT would count as an L2
error)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from hybridcache import CacheOptions, EntryOptions, HybridCache
from hybridcache.keys import Keys
from redis.crc import key_slot

from tests.hybridcache import races
from tests.hybridcache.conftest import Source
from tests.support.load_ledger import LEASE, Ledger, run_load
from tests.support.redis_cluster import RedisCluster, migrate_slot
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually, wait_until

pytestmark = pytest.mark.slow

_prefixes = itertools.count()


class MakeNode:
    """Starts replicas of one service on the cluster, under a key prefix of
    the test's own."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.url = cluster.url()
        self.prefix = f"c{next(_prefixes)}:"
        self.keys = Keys(self.prefix, cluster=True)
        self.nodes: list[HybridCache] = []

    async def __call__(self, node_id: str, **kw: Any) -> HybridCache:
        kw.setdefault("heartbeat_interval", 0.2)
        kw.setdefault("heartbeat_timeout", 1.0)
        kw.setdefault("reconnect_backoff_max", 0.2)
        node = HybridCache(CacheOptions(redis_url=self.url, node_id=node_id,
                                        key_prefix=self.prefix, **kw))
        await node.start()
        await node.wait_connected()
        self.nodes.append(node)
        return node


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as c:
        yield c


@pytest.fixture
async def make_node(cluster: RedisCluster) -> AsyncIterator[MakeNode]:
    make = MakeNode(cluster)
    yield make
    for node in make.nodes:
        await node.close()


def _l2_errors(*nodes: HybridCache) -> int:
    return sum(n.stats().l2_errors for n in nodes)


def _const(value: object) -> Callable[[], Awaitable[object]]:
    async def load() -> object:
        return value
    return load


async def test_entries_spread_over_every_master_and_the_state_keeps_to_one_slot(
    cluster: RedisCluster, make_node: MakeNode
) -> None:
    a = await make_node("a")
    for i in range(60):
        await a.get_or_create(f"product:{i}", _const(i), tags=[f"product:{i}"])
    keys = a.keys
    entries_on = {m.port: int(m.cli("eval", f"return #redis.call('KEYS', '{keys.prefix}e:*')",
                                    "0")) for m in cluster.masters()}
    assert len(entries_on) == 3 and all(n > 0 for n in entries_on.values()), entries_on
    assert sum(entries_on.values()) == 60
    shared = {keys.state, keys.marks, keys.nodes, keys.tag_times, keys.mark_times,
              keys.policies, keys.channel, keys.ack_channel_for("a"), keys.heartbeat_channel("a"),
              keys.fill_channel_for("product:1"), keys.policy_acks("product")}
    assert len({key_slot(k.encode()) for k in shared}) == 1
    # Everything one script stores for a key is in that key's slot.
    for key in ("product:1", "}odd{", "a{b}c"):
        assert len({key_slot(k(key).encode())
                    for k in (keys.entry, keys.lease, keys.mark)}) == 1
    assert _l2_errors(a) == 0


def test_a_brace_in_the_prefix_is_refused_on_a_cluster(cluster: RedisCluster) -> None:
    with pytest.raises(ValueError, match="must not contain"):
        HybridCache(CacheOptions(redis_url=cluster.url(), key_prefix="{hc}:"))
    assert Keys("{hc}:").state == "{hc}:state"  # standalone: any prefix, layout unchanged


async def test_invalidations_cross_between_replicas(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    src = Source("v1")
    await b.get_or_create("k:1", src, tags=["t"])
    await b.get_or_create("k:2", src, tags=["u"])
    await b.get_or_create("k:3", src, tags=["w"])
    src.value = "v2"
    result = await a.remove("k:1", ack_timeout=5)
    assert result is not None and result.complete and result.acked == {"b"}
    assert await b.get_or_create("k:1", src, tags=["t"]) == "v2"
    assert await b.get_or_create("k:2", src, tags=["u"]) == "v1"
    result = await a.remove_by_tag("u", ack_timeout=5)
    assert result is not None and result.complete
    assert await b.get_or_create("k:2", src, tags=["u"]) == "v2"
    assert await b.get_or_create("k:3", src, tags=["w"]) == "v1"
    src.value = "v3"
    result = await a.remove_by_tag("*", ack_timeout=5)
    assert result is not None and result.complete
    assert await b.get_or_create("k:3", src, tags=["w"]) == "v3"
    await a.set("k:4", "new")
    await a.remove_by_tags(["sync"], ack_timeout=5)  # messages arrive in order
    assert await b.get_or_create("k:4", _const("unused")) == "new"
    assert _l2_errors(a, b) == 0


async def test_stale_set_race_a_load_older_than_a_tag_invalidation_is_never_served(
    make_node: MakeNode
) -> None:
    """b starts loading the old row; a updates the row and invalidates its
    tag; b's load then finishes. No replica may serve the old value after."""
    a, b = await make_node("a"), await make_node("b")
    row = await races.load_overtaken_by_a_tag_invalidation(a, b)
    await races.every_node_serves(row, a, b)
    assert _l2_errors(a, b) == 0


async def test_stale_set_race_on_key_removal_is_refused_in_the_entry_slot(
    cluster: RedisCluster, make_node: MakeNode
) -> None:
    a, b = await make_node("a"), await make_node("b")
    await races.load_overtaken_by_a_key_removal(a, b)
    entry = a.keys.entry("stock:1")
    assert cluster.master_of_slot(key_slot(entry.encode())).cli("exists", entry) == "0"
    assert (await a.lookup("stock:1", Source("new"))).value == "new"
    assert (await b.lookup("stock:1", Source("unused"))).value == "new"


async def test_one_factory_run_across_replicas_for_a_hot_missing_key(
    make_node: MakeNode,
) -> None:
    nodes = [await make_node(f"n{i}") for i in range(3)]
    await races.one_load_for_a_hot_miss(nodes, per_node=50)
    assert _l2_errors(*nodes) == 0


async def test_a_burst_larger_than_the_pool_waits_for_connections(make_node: MakeNode) -> None:
    """redis-py's cluster pools fail a command when a node's pool is full;
    the cache's client makes callers wait instead, as on one server."""
    a = await make_node("a", max_connections=4)
    results = await asyncio.gather(*(a.get_or_create(f"burst:{i}", _const(i))
                                     for i in range(200)))
    assert results == list(range(200))
    removals = await asyncio.gather(*(a.remove(f"burst:{i}") for i in range(200)))
    assert removals == [None] * 200
    assert _l2_errors(a) == 0


async def _under_load(make_node: MakeNode, disturb: Callable[[], Awaitable[None]]) -> Ledger:
    """Two replicas writing (acknowledged removals) and reading; ``disturb``
    runs once the load is going; then a stretch of load after it. Returns
    the ledger, already checked for caller errors and stale reads."""
    opts = {"backplane_lease": LEASE, "socket_timeout": 0.5,
            "default_entry_options": EntryOptions(expiration=60)}
    a, b = await make_node("a", **opts), await make_node("b", **opts)
    ledger, stop = Ledger(), asyncio.Event()
    load = asyncio.create_task(run_load([a, b], ledger, stop))
    try:
        await eventually(lambda: len(ledger.writes) > 20 and len(ledger.reads) > 100,
                         timeout=15, what="load before the disturbance")
        await disturb()
        await eventually(lambda: a.connected and b.connected, timeout=20,
                         what="both replicas connected again")
        back = time.monotonic()
        await eventually(lambda: sum(1 for w in ledger.writes if w[2] > back and w[3]) >= 20,
                         timeout=15, what="acknowledged writes after the disturbance")
    finally:
        stop.set()
        await load
    assert not ledger.failures, ledger.failures[:5]
    stale_after_ack, stale_beyond_budget = ledger.judge()
    assert stale_after_ack == 0
    assert stale_beyond_budget == 0
    # Still hearing each other: an acknowledged write reaches b.
    await a.get_or_create("after", _const("old"))
    assert await b.get_or_create("after", _const("old")) == "old"
    result = await a.remove("after", ack_timeout=2.0)
    assert result is not None and result.complete and "b" in result.acked
    assert await b.get_or_create("after", _const("new")) == "new"
    return ledger


async def test_the_state_shards_master_killed_under_load(
    cluster: RedisCluster, make_node: MakeNode
) -> None:
    """kill -9 of the master holding the state slot (and the backplane's
    channels, and a third of the entries): its replica is promoted, the
    subscriptions move there, and nothing stale is served."""
    killed: list[RedisServer] = []

    async def kill() -> None:
        slot = key_slot(make_node.keys.state.encode())
        killed.append(cluster.master_of_slot(slot))
        replica = cluster.kill_master(slot)
        await asyncio.to_thread(cluster.wait_promoted, replica)

    try:
        ledger = await _under_load(make_node, kill)
        print(f"\ncluster failover: {len(ledger.reads)} reads, {len(ledger.writes)} writes")
    finally:
        for server in killed:  # back as a replica of the promoted master
            server.start()
        await asyncio.to_thread(_wait_healthy, cluster)


async def test_a_shard_that_lost_a_removal_serves_no_resurrected_entry(
    cluster: RedisCluster, make_node: MakeNode
) -> None:
    """Replication is asynchronous: the replica of an entry's shard is
    frozen (SIGSTOP) and cut off while a replica removes the entry, then the master is
    killed and the stale replica promoted: it still holds the old entry.
    Every replica must treat it as a miss (the shard changed masters), not
    serve it."""
    a, b = await make_node("a"), await make_node("b")
    state_master = cluster.master_of_slot(key_slot(make_node.keys.state.encode()))
    key = next(k for k in (f"doc:{i}" for i in range(100))
               if cluster.master_of_slot(key_slot(make_node.keys.entry(k).encode()))
               is not state_master)
    entry = make_node.keys.entry(key)
    master = cluster.master_of_slot(key_slot(entry.encode()))
    replica = cluster.replica_of(master)
    src = Source("old")
    await a.get_or_create(key, src)
    await eventually(lambda: _holds(replica, entry), timeout=5, what="the entry replicated")
    replica.pause()
    try:
        # Cut the link while the replica is frozen: nothing the master writes
        # from now on reaches it (not even through its socket buffer).
        master.cli("client", "kill", "type", "replica")
        src.value = "new"
        result = await a.remove(key, ack_timeout=5)
        assert result is not None and result.complete
        master.kill()
    finally:
        replica.resume()
    try:
        await asyncio.to_thread(cluster.wait_promoted, replica)
        assert _holds(replica, entry)  # the removed entry is back in Redis
        for node in (a, b):
            assert await node.get_or_create(key, src) == "new"
        await eventually(lambda: a.connected and b.connected, timeout=20,
                         what="both replicas connected again")
        for node in (a, b):
            assert await node.get_or_create(key, src) == "new"
    finally:
        master.start()  # back as a replica of the promoted one
        await asyncio.to_thread(_wait_healthy, cluster)


async def test_slots_migrated_under_load(cluster: RedisCluster, make_node: MakeNode) -> None:
    """The state slot and the slots of two entries move to another master
    (MIGRATE, SETSLOT NODE) while replicas read and write: subscriptions are
    dropped by Redis and follow the slot; scripts meet ASK/TRYAGAIN/MOVED."""
    keys = make_node.keys
    state_slot = key_slot(keys.state.encode())
    targets: list[RedisServer] = []

    async def migrate() -> None:
        slots = [state_slot, *(key_slot(keys.entry(f"item:{i}").encode()) for i in (0, 1))]
        for slot in slots:
            source = cluster.master_of_slot(slot)
            target = next(m for m in cluster.masters() if m.port != source.port)
            targets.append(target)
            await asyncio.to_thread(migrate_slot, cluster, slot, target)

    await _under_load(make_node, migrate)
    # The state slot moved, and both subscriptions followed it.
    new_home = cluster.master_of_slot(state_slot)
    assert new_home.port == targets[0].port
    numsub = new_home.cli("pubsub", "shardnumsub", keys.channel).split()
    assert numsub[-1] == "2", numsub


def _holds(server: RedisServer, key: str) -> bool:
    """Whether ``server`` (a replica too: SCAN is not redirected) holds ``key``."""
    return key in server.cli("scan", "0", "match", key, "count", "100000").splitlines()[1:]


def _wait_healthy(cluster: RedisCluster) -> None:
    wait_until(cluster.healthy, timeout=30, interval=0.05, what="the cluster healthy again")


async def test_the_operator_publishes_probes_and_watches_the_epoch_on_a_cluster(
    cluster: RedisCluster, make_node: MakeNode
) -> None:
    """cache_operator's Redis side on a cluster: a policy published (one
    script in the state slot, SPUBLISH) is applied and acknowledged by a
    replica, then unpublished; a probe is answered; the epoch is read."""
    from cache_operator.config import Config
    from cache_operator.epoch import EpochWatcher
    from cache_operator.fleet import FleetMonitor
    from cache_operator.publisher import PolicyPublisher
    from hybridcache.policy import Policy
    from hybridcache.redis_clients import redis_client

    a = await make_node("a")
    redis = redis_client(cluster.url(), socket_timeout=5)
    try:
        publisher = PolicyPublisher(redis, make_node.keys)
        policy = Policy("price", "active", 60.0, 5.0, ("product:{id}",), "acknowledged", 1.0, 3)
        await publisher.publish(policy)
        await eventually(lambda: a.policies.get("price") == policy, what="policy applied")
        await eventually(lambda: _acked(publisher, "price"), what="policy acknowledged")
        assert await publisher.unpublish("price") == 1
        await eventually(lambda: a.policies.get("price") is None, what="policy removed")
        config = Config(redis_url=cluster.url(), key_prefix=make_node.prefix)
        fleet = FleetMonitor(redis, make_node.keys, config, publisher)
        live = await fleet.live_replicas()
        assert live == ("a",)
        assert set(await fleet.probe(live)) == {"a"}
        changes: list[object] = []

        async def on_change(before: bytes | None, after: bytes | None) -> None:
            changes.append((before, after))

        watcher = EpochWatcher(redis, make_node.keys, on_change)
        assert not await watcher.check()  # the baseline
        assert await redis.hget(make_node.keys.state, "epoch") == a._l2.epoch
    finally:
        await redis.aclose()


async def _acked(publisher: Any, data_type: str) -> bool:
    return (await publisher.acks(data_type)).get("a") == 3
