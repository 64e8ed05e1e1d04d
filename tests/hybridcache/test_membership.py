"""Membership through heartbeats: a heartbeat returns the members only when
the set changed (so a fleet's heartbeats cost O(N), not O(N^2)), and an
acknowledged write still waits for exactly the nodes that are members now."""

from __future__ import annotations

import redis.asyncio as aioredis
from hybridcache.testing import stop_listening

from tests.hybridcache.conftest import MakeNode
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually


async def test_a_heartbeat_returns_the_members_only_when_they_changed(
    make_node: MakeNode,
) -> None:
    a, _b = await make_node("a"), await make_node("b")
    l2 = a._l2
    first = await l2.heartbeat(beat=False, seen=b"")
    assert first.members is not None and set(first.members) == {"a", "b"}
    # Both keep heartbeating meanwhile: the set is the same, nothing is sent.
    same = await l2.heartbeat(beat=False, seen=first.seen)
    assert same.members is None and same.seen == first.seen

    c = await make_node("c")
    joined = await l2.heartbeat(beat=False, seen=first.seen)
    assert joined.members is not None and set(joined.members) == {"a", "b", "c"}

    await c.close()  # a clean leave is counted too
    left = await l2.heartbeat(beat=False, seen=joined.seen)
    assert left.members is not None and set(left.members) == {"a", "b"}

    # Whoever passes no `seen` (an acknowledged write) always gets them.
    assert (await l2.heartbeat(beat=False)).members is not None


async def test_a_member_leaving_the_window_changes_the_membership(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    a = await make_node("a")
    l2 = a._l2
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        now = (await l2.heartbeat(beat=False)).time
        # A member whose last heartbeat leaves the window in half a second.
        await raw.zadd(a.keys.nodes, {"ghost": now - l2.membership_window() + 0.5})
        await l2.heartbeat(token=-1)  # a beat: the oldest member is now the ghost
        seen = await l2.heartbeat(beat=False, seen=b"")
        assert seen.members is not None and "ghost" in seen.members

        async def gone() -> bool:
            hb = await l2.heartbeat(beat=False, seen=seen.seen)
            return hb.members is not None and set(hb.members) == {"a"}

        await eventually(gone, what="the ghost to leave the window")
    finally:
        await raw.aclose()


async def test_a_member_an_older_release_adds_or_removes_changes_the_membership(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    """Replicas of the previous release heartbeat with a script that does not
    count changes: the member count still shows them joining and leaving."""
    a = await make_node("a")
    l2 = a._l2
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        first = await l2.heartbeat(beat=False, seen=b"")
        await raw.zadd(a.keys.nodes, {"old-release": first.time})  # its heartbeat
        joined = await l2.heartbeat(beat=False, seen=first.seen)
        assert joined.members is not None and set(joined.members) == {"a", "old-release"}
        await raw.zrem(a.keys.nodes, "old-release")  # its clean leave
        left = await l2.heartbeat(beat=False, seen=joined.seen)
        assert left.members is not None and set(left.members) == {"a"}
    finally:
        await raw.aclose()


async def test_acknowledged_writes_wait_for_a_node_that_joined_and_not_one_that_left(
    make_node: MakeNode,
) -> None:
    a, b = await make_node("a"), await make_node("b")
    first = await a.remove_by_tag("t", ack_timeout=5)
    assert first is not None and first.complete and first.acked == {"b"}

    c = await make_node("c")
    await c.wait_connected(5)
    joined = await a.remove_by_tag("t", ack_timeout=5)
    assert joined is not None and joined.complete and joined.acked == {"b", "c"}

    await b.close()
    left = await a.remove_by_tag("t", ack_timeout=5)
    assert left is not None and left.complete and left.acked == {"c"}
    assert not left.expired and not left.missing
    assert await a.live_nodes() == {"a", "c"}


async def test_after_redis_lost_the_members_a_forgotten_one_is_waited_for_by_name(
    make_node: MakeNode, redis_server: RedisServer
) -> None:
    """The members a node saw before Redis lost its state are waited for by
    name (names only: heartbeats no longer bring every member's time), until
    the new epoch's first lease has run out."""
    a, gone = await make_node("a"), await make_node("gone")
    await eventually(lambda: "gone" in a._node._members, what="a to see gone as a member")
    await gone._maintenance.stop()  # no more heartbeats: Redis will not relearn it
    await stop_listening(gone)
    redis_server.cli("FLUSHALL")  # the state, and the membership with it, lost
    await eventually(lambda: a._node._old_members is not None, what="a to see the new epoch")
    assert a._node._old_members is not None and "gone" in a._node._old_members
    await a.wait_connected(10)
    result = await a.remove_by_tag("t", ack_timeout=10)
    assert result is not None and result.complete
    assert result.expired == {"gone"} and not result.acked
