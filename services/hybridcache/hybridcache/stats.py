"""Counters a cache keeps, and the typed snapshot ``HybridCache.stats()`` returns.

The hot path only bumps plain integers on objects it already holds; the
Prometheus collector (metrics.py) and the stats published for the operator
(maintenance.py) read a snapshot instead of the cache's internals.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

LAG_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class TypeStats:
    """Plain-int counters for one data type; incremented without locks on the
    event loop thread."""

    __slots__ = ("factory", "invalidated", "l1_hit", "l1_miss", "l2_hit", "l2_miss")

    def __init__(self) -> None:
        self.l1_hit = 0
        self.l1_miss = 0
        self.l2_hit = 0
        self.l2_miss = 0
        self.factory = 0
        self.invalidated = 0  # L1 entries a read found invalidated by a tag

    def snapshot(self) -> TypeCounts:
        return TypeCounts(self.l1_hit, self.l1_miss, self.l2_hit, self.l2_miss, self.factory,
                          self.invalidated)


class Histogram:
    """Lock-free cumulative histogram (updated on the event loop only)."""

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...] = LAG_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


class CacheCounters:
    """Counters that are not per data type."""

    __slots__ = (
        "coalesced",
        "invalidations",
        "l2_errors",
        "lag",
        "payload_too_large",
        "rejected",
        "resyncs",
        "skew",
        "unsafe_eviction",
    )

    def __init__(self) -> None:
        self.coalesced = 0
        self.l2_errors = 0
        self.payload_too_large = 0
        self.invalidations: Counter[tuple[str, str]] = Counter()  # (op, origin)
        self.resyncs: Counter[str] = Counter()  # reason
        self.rejected: Counter[str] = Counter()  # reason: planted or corrupt data refused
        self.lag = Histogram()
        self.skew = 0.0  # this node's wall clock minus Redis's, measured at heartbeats
        self.unsafe_eviction = False  # Redis may evict invalidation state (allkeys-*)


@dataclass(frozen=True, slots=True)
class TypeCounts:
    """Lookups of one data type, by layer and result."""

    l1_hit: int
    l1_miss: int
    l2_hit: int
    l2_miss: int
    factory: int
    invalidated: int = 0


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A point-in-time copy of one cache's counters and gauges.

    ``lag_counts`` are per-bucket (not cumulative) counts for ``LAG_BUCKETS``
    plus one overflow bucket; lag is measured from Redis's time at publication
    to this node's time at receipt corrected by ``clock_skew``.
    ``pending_invalidations`` are invalidations made while Redis was
    unreachable, waiting to be replayed.
    """

    per_type: Mapping[str, TypeCounts]
    coalesced: int
    l2_errors: int
    payload_too_large: int
    invalidations: Mapping[tuple[str, str], int]  # (op, origin) -> count
    resyncs: Mapping[str, int]  # reason -> count
    lag_counts: tuple[int, ...]
    lag_sum: float
    lag_count: int
    connected: bool
    rejected: Mapping[str, int]  # reason -> values refused (planted, corrupt)
    clock_skew: float  # seconds this node's wall clock is ahead of Redis's
    unsafe_eviction: bool  # Redis's maxmemory-policy may evict invalidation state
    policy_generations: Mapping[str, int]  # data type -> generation in force here
    l1_entries: int
    l1_bytes: int
    l1_evictions: int
    pending_invalidations: int


def snapshot(
    type_stats: Mapping[str, TypeStats],
    counters: CacheCounters,
    *,
    connected: bool,
    policy_generations: Mapping[str, int],
    l1_entries: int,
    l1_bytes: int,
    l1_evictions: int,
    pending_invalidations: int,
) -> CacheStats:
    lag = counters.lag
    return CacheStats(
        per_type={data_type: s.snapshot() for data_type, s in list(type_stats.items())},
        coalesced=counters.coalesced,
        l2_errors=counters.l2_errors,
        payload_too_large=counters.payload_too_large,
        invalidations=dict(counters.invalidations),
        resyncs=dict(counters.resyncs),
        lag_counts=tuple(lag.counts),
        lag_sum=lag.sum,
        lag_count=lag.count,
        connected=connected,
        rejected=dict(counters.rejected),
        clock_skew=counters.skew,
        unsafe_eviction=counters.unsafe_eviction,
        policy_generations=dict(policy_generations),
        l1_entries=l1_entries,
        l1_bytes=l1_bytes,
        l1_evictions=l1_evictions,
        pending_invalidations=pending_invalidations,
    )
