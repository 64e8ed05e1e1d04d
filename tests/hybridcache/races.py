"""Races every Redis layout (one server, a Redis Cluster) must win.

A hot miss: many callers on several nodes ask for one missing key at once;
the source is asked once. The stale-set race: a load that began before an
invalidation finishes after it. Its caller may get the old value (it asked
concurrently with the write), but nothing may keep it: no L2 entry, no L1
copy on any node. One server and a Redis Cluster store
entries differently, so each test adds its own check of Redis in between.
"""

from __future__ import annotations

import asyncio

from hybridcache import HybridCache


async def load_overtaken_by_a_tag_invalidation(a: HybridCache, b: HybridCache) -> dict[str, str]:
    """b starts loading ``price:1`` (tag ``product:1``) from the old row; a
    changes the row and invalidates the tag; b's load then finishes. Returns
    the row (now the new price)."""
    row = {"price": "1.00"}
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_load() -> dict[str, str]:
        snapshot = dict(row)
        started.set()
        await release.wait()
        return snapshot

    loading = asyncio.create_task(b.get_or_create("price:1", slow_load, tags=["product:1"]))
    await started.wait()
    row["price"] = "2.00"
    await a.remove_by_tag("product:1", ack_timeout=5)
    release.set()
    assert (await loading)["price"] == "1.00"  # that caller was concurrent with the write
    return row


async def every_node_serves(row: dict[str, str], *nodes: HybridCache) -> None:
    """Each node's next read of ``price:1`` is the row as it is now."""

    async def fresh() -> dict[str, str]:
        return dict(row)

    for node in nodes:
        assert (await node.get_or_create("price:1", fresh, tags=["product:1"])) == row


async def load_overtaken_by_a_key_removal(a: HybridCache, b: HybridCache) -> None:
    """b starts loading ``stock:1`` ("old"); a removes the key; b's load then
    finishes."""
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_load() -> str:
        started.set()
        await release.wait()
        return "old"

    loading = asyncio.create_task(b.get_or_create("stock:1", slow_load))
    await started.wait()
    await a.remove("stock:1", ack_timeout=5)
    release.set()
    await loading


async def one_load_for_a_hot_miss(nodes: list[HybridCache], per_node: int) -> None:
    """``per_node`` concurrent callers on each node miss ``hot:1``: the slow
    source is asked once, everyone gets its value."""
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)  # the source is slow; others must wait, not load
        return "hot"

    results = await asyncio.gather(*(n.get_or_create("hot:1", slow) for n in nodes
                                     for _ in range(per_node)))
    assert results == ["hot"] * (per_node * len(nodes))
    assert calls == 1
