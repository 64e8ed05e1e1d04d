"""Prometheus metrics for every cache in the process, collected at scrape time.

The hot path only bumps plain integers on objects it already holds (see
stats.py); at scrape time this collector reads each cache's public
``stats()`` snapshot and turns it into the documented metric families.
prometheus_client's own Counter takes a lock and a label lookup per
increment, which would cost more than an L1 hit itself.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .stats import LAG_BUCKETS, CacheStats


class HasStats(Protocol):
    """What the collector needs of a cache: its public snapshot."""

    def stats(self) -> CacheStats: ...


class _Collector(Collector):
    def __init__(self) -> None:
        self.caches: weakref.WeakSet[HasStats] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        caches = list(self.caches)
        requests = CounterMetricFamily(
            "hybridcache_requests", "Cache lookups by layer and result",
            labels=["layer", "result", "data_type"])
        factory = CounterMetricFamily(
            "hybridcache_factory_calls", "Factory (source of truth) calls",
            labels=["data_type"])
        coalesced = CounterMetricFamily(
            "hybridcache_stampede_coalesced",
            "Callers that joined an in-flight load instead of starting one")
        invalidations = CounterMetricFamily(
            "hybridcache_invalidations", "Invalidations applied", labels=["op", "origin"])
        l2_errors = CounterMetricFamily("hybridcache_l2_errors", "Failed Redis operations")
        too_large = CounterMetricFamily(
            "hybridcache_payload_too_large", "Values not written to L2 for exceeding the maximum")
        resyncs = CounterMetricFamily(
            "hybridcache_backplane_resyncs",
            "Backplane gaps after which L1 was flushed and tags reloaded", labels=["reason"])
        connected = GaugeMetricFamily(
            "hybridcache_backplane_connected", "1 while the backplane subscription is live")
        entries = GaugeMetricFamily("hybridcache_l1_entries", "Entries in L1")
        nbytes = GaugeMetricFamily("hybridcache_l1_bytes", "Approximate bytes held by L1")
        evictions = CounterMetricFamily(
            "hybridcache_l1_evictions", "Entries L1 dropped to stay within its bounds")
        invalidated = CounterMetricFamily(
            "hybridcache_l1_invalidated_entries",
            "L1 entries found invalidated by a tag when next read (each counted once; an"
            " invalidated entry never read again is not counted)", labels=["data_type"])
        rejected = CounterMetricFamily(
            "hybridcache_rejected",
            "Values refused as planted or corrupt (entries, messages, state records)",
            labels=["reason"])
        skew = GaugeMetricFamily(
            "hybridcache_clock_skew_seconds",
            "This node's wall clock minus Redis's, measured at each heartbeat",
            labels=["node"])
        unsafe = GaugeMetricFamily(
            "hybridcache_redis_unsafe_eviction",
            "1 if Redis's maxmemory-policy is allkeys-* (it may evict invalidation state)")
        generations = GaugeMetricFamily(
            "hybridcache_policy_generation",
            "Generation of the published policy in force, per data type (one series per"
            " cache in the process)", labels=["data_type", "node"])

        per_type: Counter[tuple[str, str, str]] = Counter()
        factories: Counter[str] = Counter()
        dropped: Counter[str] = Counter()
        inv: Counter[tuple[str, str]] = Counter()
        rs: Counter[str] = Counter()
        rj: Counter[str] = Counter()
        unsafe_any = 0
        buckets = [0] * (len(LAG_BUCKETS) + 1)
        lag_sum = 0.0
        totals = {"coalesced": 0, "l2_errors": 0, "too_large": 0, "connected": 0,
                  "entries": 0, "bytes": 0, "evictions": 0}
        for cache in caches:
            st = cache.stats()
            for data_type, s in st.per_type.items():
                per_type["l1", "hit", data_type] += s.l1_hit
                per_type["l1", "miss", data_type] += s.l1_miss
                per_type["l2", "hit", data_type] += s.l2_hit
                per_type["l2", "miss", data_type] += s.l2_miss
                factories[data_type] += s.factory
                dropped[data_type] += s.invalidated
            totals["coalesced"] += st.coalesced
            totals["l2_errors"] += st.l2_errors
            totals["too_large"] += st.payload_too_large
            totals["connected"] += int(st.connected)
            totals["entries"] += st.l1_entries
            totals["bytes"] += st.l1_bytes
            totals["evictions"] += st.l1_evictions
            inv.update(st.invalidations)
            rs.update(st.resyncs)
            rj.update(st.rejected)
            unsafe_any |= int(st.unsafe_eviction)
            node = getattr(cache, "node_id", "")
            skew.add_metric([node], st.clock_skew)
            for data_type, generation in sorted(st.policy_generations.items()):
                generations.add_metric([data_type, node], generation)
            for i, n in enumerate(st.lag_counts):
                buckets[i] += n
            lag_sum += st.lag_sum
        for labels, value in sorted(per_type.items()):
            requests.add_metric(list(labels), value)
        for data_type, value in sorted(factories.items()):
            factory.add_metric([data_type], value)
        for data_type, value in sorted(dropped.items()):
            invalidated.add_metric([data_type], value)
        for labels2, value in sorted(inv.items()):
            invalidations.add_metric(list(labels2), value)
        for reason, value in sorted(rs.items()):
            resyncs.add_metric([reason], value)
        for reason, value in sorted(rj.items()):
            rejected.add_metric([reason], value)
        unsafe.add_metric([], unsafe_any)
        coalesced.add_metric([], totals["coalesced"])
        l2_errors.add_metric([], totals["l2_errors"])
        too_large.add_metric([], totals["too_large"])
        connected.add_metric([], totals["connected"])
        entries.add_metric([], totals["entries"])
        nbytes.add_metric([], totals["bytes"])
        evictions.add_metric([], totals["evictions"])
        cumulative, running = [], 0
        for bound, n in zip([*LAG_BUCKETS, float("inf")], buckets, strict=True):
            running += n
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        lag = HistogramMetricFamily(
            "hybridcache_backplane_lag_seconds",
            "Receive time minus send time of backplane messages from other nodes",
            buckets=cumulative, sum_value=lag_sum)
        yield from (requests, factory, coalesced, invalidations, l2_errors, too_large,
                    resyncs, connected, entries, nbytes, evictions, invalidated, lag, rejected,
                    skew, unsafe, generations)


_collector: _Collector | None = None
_lock = threading.Lock()


def register(cache: HasStats) -> None:
    """Make ``cache`` visible on prometheus_client's default registry."""
    global _collector
    with _lock:
        if _collector is None:
            _collector = _Collector()
            REGISTRY.register(_collector)
        _collector.caches.add(cache)
