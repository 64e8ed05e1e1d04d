"""Periodic upkeep of one connected replica: its heartbeat (how others know
it is alive, for acks and for the operator), its per-type counters published
for the operator, and the pruning of tag records older than the record TTL,
in Redis and in the local tag table."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from .options import CacheOptions
from .redis_layer import RedisLayer
from .stats import CacheStats
from .versions import Versions

PRUNE_INTERVAL = 60.0


class Maintenance:
    def __init__(self, options: CacheOptions, l2: RedisLayer, versions: Versions,
                 stats: Callable[[], CacheStats], heartbeat: Callable[[], Awaitable[None]],
                 retention: Callable[[], float]) -> None:
        self.options = options
        self.l2 = l2
        self.versions = versions
        self.stats = stats
        self.heartbeat = heartbeat
        self.retention = retention  # how long L1 keeps an entry at most
        self.closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hybridcache-maintenance")

    async def stop(self) -> None:
        self.closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        last_stats = last_prune = 0.0
        # Not `while True`: redis-py can turn a cancellation that lands inside
        # a command into a ConnectionError, which this loop would survive.
        while not self.closing:
            await asyncio.sleep(self.options.heartbeat_interval)
            if not self.l2.up:
                continue
            # Real time, not CacheOptions.monotonic: these intervals pace real
            # network traffic, whatever clock the entries' lifetimes follow.
            now = time.monotonic()
            with self.l2.guard():
                await self.heartbeat()
                if now - last_stats >= self.options.stats_interval:
                    last_stats = now
                    await self.publish_stats()
                if now - last_prune >= PRUNE_INTERVAL:
                    last_prune = now
                    await self.l2.prune()
                    await self.refresh_tag_table()

    async def publish_stats(self) -> None:
        fields: dict[str, int] = {}
        for data_type, s in self.stats().per_type.items():
            fields[f"l1_hit:{data_type}"] = s.l1_hit
            fields[f"l1_miss:{data_type}"] = s.l1_miss
            fields[f"l2_hit:{data_type}"] = s.l2_hit
            fields[f"l2_miss:{data_type}"] = s.l2_miss
            fields[f"factory:{data_type}"] = s.factory
        if fields:
            await self.l2.publish_stats(fields, max(1, int(3 * self.options.stats_interval)))

    async def refresh_tag_table(self) -> None:
        """Bound the local tag table by Redis's (which forgets invalidations
        older than ``invalidation_record_ttl``), and repair any divergence.
        A record Redis lost is kept here while an L1 entry may depend on it
        (``Versions.merge_pruned``); a lost state (new epoch) is a gap."""
        epoch, clock, table = await self.l2.snapshot()
        if epoch != self.l2.epoch:
            return  # the snapshot reported it: the node resynchronises
        self.versions.merge_pruned(table, clock, self.options.monotonic(), self.retention())
