"""What the handlers share, kept in kopf's ``memo``: the configuration, the
Redis client, the policy publisher, the fleet monitor, the epoch watcher, the
workload reader, the metrics, one lock per policy and the policies this
operator has published (so it can publish them again when Redis forgets).

It is started before kopf and stopped after it, so its background round never
outlives or blocks kopf's own shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from hybridcache.keys import Keys
from hybridcache.policy import Policy
from hybridcache.redis_clients import AnyRedis, redis_client
from hybridcache.redis_url import parse_redis_url

from .config import Config
from .epoch import EpochWatcher
from .fleet import FleetMonitor, in_sync
from .metrics import Metrics
from .publisher import PolicyPublisher
from .reconciler import Health, Republish, republish
from .workload import WorkloadError, WorkloadReader, workload_of


class Runtime:
    def __init__(self, config: Config, metrics: Metrics | None = None, *,
                 workloads: WorkloadReader | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.keys = Keys(config.key_prefix,
                         cluster=parse_redis_url(config.redis_url).mode == "cluster")
        self.workloads = workloads
        self.redis: AnyRedis | None = None
        self._publisher: PolicyPublisher | None = None
        self._monitor: FleetMonitor | None = None
        self._watcher: EpochWatcher | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        # policy ref -> the policy this operator published for it (reconcile
        # or the timer); what a new Redis epoch makes it publish again
        self._owned: dict[str, Policy] = {}

    @property
    def publisher(self) -> PolicyPublisher:
        assert self._publisher is not None, "Runtime.start() first"
        return self._publisher

    @property
    def monitor(self) -> FleetMonitor:
        assert self._monitor is not None, "Runtime.start() first"
        return self._monitor

    def lock(self, ref: str) -> asyncio.Lock:
        return self._locks.setdefault(ref, asyncio.Lock())

    def own(self, ref: str, policy: Policy) -> None:
        """``ref`` governs ``policy`` and it was published (call under its lock)."""
        self._owned[ref] = policy

    def disown(self, ref: str) -> None:
        """``ref`` no longer governs a published policy (deleted, or a duplicate)."""
        self._owned.pop(ref, None)

    async def republish_owned(self, reason: str) -> int:
        """Publish again every owned policy Redis does not hold as published
        (lost, or overwritten by another source); a newer generation of the
        same resource is left alone. Returns how many were published; each
        counts in ``cache_operator_republish_total{reason}``."""
        count = 0
        for ref in sorted(self._owned):
            async with self.lock(ref):
                policy = self._owned.get(ref)
                if policy is None:
                    continue  # deleted meanwhile
                stored = await self.publisher.stored(policy.data_type)
                if republish(stored, policy, policy.generation) is not Republish.PUBLISH:
                    continue
                await self.publisher.publish(policy)
                self.metrics.republished.labels(reason).inc()
                count += 1
        return count

    async def _on_new_epoch(self, previous: bytes | None, epoch: bytes | None) -> None:
        await self.republish_owned("epoch")

    async def start(self) -> None:
        self.redis = redis_client(
            self.config.redis_url, socket_timeout=5, socket_connect_timeout=5,
            health_check_interval=30)
        self._publisher = PolicyPublisher(self.redis, self.keys)
        self._monitor = FleetMonitor(self.redis, self.keys, self.config, self._publisher,
                                     self.metrics)
        self._monitor.start()
        self._watcher = EpochWatcher(self.redis, self.keys, self._on_new_epoch,
                                     interval=self.config.epoch_poll_interval)
        self._watcher.start()

    async def stop(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()
        if self._monitor is not None:
            await self._monitor.stop()
        if self.redis is not None:
            await self.redis.aclose()
        if self.workloads is not None:
            self.workloads.close()

    async def health(self, policy: Policy, namespace: str | None,
                     annotations: Mapping[str, Any] | None = None, *,
                     wait: float = 0.0) -> Health:
        """Replica counts for one policy; with ``wait``, poll up to that long for
        every live replica to acknowledge the policy's generation."""
        deadline = time.monotonic() + wait
        while True:
            live = await self.monitor.live_replicas()
            acks = await self.publisher.acks(policy.data_type)
            synced = in_sync(live, acks, policy.generation)
            if synced >= len(live) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        try:
            ref = workload_of(self.config.catalog_workload, annotations)
        except ValueError as exc:
            return Health(len(live), synced, workload_error=f"annotation: {exc}")
        if ref is None or self.workloads is None or namespace is None:
            return Health(len(live), synced)
        try:
            workload = await self.workloads.read(namespace, ref)
        except WorkloadError as exc:
            return Health(len(live), synced, workload_error=str(exc))
        return Health(len(live), synced, workload)
