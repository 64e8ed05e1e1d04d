"""The relay publishes invalidations without waiting for confirmations: a
change it relays while a member is silent reaches the live replicas, and the
relay is free for the next change at once (an acknowledged wait would hold it
until the silent member's lease ran out, past the 1 s ``maxStaleness``).

Real hybridcache replicas on a private redis-server; the catalog's own
``CachedCatalog.invalidate`` (the one the API and the relay share)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from catalog.cached import CachedCatalog
from catalog.config import Settings
from catalog.db import Database
from catalog.outbox import Change
from catalog.relay import invalidate_change
from hybridcache import CacheOptions, EntryOptions, HybridCache
from hybridcache.policy import Policy
from hybridcache.testing import stop_listening

from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

ACKNOWLEDGED_PRICE = Policy.from_spec({
    "dataType": "price", "strategy": "active", "tags": ["product:{id}"],
    "consistency": "acknowledged", "maxStaleness": "1s"})
# The writer takes a silent member's lease to be this long: an acknowledged
# wait for it would outlast the test's guard many times over.
SILENT_LEASE = 120.0


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[list[HybridCache]]:
    made = []
    for name, lease in (("relay", SILENT_LEASE), ("reader", 2.0), ("silent", 2.0)):
        cache = HybridCache(CacheOptions(
            redis_url=redis_server.url, key_prefix="rp:", node_id=name,
            heartbeat_interval=0.2, heartbeat_timeout=1.0, backplane_lease=lease))
        await cache.start()
        await cache.wait_connected(10)
        cache.policies.apply("price", ACKNOWLEDGED_PRICE.to_json())
        made.append(cache)
    yield made
    for cache in made:
        await cache.close()


async def test_relayed_change_is_published_without_waiting_for_a_silent_member(
        replicas: list[HybridCache], tmp_path: Path) -> None:
    relay, reader, silent = replicas
    assert relay.policies.get("price") == ACKNOWLEDGED_PRICE
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        return f"v{calls}"

    options = EntryOptions(expiration=600, local_expiration=600)
    assert await reader.get_or_create("price:7", load, tags=["product:7"],
                                      options=options) == "v1"
    await stop_listening(silent)  # still a member (it heartbeats), hears nothing
    assert "silent" in await relay.live_nodes()

    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")  # never queried
    catalog = CachedCatalog(relay, database, Settings(ack_timeout=SILENT_LEASE))
    try:
        change = Change(1, "price", "update", {"product_id": 7}, {"product_id": 7}, 0.0)
        # A guard, not a measurement: an acknowledged wait would last
        # SILENT_LEASE; publishing alone returns in milliseconds.
        await asyncio.wait_for(invalidate_change(catalog, change), 30)
    finally:
        await database.dispose()
    await eventually(lambda: reader.inspect("price:7") is None
                     or not reader.inspect("price:7").fresh,  # type: ignore[union-attr]
                     what="the reader to drop the old price")
    assert await reader.get_or_create("price:7", load, tags=["product:7"],
                                      options=options) == "v2"
