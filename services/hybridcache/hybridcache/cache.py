"""HybridCache: L1 (this process) -> L2 (Redis) -> the factory (the truth).

This module is the public API and the read and write paths; the layers under
it each do one job (see the package README, "Layers").

How correctness is kept, in one place:

* Versions, not clocks. Every invalidation takes a new number from the
  cluster counter (``HINCRBY {prefix}state clock``, inside the script that records it),
  and every load reads that counter *before* its factory runs. An entry is
  stale when any of its tags (or ``*``) carries a higher number than the
  entry (versions.py). Wall clocks are used only to measure lag, so skew
  between nodes cannot keep a stale entry alive.
* The stale-set race is decided in Redis: ``SET_IF_FRESH`` writes a loaded
  value only if neither its key nor any tag was invalidated after the load's
  version, atomically. Locally, an invalidation detaches any in-flight load it
  touches, so no new caller joins it and its result never enters L1.
* Gaps. When the backplane subscription is lost or silent, or a sender's
  ``seq`` jumps, L1 is flushed and the tag table reloaded from Redis before L1
  is trusted again (node.py). Invalidations made while Redis was down are
  queued and replayed on reconnect.
* Tag invalidation is O(1): one HSET per tag; entries are never scanned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from . import entry_codec, metrics
from .backplane import AckResult
from .flights import Factory, Flights, Lookup
from .keys import Keys
from .loading import Loader, Tags
from .local_store import NEVER, Entry, EntryInfo, LocalStore
from .maintenance import Maintenance
from .node import InvalidationListener, Node
from .options import CacheOptions, EntryOptions
from .policies import PolicyRegistry
from .redis_layer import RedisLayer
from .redis_url import parse_redis_url, redact
from .serializers import JsonSerializer, Serializer
from .stats import CacheCounters, CacheStats, snapshot
from .tasks import Background
from .validation import check_key, check_tag
from .versions import Versions

__all__ = ["EntryInfo", "Factory", "HybridCache", "Lookup", "Tags"]

log = logging.getLogger("hybridcache")

T = TypeVar("T")


class HybridCache:
    """One cache replica. See the module docstring for the consistency model."""

    def __init__(self, options: CacheOptions | None = None) -> None:
        self.options = opts = options or CacheOptions()
        self.node_id = opts.node_id
        # Redis Cluster places keys in hash slots: its own key layout.
        self.keys = Keys(opts.key_prefix, cluster=opts.redis_url is not None
                         and parse_redis_url(opts.redis_url).mode == "cluster")
        self.policies = PolicyRegistry()
        self._serializer: Serializer = opts.serializer or JsonSerializer()
        self._default = opts.default_entry_options
        self._wall: Callable[[], float] = opts.clock or time.time
        self._now = opts.monotonic
        self._versions = Versions()
        self._l1 = LocalStore(opts.l1_max_entries, opts.l1_max_bytes, self._versions,
                              self._serializer, self._now)
        self._entries = self._l1.entries
        self._counters = CacheCounters()
        self._flights = Flights()
        self._background = Background()
        self._l2 = RedisLayer(opts, self.keys, self._counters, self._background)
        self._node = Node(opts, self._l2, self._l1, self._flights, self._versions,
                          self.policies, self._counters, self._wall)
        self._loader = loader = Loader(self._node, self._background)
        self._miss = loader.miss
        self._maintenance = Maintenance(opts, self._l2, self._versions, self.stats,
                                        self._node.heartbeat, lambda: self._l1.retention)
        self._started = False
        metrics.register(self)

    # ------------------------------------------------------------------ life

    async def __aenter__(self) -> HybridCache:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, connect_timeout: float | None = None) -> None:
        """Connect L2 and the backplane. If Redis is unreachable the cache runs
        on L1 + factory and keeps reconnecting in the background."""
        if self._started:
            return
        self._started = True
        url = self.options.redis_url
        if url is None:
            return
        self._l2.connect(url)
        self._background.spawn(self._check_eviction_policy())
        subscribed = self._node.start()
        self._maintenance.start()
        timeout = connect_timeout if connect_timeout is not None else self.options.socket_timeout
        try:
            await asyncio.wait_for(subscribed.wait(), timeout)
        except TimeoutError:
            log.warning("redis unavailable at start (%s); running on L1 + factory, reconnecting",
                        redact(url))

    async def _check_eviction_policy(self) -> None:
        """Invalidation state carries no TTL and cache entries do: under a
        ``volatile-*`` policy Redis evicts only entries. Under ``allkeys-*``
        it may evict the state itself: still correct (a new epoch, L1
        flushed), but every such eviction costs a cluster-wide flush."""
        policy = await self._l2.maxmemory_policy()
        if policy is not None and policy.startswith("allkeys-"):
            self._counters.unsafe_eviction = True
            log.warning("redis maxmemory-policy is %s: it may evict invalidation state,"
                        " and each such eviction flushes every L1; use volatile-lru", policy)

    async def close(self) -> None:
        self._maintenance.closing = True
        await self._node.stop()
        await self._maintenance.stop()
        await self._background.cancel()
        await self._l2.close()

    @property
    def connected(self) -> bool:
        """True while L2 and the backplane are usable."""
        return self._l2.up

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until the backplane is subscribed and resynchronised."""
        subscription = self._node.subscription
        if subscription is None:
            raise RuntimeError("this cache has no redis_url")
        await asyncio.wait_for(subscription.subscribed.wait(), timeout)

    # ------------------------------------------------------------------ inspection

    def stats(self) -> CacheStats:
        """A snapshot of this cache's counters (what metrics.py exports)."""
        l1 = self._l1
        generations = {dt: p.generation for dt, p in self.policies.all().items()}
        return snapshot(self._loader.type_stats, self._counters, connected=self._l2.up,
                        policy_generations=generations,
                        l1_entries=len(l1), l1_bytes=l1.bytes, l1_evictions=l1.evictions,
                        pending_invalidations=len(self._node.pending))

    def tag_versions(self) -> Mapping[str, int]:
        """A copy of the tag versions this replica knows (``*`` included once
        it was invalidated): an entry loaded at a lower version is stale."""
        versions = dict(self._versions.tags)
        if self._versions.all:
            versions["*"] = self._versions.all
        return versions

    def inspect(self, key: str) -> EntryInfo | None:
        """What L1 holds for ``key`` (None: nothing), without counting a hit:
        to answer "why was this not served from L1?"."""
        return self._l1.info(key)

    def on_invalidated(self, listener: InvalidationListener) -> None:
        """Call ``listener(op, id, origin)`` after each invalidation applied
        here: op ``"key"`` or ``"tag"``, origin ``"local"`` or ``"remote"``.
        It runs on the event loop, inside the cache: keep it short."""
        self._node.listeners.append(listener)

    async def join_background(self) -> None:
        """Wait for the work this cache started in the background (eager
        refreshes, loads that outlived a soft timeout, lease releases)."""
        await self._background.join()

    # ------------------------------------------------------------------ reads

    async def get_or_create(
        self,
        key: str,
        factory: Factory[T],
        *,
        tags: Tags = None,
        options: EntryOptions | None = None,
    ) -> T:
        """The value for ``key``: from L1, else L2, else ``factory()`` (run once
        per process however many callers miss together; once per cluster while
        another node holds the key's lease)."""
        # LocalStore.hit, inlined: this is the hottest path and a call costs a
        # sixth of it.
        entry = self._entries.get(key)
        now = self._now()
        if (
            entry is not None
            and entry.expires > now
            and (entry.checked == self._versions.serial or self._l1.still_valid(entry))
            and (options is None or not options.skip_l1_read)
        ):
            entry.referenced = True
            entry.stats.l1_hit += 1
            if entry.refresh_at <= now:
                self._refresh_eagerly(key, factory, tags, options, entry)
            if entry.payload is not None:  # copy-on-read
                return self._l1.value_of(entry)  # type: ignore[no-any-return]
            return entry.value  # type: ignore[no-any-return]
        return (await self._miss(key, factory, tags, options)).value  # type: ignore[no-any-return]

    def _refresh_eagerly(self, key: str, factory: Factory[Any], tags: Tags,
                         options: EntryOptions | None, entry: Entry) -> None:
        """Reload a hot entry in the background before it expires; callers
        keep getting the current value meanwhile."""
        entry.refresh_at = NEVER  # once per entry
        opts = replace(options or self._default, skip_l1_read=True, skip_l2_read=True)
        self._background.spawn(self._miss(key, factory, tags, opts))

    async def lookup(
        self,
        key: str,
        factory: Factory[Any],
        *,
        tags: Tags = None,
        options: EntryOptions | None = None,
    ) -> Lookup:
        """Like get_or_create, but also says which layer answered."""
        now = self._now()
        entry = self._l1.hit(key, now, options)
        if entry is not None:
            if entry.refresh_at <= now:
                self._refresh_eagerly(key, factory, tags, options, entry)
            return Lookup(self._l1.value_of(entry), "l1")
        return await self._miss(key, factory, tags, options)

    def peek(self, key: str, options: EntryOptions | None = None) -> Lookup | None:
        """The L1 value for ``key`` if it may be served, without awaiting
        anything: for synchronous code, and for hot paths that try L1 for
        several keys before falling back to ``lookup``. A miss is not counted
        (the ``lookup`` that follows counts it); eager refresh needs ``lookup``."""
        entry = self._l1.hit(key, self._now(), options)
        if entry is None:
            return None
        return Lookup(self._l1.value_of(entry), "l1")

    async def get(self, key: str, default: Any = None, *,
                  options: EntryOptions | None = None) -> Any:
        """The cached value, or ``default``; never calls a source."""
        entry = self._l1.hit(key, self._now(), options)
        if entry is not None:
            return self._l1.value_of(entry)
        key = check_key(key, self.options.maximum_key_length)
        opts = options or self._default
        loader = self._loader
        stats = loader.stats(opts, key)
        stats.l1_miss += 1
        if not self._l2.up or opts.skip_l2_read:
            return default
        gaps = self._versions.gaps
        with self._l2.guard() as call:
            read = await self._l2.read(key, lease=False)
        if call.failed:
            return default
        self._versions.seen(read.clock)
        raw = read.raw
        found = (None if raw is None
                 else loader.from_l2(key, raw, opts, stats, gaps, None, read.clock))
        if found is None:
            stats.l2_miss += 1
            return default
        return found[0]

    # ------------------------------------------------------------------ writes

    async def set(
        self,
        key: str,
        value: Any,
        *,
        tags: Tags = None,
        options: EntryOptions | None = None,
    ) -> None:
        """Store ``value`` as the new truth for ``key``: other replicas drop
        their L1 copy, loads of ``key`` that started earlier are voided."""
        key = check_key(key, self.options.maximum_key_length)
        opts = options or self._default
        loader = self._loader
        tag_tuple = loader.check_tags(tags(value) if callable(tags) else tags)
        stats = loader.stats(opts, key)
        node = self._node
        node.drop_key(key, "local")
        payload = loader.dumps(value)
        version: int | None = None
        if self._l2.up:
            gaps = self._versions.gaps
            tail = b""
            if payload is not None and not opts.skip_l2_write:
                if len(payload) <= self.options.maximum_payload_bytes:
                    tail = entry_codec.encode_tail(tag_tuple, loader.fresh_until(opts),
                                                   payload)
                else:
                    self._counters.payload_too_large += 1
            node.in_flight += 1
            with self._l2.guard() as call:
                try:
                    version, _ = await node.sender.key(key, tail, loader.l2_ttl(opts))
                finally:
                    node.in_flight -= 1
                self._versions.seen(version)
                self._settled(key)
            if call.failed:
                node.queue("key", key)
                version = None
            elif gaps != self._versions.gaps:
                return
        else:
            node.queue("key", key)
        if not opts.skip_l1_write:
            if version is None:
                version = self._versions.bump_local()
            self._l1.keep(key, value, payload, version, tag_tuple, opts, stats)

    def _settled(self, key: str) -> None:
        """This node's own removal or set of ``key`` is done in Redis. A
        lookup here between dropping the key locally and that moment may
        have read the old L2 entry (this node hears no echo of its own
        message to drop it again): drop it now, and void such lookups still
        in flight. The window is a Redis call in standalone mode (wider
        while the sender is busy), and three on a cluster."""
        self._l1.pop(key)
        self._flights.detach(key)

    async def remove(self, key: str, *, ack_timeout: float | None = None) -> AckResult | None:
        """Remove ``key`` from L1 and L2 here and on every replica."""
        key = check_key(key, self.options.maximum_key_length)
        node = self._node
        node.drop_key(key, "local")
        ack = ack_timeout is not None
        if not self._l2.up:
            node.queue("key", key)
            return node.unconfirmed() if ack else None
        node.in_flight += 1
        with self._l2.guard() as call:
            try:
                # With ``ack`` the sender registers the ack waiter before publishing.
                version, seq = await node.sender.key(key, ack=ack)
            finally:
                node.in_flight -= 1
            self._versions.seen(version)
            self._settled(key)
        if call.failed:
            node.queue("key", key)
            return node.unconfirmed() if ack else None
        if ack_timeout is None:
            return None
        return await node.await_acks(seq, ack_timeout)

    async def remove_by_tag(
        self, tag: str, *, ack_timeout: float | None = None
    ) -> AckResult | None:
        """Invalidate every entry carrying ``tag`` (``"*"``: every entry), on
        every replica, in O(1): one version is recorded, no entry is touched."""
        return await self.remove_by_tags([tag], ack_timeout=ack_timeout)

    async def remove_by_tags(
        self, tags: Iterable[str], *, ack_timeout: float | None = None
    ) -> AckResult | None:
        """Invalidate several tags at one version. With ``ack_timeout``, wait
        (at most that long) until every live replica confirmed."""
        if isinstance(tags, str):
            raise ValueError(f"tags must be a list of strings, not the string {tags!r}")
        tag_list = list(dict.fromkeys(
            check_tag(t, self.options.maximum_tag_length, allow_all=True) for t in tags))
        ack = ack_timeout is not None
        if not tag_list:
            return AckResult(frozenset(), frozenset()) if ack else None
        node = self._node
        if not self._l2.up:
            node.apply_tags_offline(tag_list)
            return node.unconfirmed() if ack else None
        node.in_flight += 1
        with self._l2.guard() as call:
            try:
                version, last_seq = await node.sender.tags(tag_list, ack=ack)
            finally:
                node.in_flight -= 1
        if call.failed:
            node.apply_tags_offline(tag_list)
            return node.unconfirmed() if ack else None
        self._versions.seen(version)
        for tag in tag_list:
            node.apply_tag(tag, version, "local")
        if ack_timeout is None:
            return None
        return await node.await_acks(last_seq, ack_timeout)

    async def live_nodes(self) -> frozenset[str]:
        """Replicas that heartbeated recently (Redis's clock), this one included."""
        return await self._node.live_nodes()
