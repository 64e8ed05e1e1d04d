"""When Redis forgets, lies or stalls: real redis-server processes, each fault
made the way production makes it (DEL, FLUSHALL, SIGKILL, eviction, CLIENT
KILL, SIGSTOP, planted values). Each test names the rule it checks: no
invalidated value is served again, no error reaches the caller."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis
from hybridcache import EntryOptions
from hybridcache.backplane import UNREACHABLE
from hybridcache.testing import FakeClock, resume_listening, stop_listening

from tests.hybridcache.conftest import MakeNode, Source
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

OPTS = EntryOptions(expiration=600, local_expiration=600)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_server.url)
    yield redis
    await redis.aclose()


async def cached_everywhere(src: Source, *nodes: object) -> None:
    for node in nodes:
        assert await node.get_or_create("p:1", src, tags=["t"], options=OPTS) == src.value  # type: ignore[attr-defined]


async def _serves_current(node: object, src: Source) -> bool:
    value = await node.get_or_create("p:1", src, tags=["t"], options=OPTS)  # type: ignore[attr-defined]
    return bool(value == src.value)


@pytest.mark.parametrize("lost", [
    ["DEL", "hc:state"], ["DEL", "hc:marks"], ["HDEL", "hc:state", "clock"],
    ["HDEL", "hc:state", "epoch"], ["HDEL", "hc:state", "t:t"], ["DEL", "hc:tagtimes"],
    ["DEL", "hc:nodes"], ["FLUSHALL"],
])
async def test_losing_invalidation_state_never_revalidates_a_value(
    make_node: MakeNode, redis_server: RedisServer, lost: list[str]
) -> None:
    """The fault run's worst case: the clock lost with the epoch kept made every
    later invalidation rank below cached versions (old value served for 45 s)."""
    a, b = await make_node("a"), await make_node("b")
    src = Source("v1")
    await cached_everywhere(src, a, b)
    await a.remove_by_tag("t", ack_timeout=5)  # a tag record that can be lost
    await cached_everywhere(src, a, b)
    redis_server.cli(*lost)
    src.value = "v2"
    result = await a.remove_by_tag("t", ack_timeout=5)
    assert result is not None and result.complete
    fresh = await make_node("c")  # reads L2 with no L1 of its own
    for node in (a, b, fresh):
        assert await node.get_or_create("p:1", src, tags=["t"], options=OPTS) == "v2"
    src.value = "v3"
    await b.remove("p:1", ack_timeout=5)
    for node in (a, b, fresh):
        assert await node.get_or_create("p:1", src, tags=["t"], options=OPTS) == "v3"


async def test_a_new_epoch_flushes_l1_on_every_replica_within_a_heartbeat(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    a, b = await make_node("a"), await make_node("b")
    src = Source("v1")
    await cached_everywhere(src, a, b)
    redis_server.cli("DEL", "hc:state")  # nobody writes afterwards
    for node in (a, b):
        await eventually(lambda node=node: node.stats().resyncs.get("epoch"),  # type: ignore[misc]
                         what="a resync for the new epoch")
        assert node.inspect("p:1") is None  # flushed


async def test_an_l2_entry_from_before_the_loss_is_refused(
    make_node: MakeNode, redis_server: RedisServer, client: aioredis.Redis
) -> None:
    a = await make_node("a")
    src = Source("v1")
    await cached_everywhere(src, a)
    old_entry = await client.get("hc:e:p:1")
    redis_server.cli("DEL", "hc:state")
    await eventually(lambda: a.inspect("p:1") is None, what="L1 flushed")
    await client.set("hc:e:p:1", old_entry)  # e.g. a replica that lacked the loss
    src.value = "v2"
    assert (await a.lookup("p:1", src, tags=["t"], options=OPTS)).value == "v2"


@pytest.mark.parametrize("garbage", [b"junk", b"12", b"-5"])
async def test_a_malformed_clock_is_a_miss_not_an_error(
    make_node: MakeNode, redis_server: RedisServer, garbage: bytes
) -> None:
    a = await make_node("a")
    redis_server.cli("HSET", "hc:state", "clock", garbage.decode())
    src = Source("v1")
    for _ in range(3):
        assert await a.get_or_create("p:2", src, options=OPTS) == "v1"


async def test_a_planted_entry_above_the_clock_is_refused_and_replaced(
    make_node: MakeNode, client: aioredis.Redis
) -> None:
    a, b = await make_node("a"), await make_node("b")
    await client.set("hc:e:p:1", b'9000000000000000000 [["t"],0]\n"planted"')
    src = Source("v1")
    assert await a.get_or_create("p:1", src, tags=["t"], options=OPTS) == "v1"
    assert a.stats().rejected.get("entry_version") == 1
    assert (await client.get("hc:e:p:1") or b"").endswith(b'"v1"')  # replaced
    src.value = "v2"
    await a.remove_by_tag("t", ack_timeout=5)
    assert await b.get_or_create("p:1", src, tags=["t"], options=OPTS) == "v2"


@pytest.mark.parametrize("entry", [
    b"garbage", b'12 [[["nested"]],0]\n"x"', b'12 {"a":1}\n"x"', b"12 [[],0]\n\xff\xfe",
    b'12 [["t"],null]\n"x"',
])
async def test_a_wrong_shaped_entry_is_a_miss_that_gets_replaced(
    make_node: MakeNode, client: aioredis.Redis, entry: bytes
) -> None:
    a = await make_node("a")
    await client.set("hc:e:p:1", entry)
    assert await a.get_or_create("p:1", Source("v1"), tags=["t"], options=OPTS) == "v1"
    assert (await client.get("hc:e:p:1") or b"").endswith(b'"v1"')
    assert a.connected


async def test_a_planted_star_message_does_not_turn_every_read_into_a_miss(
    make_node: MakeNode, client: aioredis.Redis
) -> None:
    a = await make_node("a")
    await a.get_or_create("p:1", Source("v1"), tags=["t"], options=OPTS)
    await client.publish("hc:backplane", orjson.dumps(
        {"v": 1, "op": "tag", "id": "*", "node": "x", "ts": time.time(), "seq": 1,
         "ver": 9_000_000_000_000_000_000}))
    await eventually(lambda: a.stats().rejected.get("message_version") == 1,
                     what="the planted version refused")
    await a.wait_connected()
    src = Source("v1")
    await a.get_or_create("p:3", src, options=OPTS)
    assert (await a.lookup("p:3", src, options=OPTS)).layer == "l1"
    assert "*" not in a.tag_versions()


async def test_garbage_on_any_channel_never_stops_the_listener(
    make_node: MakeNode, client: aioredis.Redis
) -> None:
    a, b = await make_node("a"), await make_node("b")
    for channel in ("hc:backplane", "hc:fill", "hc:acks", "hc:hb:b"):
        for junk in (b"\xff\xfe\xfd", b"not json", b"{}", b'{"to":"b","seq":[]}'):
            await client.publish(channel, junk)
    result = await a.remove_by_tag("t", ack_timeout=5)
    assert result is not None and result.acked == {"b"}
    assert b.connected and not b.stats().resyncs


async def test_junk_policy_messages_leave_no_keys_behind(
    make_node: MakeNode, client: aioredis.Redis
) -> None:
    a, _b = await make_node("a"), await make_node("b")
    for data_type in ("no-such-type", "x" * 200, "\u00e9t\u00e9"):
        await client.publish("hc:backplane", orjson.dumps(
            {"v": 1, "op": "policy", "id": data_type, "node": "op", "ts": 0, "seq": 1,
             "ack": True}))
    # acks are answered after the policy is handled: once a probe is answered
    # by both, every policy message before it was handled too.
    result = await a.remove_by_tag("t", ack_timeout=5)
    assert result is not None and result.acked == {"b"}
    assert await client.keys("hc:policy-acks:*") == []


async def test_policies_survive_redis_losing_them(
    make_node: MakeNode, client: aioredis.Redis, redis_server: RedisServer
) -> None:
    from hybridcache.policy import Policy
    policy = Policy("price", "active", 60.0, 5.0, ("product:{id}",), "acknowledged", 1.0, 3)
    a = await make_node("a")
    await client.hset("hc:policies", "price", policy.to_json())
    await client.publish("hc:backplane", orjson.dumps(
        {"v": 1, "op": "policy", "id": "price", "node": "op", "ts": 0, "seq": 1}))
    await eventually(lambda: a.policies.get("price") is not None, what="policy applied")
    assert a.stats().policy_generations == {"price": 3}
    resyncs = sum(a.stats().resyncs.values())
    redis_server.cli("FLUSHALL")
    await eventually(lambda: sum(a.stats().resyncs.values()) > resyncs, what="resync")
    assert a.policies.get("price") == policy  # kept: Redis lost it, nobody deleted it
    await client.publish("hc:backplane", orjson.dumps(
        {"v": 1, "op": "policy", "id": "price", "node": "op", "ts": 0, "seq": 2}))
    await eventually(lambda: a.policies.get("price") is None, what="explicit deletion")


async def test_redis_sigkill_and_restart_loses_nothing_invalidated(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    a, b = await make_node("a"), await make_node("b")
    src = Source("v1")
    await cached_everywhere(src, a, b)
    redis_server.kill()
    src.value = "v2"
    await a.remove_by_tag("t")  # queued for replay
    redis_server.start()
    await eventually(lambda: a.connected and b.connected and not a.stats().pending_invalidations,
                     what="both resynced, replay done")
    for node in (a, b):
        assert await node.get_or_create("p:1", src, tags=["t"], options=OPTS) == "v2"


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru"])
async def test_eviction_under_a_tiny_maxmemory(
    make_node: MakeNode, redis_server: RedisServer, policy: str
) -> None:
    redis_server.cli("CONFIG", "SET", "maxmemory-policy", policy)
    a, b = await make_node("a"), await make_node("b")
    await eventually(lambda: a.stats().unsafe_eviction == policy.startswith("allkeys"),
                     what="the eviction policy checked")
    src = Source("v1")
    await cached_everywhere(src, a, b)
    used = int(redis_server.cli("MEMORY", "STATS").split("\n")[1])
    redis_server.cli("CONFIG", "SET", "maxmemory", str(used + 256 * 1024))
    big = Source("x" * 20_000)
    for i in range(200):  # several times maxmemory: Redis must evict
        await a.get_or_create(f"big:{i}", big, tags=["big"], options=OPTS)
        if i % 20 == 0:
            src.value = f"v{i + 2}"
            result = await a.remove_by_tag("t", ack_timeout=10)
            assert result is not None
            if not result.complete:
                # Made while `a` resynchronised after an eviction of the
                # state: applied here, replayed, reaching `b` eventually.
                assert result.missing == {UNREACHABLE}
                for node in (a, b):
                    await eventually(lambda node=node: _serves_current(node, src),  # type: ignore[misc]
                                     what="the replayed invalidation")
            for node in (a, b):
                assert await node.get_or_create("p:1", src, tags=["t"],
                                                options=OPTS) == src.value
    assert int(redis_server.cli("INFO", "stats").split("evicted_keys:")[1].split()[0]) > 0


async def test_client_kill_of_the_subscription_then_an_invalidation(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    a, b = await make_node("a"), await make_node("b")
    src = Source("v1")
    await cached_everywhere(src, a, b)
    redis_server.cli("CLIENT", "KILL", "TYPE", "pubsub")
    src.value = "v2"
    result = await a.remove_by_tag("t", ack_timeout=10)
    assert result is not None and result.complete  # b confirmed, or its lease ran out
    for node in (a, b):
        assert await node.get_or_create("p:1", src, tags=["t"], options=OPTS) == "v2"


async def test_a_stale_lease_holds_a_miss_no_longer_than_the_l2_timeout(
    make_node: MakeNode, client: aioredis.Redis
) -> None:
    """A lease left by a holder that is gone (or by a Redis that was paused)
    must not hold requests for lock_lease (the ~10 s hang after SIGSTOP)."""
    clock = FakeClock()
    a = await make_node("a", monotonic=clock, lock_lease=60.0, socket_timeout=2.0)
    await client.set("hc:lease:p:9", "gone-node", px=600_000)
    task = asyncio.ensure_future(a.get_or_create("p:9", Source("v1"), options=OPTS))
    await eventually(lambda: "p" in a.stats().per_type, what="waiting on the lease")
    clock.advance(2.01)
    assert await asyncio.wait_for(task, 10) == "v1"  # the guard only stops a hang
    assert await client.pttl("hc:lease:p:9") > 0  # it did not wait the lease out


async def test_sigstop_five_seconds_then_every_request_succeeds(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    a, b = await make_node("a", socket_timeout=0.5), await make_node("b", socket_timeout=0.5)
    src = Source("v1")
    await cached_everywhere(src, a, b)
    redis_server.pause()
    try:
        await eventually(lambda: not a.connected and not b.connected,
                         what="lease ran out on both")
        assert a.inspect("p:1") is None  # flushed: deaf, so L1 is not served
        src.value = "v2"
        assert await a.get_or_create("p:1", src, tags=["t"], options=OPTS) == "v2"
    finally:
        redis_server.resume()
    src.value = "v3"
    await eventually(lambda: a.connected and b.connected, what="reconnected")
    await a.remove_by_tag("t", ack_timeout=5)
    for node in (a, b):
        assert await node.get_or_create("p:1", src, tags=["t"], options=OPTS) == "v3"


async def test_a_deaf_member_is_waited_for_until_its_lease_runs_out(
    make_node: MakeNode,
) -> None:
    a, deaf = await make_node("a"), await make_node("deaf")
    await stop_listening(deaf)  # still a member, hears nothing
    result = await a.remove_by_tag("t", ack_timeout=10)
    assert result is not None
    assert result.complete and result.expired == {"deaf"}
    assert not deaf.connected  # its lease ran out: L1 flushed, not served


class SlowSource(Source):
    """A loader that yields to the loop, so concurrent callers overlap."""

    async def __call__(self) -> object:
        self.calls += 1
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return self.value


async def test_a_deaf_replica_serves_nothing_from_l1_until_its_lease_is_back(
    make_node: MakeNode,
) -> None:
    """Strict lease: while a replica cannot prove it hears the backplane, no
    read is served from L1, not even of a value it loaded while deaf, and what
    it loaded then is not served after the lease returns."""
    clock = FakeClock()  # never advanced: no L1 entry expires during the test
    deaf = await make_node("deaf", monotonic=clock, backplane_lease=0.6)
    writer = await make_node("writer")
    src = SlowSource("v1")
    await cached_everywhere(src, deaf)
    assert deaf.inspect("p:1") is not None
    await stop_listening(deaf)
    await eventually(lambda: not deaf.connected, what="the lease to run out")
    assert deaf.inspect("p:1") is None  # flushed when the lease ran out

    calls = src.calls
    for _ in range(3):  # no L1 hit: every read loads
        assert (await deaf.lookup("p:1", src, tags=["t"], options=OPTS)).layer == "miss"
    assert src.calls == calls + 3
    assert deaf.inspect("p:1") is None  # and nothing loaded while deaf was kept
    # concurrent reads still share one load (stampede protection)
    values = await asyncio.gather(*[deaf.get_or_create("p:1", src, tags=["t"], options=OPTS)
                                    for _ in range(8)])
    assert values == ["v1"] * 8 and src.calls == calls + 4

    # Meanwhile the value changes and the writer invalidates it, unheard.
    src.value = "v2"
    await writer.remove_by_tag("t")
    resume_listening(deaf)
    await eventually(lambda: deaf.connected, what="the lease back after a resync")
    assert deaf.inspect("p:1") is None
    assert await deaf.get_or_create("p:1", src, tags=["t"], options=OPTS) == "v2"
    assert (await deaf.lookup("p:1", src, tags=["t"], options=OPTS)).layer == "l1"


async def test_a_clean_shutdown_leaves_the_membership_at_once(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    assert await a.live_nodes() == {"a", "b"}
    await b.close()
    assert await a.live_nodes() == {"a"}
    result = await a.remove_by_tag("t", ack_timeout=5)
    assert result is not None and result.complete and not result.expired
