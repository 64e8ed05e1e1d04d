"""Replicas sharing one real Redis: L2, the backplane, the stale-set race,
acknowledgements, leases and policies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis
from hybridcache import EntryOptions
from hybridcache.keys import Keys
from hybridcache.policy import Policy
from hybridcache.testing import FakeClock, refresh_tag_table, stop_listening
from hybridcache.versions import Versions
from hybridcache.wire import Message

from tests.hybridcache import races
from tests.hybridcache.conftest import MakeNode, Source
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain Redis client, standing in for the operator or another service."""
    redis = aioredis.Redis.from_url(redis_server.url)
    yield redis
    await redis.aclose()


async def test_second_replica_reads_from_l2(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    src = Source({"id": 1})
    assert (await a.lookup("product:1", src, tags=["product:1"])).layer == "miss"
    assert (await b.lookup("product:1", src, tags=["product:1"])).layer == "l2"
    assert (await b.lookup("product:1", src, tags=["product:1"])).layer == "l1"
    assert src.calls == 1


async def test_tag_invalidation_reaches_every_replica(make_node: MakeNode) -> None:
    a, b, c = await make_node("a"), await make_node("b"), await make_node("c")
    src = Source("v1")
    for node in (a, b, c):
        await node.get_or_create("price:7", src, tags=["product:7"])
    src.value = "v2"
    result = await a.remove_by_tag("product:7", ack_timeout=5)
    assert result is not None and result.complete and result.acked == {"b", "c"}
    for node in (a, b, c):
        assert await node.get_or_create("price:7", src, tags=["product:7"]) == "v2"


async def test_key_removal_and_clear_reach_every_replica(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    src = Source("v1")
    await b.get_or_create("k:1", src, tags=["t"])
    await b.get_or_create("k:2", src, tags=["u"])
    src.value = "v2"
    assert (await a.remove("k:1", ack_timeout=5)).complete  # type: ignore[union-attr]
    assert await b.get_or_create("k:1", src, tags=["t"]) == "v2"
    assert await b.get_or_create("k:2", src, tags=["u"]) == "v1"
    src.value = "v3"
    assert (await a.remove_by_tag("*", ack_timeout=5)).complete  # type: ignore[union-attr]
    assert await b.get_or_create("k:2", src, tags=["u"]) == "v3"


async def test_set_replaces_the_value_on_every_replica(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    await b.get_or_create("cfg:1", Source("old"))
    await a.set("cfg:1", "new")
    await a.remove_by_tags(["sync"], ack_timeout=5)  # messages arrive in order
    assert await b.get_or_create("cfg:1", Source("unused")) == "new"


async def test_ack_reports_live_replicas_that_did_not_confirm(make_node: MakeNode) -> None:
    a, _b, deaf = await make_node("a"), await make_node("b"), await make_node("deaf")
    await stop_listening(deaf)  # still heartbeated recently, hears nothing now
    result = await a.remove_by_tag("t", ack_timeout=0.3)
    assert result is not None
    assert result.acked == {"b"} and result.missing == {"deaf"}


async def test_stale_set_race_a_load_older_than_an_invalidation_is_never_stored(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    """b starts loading the old row; a updates the row and invalidates; b's
    load then finishes. Neither L2 nor any L1 may hold the old value."""
    a, b = await make_node("a"), await make_node("b")
    row = await races.load_overtaken_by_a_tag_invalidation(a, b)
    assert "1.00" not in redis_server.cli("GET", "hc:e:price:1")  # refused by Redis
    await races.every_node_serves(row, a, b)


async def test_stale_set_race_on_key_removal_is_refused_in_redis(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    a, b = await make_node("a"), await make_node("b")
    await races.load_overtaken_by_a_key_removal(a, b)
    assert redis_server.cli("EXISTS", "hc:e:stock:1") == "0"
    assert (await a.lookup("stock:1", Source("new"))).value == "new"


async def test_pubsub_connection_killed_while_another_node_invalidates(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    a, b = await make_node("a"), await make_node("b")
    src, row = Source("v1"), Source("r1")
    assert await a.get_or_create("p:1", src, tags=["t"]) == "v1"
    assert await a.get_or_create("row:1", row) == "r1"
    resyncs = a.stats().resyncs.get("disconnected", 0)
    redis_server.cli("CLIENT", "KILL", "TYPE", "pubsub")
    src.value, row.value = "v2", "r2"
    await b.remove_by_tag("t")  # published while a is not subscribed
    await b.remove("row:1")
    await eventually(lambda: a.stats().resyncs.get("disconnected", 0) > resyncs
                     and a.connected,
                     what="a to resubscribe")
    assert await a.get_or_create("p:1", src, tags=["t"]) == "v2"
    assert await a.get_or_create("row:1", row) == "r2"


async def test_redis_restart_while_another_node_invalidates(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    a, b = await make_node("a"), await make_node("b")
    src, row = Source("v1"), Source("r1")
    for node in (a, b):
        assert await node.get_or_create("p:2", src, tags=["t"]) == "v1"
        assert await node.get_or_create("row:2", row) == "r1"
    redis_server.stop()
    src.value, row.value = "v2", "r2"
    await b.remove_by_tag("t")  # Redis is down: applied locally, queued for replay
    await b.remove("row:2")
    assert await b.get_or_create("p:2", src, tags=["t"]) == "v2"
    redis_server.start()
    await eventually(lambda: a.connected and b.connected, what="both nodes to reconnect")
    for node in (a, b):
        assert await node.get_or_create("p:2", src, tags=["t"]) == "v2"
        assert await node.get_or_create("row:2", row) == "r2"
    assert b.stats().pending_invalidations == 0


async def test_redis_stopped_every_call_still_succeeds(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    a = await make_node("a")
    src = Source("v1")
    await a.get_or_create("x:1", src)
    redis_server.kill()
    await eventually(lambda: not a.connected, what="a to notice")
    assert await a.get_or_create("x:2", src, tags=["t"]) == "v1"
    await a.set("x:3", "v3")  # succeeds, queued for replay
    # deaf: another replica may overwrite x:3 unheard, so not even this node's
    # own write is kept in L1 (get never calls a source)
    assert await a.get("x:3") is None
    await a.remove("x:3")
    await a.remove_by_tag("t")
    unconfirmed = await a.remove_by_tag("t", ack_timeout=0.1)
    assert unconfirmed is not None and unconfirmed.missing == {"redis-unreachable"}
    redis_server.start()
    await eventually(lambda: a.connected, what="a to reconnect")
    assert await a.get_or_create("x:4", src) == "v1"


async def test_redis_unavailable_at_start_then_appears(make_node: MakeNode) -> None:
    from tests.support.ports import free_port

    port = free_port()
    a = await make_node("a", url=f"redis://127.0.0.1:{port}/0", socket_timeout=0.2)
    assert not a.connected
    assert await a.get_or_create("y:1", Source("v")) == "v"
    with RedisServer(port=port):
        await eventually(lambda: a.connected, what="a to connect")
        assert (await a.lookup("y:2", Source("w"))).layer == "miss"


async def test_network_cut_is_detected_by_silence(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    """Bytes stop without any connection closing: the heartbeat must notice."""
    from tests.support.tcp_proxy import FreezableProxy

    proxy = await FreezableProxy(redis_server.port).start()
    try:
        a = await make_node("a", url=proxy.url)
        b = await make_node("b")
        src = Source("v1")
        await a.get_or_create("n:1", src, tags=["t"])
        proxy.freeze()
        src.value = "v2"
        await b.remove_by_tag("t")
        await eventually(lambda: not a.connected, what="a to detect the silence")
        # While cut off, L1 was flushed: a reads the source, never the old value.
        assert await a.get_or_create("n:1", src, tags=["t"]) == "v2"
        proxy.thaw()
        await eventually(lambda: a.connected, what="a to resubscribe after the cut")
        assert a.stats().resyncs.get("silence", 0) >= 1
        assert await a.get_or_create("n:1", src, tags=["t"]) == "v2"
    finally:
        await proxy.close()


async def test_skewed_clocks_cannot_keep_a_stale_entry(make_node: MakeNode) -> None:
    """Node a's clock is an hour behind, b's an hour ahead: versions come from
    Redis, so ordering is unaffected; lag is measured on Redis's clock (each
    node's measured offset removed), and the offset is its own gauge."""
    a = await make_node("a", clock=lambda: time.time() - 3600)
    b = await make_node("b", clock=lambda: time.time() + 3600)
    src = Source("v1")
    assert await a.get_or_create("sk:1", src, tags=["t"]) == "v1"
    assert await b.get_or_create("sk:1", src, tags=["t"]) == "v1"
    src.value = "v2"
    await b.remove_by_tag("t", ack_timeout=5)
    assert await a.get_or_create("sk:1", src, tags=["t"]) == "v2"
    src.value = "v3"
    await a.remove_by_tag("t", ack_timeout=5)
    assert await b.get_or_create("sk:1", src, tags=["t"]) == "v3"
    stats = a.stats()
    assert stats.lag_count >= 1 and stats.lag_sum < 60  # not the hour of skew
    assert b.stats().lag_sum < 60
    assert -3660 < stats.clock_skew < -3540 and 3540 < b.stats().clock_skew < 3660


async def test_one_factory_run_across_replicas_for_a_hot_missing_key(
    make_node: MakeNode,
) -> None:
    nodes = [await make_node(f"n{i}") for i in range(3)]
    await races.one_load_for_a_hot_miss(nodes, per_node=100)


async def test_waiters_take_over_when_the_lease_holder_dies(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    a = await make_node("a", lock_lease=0.3)
    redis_server.cli("SET", "hc:lease:dead:1", "crashed-node", "PX", "300")
    src = Source("loaded-by-a")
    assert await a.get_or_create("dead:1", src) == "loaded-by-a"
    assert src.calls == 1


async def test_payload_over_the_maximum_is_not_written_to_l2(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    a = await make_node("a", maximum_payload_bytes=100)
    assert await a.get_or_create("big:1", Source("x" * 1000)) == "x" * 1000
    assert redis_server.cli("EXISTS", "hc:e:big:1") == "0"
    assert a.stats().payload_too_large == 1
    assert (await a.lookup("big:1", Source("y"))).layer == "l1"


async def test_expiration_in_l2(make_node: MakeNode, redis_server: RedisServer) -> None:
    a = await make_node("a")
    await a.get_or_create("ttl:1", Source(1), options=EntryOptions(expiration=30))
    ttl = int(redis_server.cli("PTTL", "hc:e:ttl:1"))
    assert 0 < ttl <= 30_000


async def test_policy_published_in_redis_is_applied_live_and_acknowledged(
    make_node: MakeNode, redis_server: RedisServer, client: aioredis.Redis
) -> None:
    a = await make_node("a")
    seen: list[tuple[str, Policy | None]] = []
    a.policies.add_listener(lambda dt, p: seen.append((dt, p)))
    keys = Keys("hc:")
    policy = Policy("price", "active", 60.0, 5.0, ("product:{id}",), "acknowledged", 1.0, 3)
    await client.hset(keys.policies, "price", policy.to_json())
    await client.publish(keys.channel,
                           Message("policy", "price", "cache-operator", time.time(), 1).encode())
    await eventually(lambda: a.policies.get("price") == policy, what="policy applied")
    assert seen == [("price", policy)]
    assert redis_server.cli("HGET", "hc:policy-acks:price", "a") == "3"
    await client.hdel(keys.policies, "price")
    await client.publish(keys.channel,
                           Message("policy", "price", "cache-operator", time.time(), 2).encode())
    await eventually(lambda: a.policies.get("price") is None, what="policy deleted")


async def test_probe_receive_time_recorded(make_node: MakeNode, redis_server: RedisServer,
                                           client: aioredis.Redis) -> None:
    await make_node("a")
    sent = time.time()
    await client.publish("hc:backplane",
                           Message("probe", "p1", "cache-operator", sent, 1).encode())
    await eventually(lambda: redis_server.cli("HGET", "hc:probe:p1", "a") != "",
                     what="probe answer")
    assert float(redis_server.cli("HGET", "hc:probe:p1", "a")) >= sent


async def test_a_gap_in_a_senders_seq_forces_a_resync(make_node: MakeNode,
                                                      client: aioredis.Redis) -> None:
    a = await make_node("a")
    for seq in (1, 5):
        await client.publish("hc:backplane", orjson.dumps(
            {"v": 1, "op": "tag", "id": "t", "node": "x", "ts": time.time(), "seq": seq,
             "ver": 1}))
    await eventually(lambda: a.stats().resyncs.get("seq_gap") == 1, what="seq gap resync")


async def test_malformed_backplane_messages_are_ignored(make_node: MakeNode,
                                                       client: aioredis.Redis) -> None:
    a, b = await make_node("a"), await make_node("b")
    for junk in (b"not json", b"[]", b'{"v":2}', b'{"v":1,"op":"nuke"}'):
        await client.publish("hc:backplane", junk)
    assert (await a.remove_by_tag("t", ack_timeout=5)).complete  # type: ignore[union-attr]
    assert b.connected


async def test_stats_published_for_the_operator(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    a = await make_node("a", stats_interval=0.2)
    src = Source()
    await a.get_or_create("price:1", src)
    await a.get_or_create("price:1", src)
    await eventually(lambda: redis_server.cli("HGET", "hc:stats:a", "l1_hit:price") == "1",
                     what="stats")
    assert "a" in redis_server.cli("ZRANGE", "hc:nodes", "0", "-1")




async def test_a_burst_larger_than_the_pool_waits_for_connections(make_node: MakeNode) -> None:
    a = await make_node("a", max_connections=4)
    results = await asyncio.gather(*(a.get_or_create(f"burst:{i}", Source(i)) for i in range(300)))
    assert results == list(range(300))
    assert a.stats().l2_errors == 0 and a.connected


async def test_derived_tags_travel_with_the_entry_through_l2(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    src = Source({"id": 9, "category_id": 2})

    def tags(v: dict[str, int]) -> list[str]:
        return [f"category:{v['category_id']}"]

    await a.get_or_create("product:9", src, tags=tags)
    assert (await b.lookup("product:9", src, tags=tags)).layer == "l2"
    src.value = {"id": 9, "category_id": 2, "renamed": True}
    await a.remove_by_tag("category:2", ack_timeout=5)
    assert (await b.get_or_create("product:9", src, tags=tags))["renamed"] is True


async def test_local_tag_table_forgets_what_redis_pruned_once_no_entry_needs_it(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    clock = FakeClock()
    a = await make_node("a", monotonic=clock)
    src = Source("v1")
    await a.get_or_create("p:1", src, tags=["old-tag"],
                          options=EntryOptions(expiration=30))
    await a.remove_by_tags(["old-tag", "kept-tag"])
    src.value = "v2"
    redis_server.cli("HDEL", "hc:state", "t:old-tag")  # lost (or pruned) in Redis
    await refresh_tag_table(a)
    # The L1 entry loaded before the invalidation may still be there: the
    # record that voids it is kept, so it is not served again.
    assert "old-tag" in a.tag_versions()
    assert (await a.lookup("p:1", src, tags=["old-tag"],
                           options=EntryOptions(expiration=30))).value == "v2"
    clock.advance(31)  # every entry kept before the record is gone
    await refresh_tag_table(a)
    assert "old-tag" not in a.tag_versions()
    assert "kept-tag" in a.tag_versions()


def test_pruning_keeps_local_records_newer_than_the_snapshot() -> None:
    versions = Versions()
    for tag, version in (("pruned", 5), ("kept", 6), ("late", 12), ("behind", 7)):
        versions.apply_tag(tag, version, now=0.0)
    versions.apply_tag("recent", 8, now=95.0)
    # Redis's table, read atomically with clock 10: "pruned" was dropped there,
    # "late" arrived here after the snapshot, Redis knows a newer "behind";
    # "recent" was dropped there too, but an L1 entry (kept at most 10 s) may
    # still depend on it; "planted" is above Redis's own clock.
    versions.merge_pruned({"kept": 6, "behind": 9, "other": 3, "planted": 99}, snapshot=10,
                          now=100.0, retention=10.0)
    assert versions.tags == {"kept": 6, "late": 12, "behind": 9, "other": 3, "recent": 8}


async def test_a_cancelled_lease_holder_gives_the_lease_back(make_node: MakeNode) -> None:
    """Other replicas must not wait out a 30 s lease for a caller that gave up."""
    a, b = await make_node("a", lock_lease=30), await make_node("b", lock_lease=30)
    started = asyncio.Event()

    async def hangs() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    holder = asyncio.create_task(a.get_or_create("held:1", hangs))
    await started.wait()
    waiting = asyncio.create_task(b.get_or_create("held:1", Source("from-b")))
    holder.cancel()
    # Well inside the 30 s lease: b was woken by the release's fill notice.
    assert await asyncio.wait_for(waiting, 15) == "from-b"


async def test_uncached_adaptive_result_stays_out_of_l2(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    from hybridcache import Adaptive

    a = await make_node("a")

    async def transient() -> Adaptive:
        return Adaptive({"error": "upstream busy"}, cache=False)

    assert await a.get_or_create("q:1", transient) == {"error": "upstream busy"}
    assert redis_server.cli("EXISTS", "hc:e:q:1") == "0"
    assert redis_server.cli("EXISTS", "hc:lease:q:1") == "0"  # the lease was given back


async def test_a_failing_factory_gives_the_lease_back(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    a = await make_node("a", lock_lease=30)

    async def failing() -> str:
        assert redis_server.cli("GET", "hc:lease:f:1") == "a"  # held while loading
        raise LookupError("db down")

    with pytest.raises(LookupError):
        await a.get_or_create("f:1", failing)
    await a.join_background()  # given back in the background after an error
    assert redis_server.cli("EXISTS", "hc:lease:f:1") == "0"
