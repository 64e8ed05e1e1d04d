"""L1: the in-process store, bounded by entry count and by bytes, and the
rules for when one of its entries may be served (lifetime, tag versions,
fail-safe fallback, eager refresh).

Eviction is second-chance (CLOCK) over insertion order: a hit only sets a flag
on the entry, so the hot read path never reorders anything or takes a lock;
the evictor gives each referenced entry one more lap before dropping it. The
clock is a deque of keys beside a plain dict (an OrderedDict costs about 50
bytes more per entry): a key enters it when it enters the store, a removed
key is skipped when the hand reaches it, and the deque is rebuilt from the
dict once such leftovers outnumber the entries.

An entry is kept small (bench/bench_memory.py compares it with cachetools):
eleven slots and nothing allocated per entry that can be shared or left out:
its size is counted in 16-byte units (a small int, which Python does not
allocate, for values up to 4 KiB), a single tag is kept as the string itself
rather than a one-element tuple, and whether reads get a copy is said by
``payload`` alone.
"""

from __future__ import annotations

import copy as copy_module
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .options import EntryOptions
from .serializers import Serializer
from .stats import TypeStats
from .versions import Versions

# Rough fixed cost of one entry beyond its payload: the Entry object, its dict
# slot and the key string. Measured by bench/bench_memory.py.
ENTRY_OVERHEAD_BYTES = 200
NEVER = float("inf")
# Entry.size unit (bytes): sizes up to 4 KiB are small ints, shared by CPython.
SIZE_UNIT = 16
# Entry.payload of a copy-on-read value that could not be serialized: reads
# get a deep copy instead of a decoded one (an empty payload would also be
# served as a copy, which is what it stands for).
DEEP_COPY = b""


def _packed(tags: tuple[str, ...]) -> str | tuple[str, ...]:
    """One tag as the string itself (a one-element tuple costs 48 bytes)."""
    return tags[0] if len(tags) == 1 else tags


def unpacked(tags: str | tuple[str, ...]) -> tuple[str, ...]:
    return (tags,) if tags.__class__ is str else tags  # type: ignore[return-value]


class Entry:
    """One cached value and what is needed to decide whether it may be served.

    ``version`` is the cluster version read before the value was loaded from
    the source; the entry is stale once any of its tags (or ``*``) has an
    invalidation version above it. ``checked`` is the local invalidation serial
    at which that was last verified, so a hit re-checks tags only after some
    invalidation has arrived. ``payload`` is None when reads share ``value``;
    for copy-on-read entries it is the serialized value (decoded per read), or
    ``DEEP_COPY``. ``tags`` is one tag or a tuple (``unpacked`` gives the tuple);
    ``size`` is in ``SIZE_UNIT`` bytes.
    """

    __slots__ = (
        "checked",
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
        checked: int,
    ) -> None:
        self.value = value
        self.payload = payload
        self.version = version
        self.tags = _packed(tags)
        self.expires = expires
        self.stale_until = stale_until
        self.refresh_at = NEVER  # eager refresh: set by the cache when asked for
        self.stats = stats
        self.checked = checked
        self.referenced = False
        # The serialized size stands for the value's footprint; ``payload``
        # itself is kept only for copy-on-read entries.
        self.size = -(-(ENTRY_OVERHEAD_BYTES + payload_size) // SIZE_UNIT)


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """What L1 holds for one key (``HybridCache.inspect``): the version it
    was loaded at, its tags, seconds until it expires (negative: expired,
    kept for fail-safe), whether no invalidation has touched it since, and
    so whether a read would be served from it."""

    version: int
    tags: tuple[str, ...]
    expires_in: float
    fresh: bool
    servable: bool


class LocalStore:
    """The entries, their byte and count bounds, and their freshness rules.

    Times come from the cache's monotonic clock (``CacheOptions.monotonic``);
    ``hit`` takes the time from its caller, which has usually read it already.
    ``deaf`` is set while the replica cannot prove it hears every invalidation
    (its backplane lease ran out, or it has not resynchronised yet): L1 was
    flushed when it became deaf and nothing enters it until the node clears
    the flag, so the hit path needs no check of its own (the node sets and
    clears it)."""

    __slots__ = ("bytes", "clock", "deaf", "entries", "evictions", "max_bytes",
                 "max_entries", "retention", "ring", "serializer", "versions")

    def __init__(self, max_entries: int, max_bytes: int, versions: Versions,
                 serializer: Serializer, clock: Callable[[], float]) -> None:
        self.entries: dict[str, Entry] = {}
        # The clock's order: every key of ``entries``, plus keys removed since
        # (skipped by the hand, dropped when the deque is rebuilt).
        self.ring: deque[str] = deque()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self.versions = versions
        self.serializer = serializer
        self.clock = clock
        self.deaf = False
        # The longest any entry was kept for (until its fail-safe end): a
        # local tag record younger than this may still void an entry.
        self.retention = 0.0

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, key: str, entry: Entry) -> None:
        if self.deaf:
            return  # loaded while deaf: it may already be invalidated
        entries = self.entries
        old = entries.get(key)
        if old is not None:  # a replacement keeps the key's place on the clock
            self.bytes -= old.size * SIZE_UNIT
        else:
            ring = self.ring
            ring.append(key)
            if len(ring) > 2 * len(entries) + 64:
                self.ring = deque(entries)
                self.ring.append(key)
        entries[key] = entry
        self.bytes += entry.size * SIZE_UNIT
        if len(entries) > self.max_entries or self.bytes > self.max_bytes:
            self._evict()

    def pop(self, key: str) -> Entry | None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size * SIZE_UNIT
        return entry

    def clear(self) -> None:
        self.entries.clear()
        self.ring.clear()
        self.bytes = 0

    # ------------------------------------------------------------- freshness

    def hit(self, key: str, now: float, options: EntryOptions | None) -> Entry | None:
        """The entry for ``key`` if it may be served (counted as a hit).
        HybridCache.get_or_create inlines this test: keep the two alike."""
        entry = self.entries.get(key)
        if (
            entry is not None
            and entry.expires > now
            and (entry.checked == self.versions.serial or self.still_valid(entry))
            and (options is None or not options.skip_l1_read)
        ):
            entry.referenced = True
            entry.stats.l1_hit += 1
            return entry
        return None

    def info(self, key: str) -> EntryInfo | None:
        """Describe ``key``'s entry without counting a hit or marking it used."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        expires_in = entry.expires - self.clock()
        tags = unpacked(entry.tags)
        fresh = self.versions.fresh(entry.version, tags)
        return EntryInfo(entry.version, tags, expires_in, fresh, fresh and expires_in > 0)

    def still_valid(self, entry: Entry) -> bool:
        """Re-check an entry's tags after some invalidation arrived.

        An entry found invalidated is counted once (``TypeStats.invalidated``,
        the ``hybridcache_l1_invalidated_entries`` metric) and marked expired:
        tag invalidation is O(1) and never visits entries, so this read is the
        cheapest honest place to learn how many entries a write really cost."""
        versions = self.versions
        if not versions.fresh(entry.version, unpacked(entry.tags)):
            entry.stats.invalidated += 1
            entry.expires = -NEVER  # never servable again (versions only grow)
            return False
        entry.checked = versions.serial
        return True

    def value_of(self, entry: Entry) -> Any:
        """The value to hand out: the shared object, or a fresh copy for
        copy-on-read entries."""
        payload = entry.payload
        if payload is None:
            return entry.value
        if payload is DEEP_COPY:
            return copy_module.deepcopy(entry.value)
        return self.serializer.loads(payload)

    def fallback(self, key: str) -> Entry | None:
        """The expired entry that fail-safe keeps until ``stale_until``:
        never one that was invalidated (an invalidation means it is wrong)."""
        entry = self.entries.get(key)
        if (entry is None or entry.stale_until <= self.clock()
                or not self.versions.fresh(entry.version, unpacked(entry.tags))):
            return None
        return entry

    def keep(self, key: str, value: Any, payload: bytes | None, version: int,
             tags: tuple[str, ...], opts: EntryOptions, stats: TypeStats) -> None:
        """Keep a value loaded (or written) at ``version``."""
        now = self.clock()
        lifetime = opts.l1_expiration
        if opts.jitter:
            lifetime += random.uniform(0, opts.jitter)
        expires = now + lifetime
        stale_until = expires + opts.fail_safe_max_duration if opts.fail_safe else expires
        if stale_until - now > self.retention:
            self.retention = stale_until - now
        kept = (payload if payload is not None else DEEP_COPY) if opts.copy_on_read else None
        entry = Entry(value, kept, len(payload) if payload is not None else 0, version, tags,
                      expires, stale_until, stats, self.versions.serial)
        if opts.eager_refresh is not None:
            entry.refresh_at = now + lifetime * opts.eager_refresh
        self.put(key, entry)

    def keep_expired(self, key: str, value: Any, size: int, version: int,
                     tags: tuple[str, ...], opts: EntryOptions, stats: TypeStats) -> None:
        """Keep a value that is already expired, only as a fail-safe fallback."""
        now = self.clock()
        if opts.fail_safe_max_duration > self.retention:
            self.retention = opts.fail_safe_max_duration
        self.put(key, Entry(value, None, size, version, tags, now,
                            now + opts.fail_safe_max_duration, stats, self.versions.serial))

    def serve_fallback(self, key: str, entry: Entry, opts: EntryOptions) -> None:
        """Serve the fail-safe value as fresh for the throttle period, so the
        failing source is not asked again on every call meanwhile."""
        entry.expires = self.clock() + opts.fail_safe_throttle
        self.retention = max(self.retention, opts.fail_safe_throttle)
        entry.checked = self.versions.serial
        self.put(key, entry)

    # ------------------------------------------------------------- bounds

    def _evict(self) -> None:
        entries, ring = self.entries, self.ring
        # Every referenced entry gets one second chance, so this ends within
        # two laps; the last entry is never evicted by its own insertion.
        while len(entries) > 1 and (len(entries) > self.max_entries or self.bytes > self.max_bytes):
            key = ring.popleft()
            entry = entries.get(key)
            if entry is None:  # removed since it entered the clock
                continue
            if entry.referenced:
                entry.referenced = False
                ring.append(key)
                continue
            del entries[key]
            self.bytes -= entry.size * SIZE_UNIT
            self.evictions += 1
