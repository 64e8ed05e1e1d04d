"""L1: the in-process store, bounded by entry count and by bytes.

Eviction is second-chance (CLOCK) over insertion order: a hit only sets a flag
on the entry, so the hot read path never reorders anything or takes a lock;
the evictor gives each referenced entry one more lap before dropping it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

# Rough fixed cost of one entry beyond its payload: the Entry object, its dict
# slot and the key string. Measured by bench/bench_memory.py.
ENTRY_OVERHEAD_BYTES = 200
NEVER = float("inf")


class TypeStats:
    """Plain-int counters for one data type; incremented without locks on the
    event loop thread and read by the Prometheus collector at scrape time."""

    __slots__ = ("factory", "l1_hit", "l1_miss", "l2_hit", "l2_miss")

    def __init__(self) -> None:
        self.l1_hit = 0
        self.l1_miss = 0
        self.l2_hit = 0
        self.l2_miss = 0
        self.factory = 0


class Entry:
    """One cached value and what is needed to decide whether it may be served.

    ``version`` is the cluster version read before the value was loaded from
    the source; the entry is stale once any of its tags (or ``*``) has an
    invalidation version above it. ``checked`` is the local invalidation serial
    at which that was last verified, so a hit re-checks tags only after some
    invalidation has arrived.
    """

    __slots__ = (
        "checked",
        "copy",
        "expires",
        "payload",
        "referenced",
        "refresh_at",
        "size",
        "stale_until",
        "stats",
        "tags",
        "value",
        "version",
    )

    def __init__(
        self,
        value: Any,
        payload: bytes | None,
        payload_size: int,
        version: int,
        tags: tuple[str, ...],
        expires: float,
        stale_until: float,
        stats: TypeStats,
        copy: bool,
        checked: int,
    ) -> None:
        self.value = value
        self.payload = payload
        self.version = version
        self.tags = tags
        self.expires = expires
        self.stale_until = stale_until
        self.refresh_at = NEVER  # eager refresh: set by the cache when asked for
        self.stats = stats
        self.copy = copy
        self.checked = checked
        self.referenced = False
        # The serialized size stands for the value's footprint; ``payload``
        # itself is kept only for copy-on-read entries.
        self.size = ENTRY_OVERHEAD_BYTES + payload_size


class LocalStore:
    __slots__ = ("bytes", "entries", "evictions", "max_bytes", "max_entries")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, key: str, entry: Entry) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        self.entries[key] = entry
        self.bytes += entry.size
        if len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            self._evict()

    def pop(self, key: str) -> Entry | None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size
        return entry

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    def _evict(self) -> None:
        entries = self.entries
        # Every referenced entry gets one second chance, so this ends within
        # two laps; the newest entry is never evicted by its own insertion.
        while len(entries) > 1 and (len(entries) > self.max_entries or self.bytes > self.max_bytes):
            key, entry = entries.popitem(last=False)
            if entry.referenced:
                entry.referenced = False
                entries[key] = entry
                continue
            self.bytes -= entry.size
            self.evictions += 1
