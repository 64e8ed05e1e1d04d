"""The miss path: what happens when L1 cannot answer.

Join a load of the same key already running in this process (flights.py),
else read L2; on an L2 miss take the key's lease (or wait for the node that
holds it), run the factory with its timeouts and fail-safe, and store the
value in L2 and L1 only where that is still correct (the version rules in
versions.py, the stale-set race decided by ``SET_IF_FRESH``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import nullcontext
from typing import Any

from . import entry_codec
from .flights import Abandoned, Factory, Load, Lookup
from .node import Node
from .options import Adaptive, EntryOptions
from .stats import TypeStats
from .tasks import Background
from .validation import check_key, check_tags

log = logging.getLogger("hybridcache")

# Tags, or a function of the loaded value that returns them (for tags such as
# "category:{category_id}" that are only known once the value is loaded).
Tags = Iterable[str] | Callable[[Any], Iterable[str]] | None
# While another node holds a key's lease, look again at least this often even
# if no fill notice came (the notice is lost if our subscription is down).
_LEASE_RECHECK = 0.5
# from_l2: the entry is newer than the clock this node knows; only Redis's
# clock can tell whether it is real.
AHEAD: tuple[Any] = ("ahead",)


class Loader:
    """Loads missing values for one cache, and stores values where correct."""

    def __init__(self, node: Node, background: Background) -> None:
        self.options = options = node.options
        self.default = options.default_entry_options
        self.node = node
        self.l1 = node.l1
        self.l2 = node.l2
        self.flights = node.flights
        self.versions = node.versions
        self.counters = node.counters
        self.serializer = node.l1.serializer
        self.background = background
        self.now = options.monotonic
        self.wall = node.wall
        self.type_stats: dict[str, TypeStats] = {}

    async def miss(
        self,
        key: str,
        factory: Factory[Any],
        tags: Tags,
        options: EntryOptions | None,
    ) -> Lookup:
        key = check_key(key, self.options.maximum_key_length)
        opts = options or self.default
        derive = tags if callable(tags) else None
        tag_tuple = () if derive is not None else self.check_tags(tags)  # type: ignore[arg-type]
        stats = self.stats(opts, key)
        stats.l1_miss += 1
        flights = self.flights
        while (joined := flights.joinable(key, self.versions.gaps)) is not None:
            self.counters.coalesced += 1
            joined.joiners += 1
            try:
                return await asyncio.shield(joined.future)
            except Abandoned:
                continue
        load = Load(key, factory, opts, stats, tag_tuple, derive, self.versions.gaps,
                    asyncio.get_running_loop().create_future())
        flights.begin(load)
        try:
            result = await self._load(load)
        except asyncio.CancelledError:
            load.settle(None, Abandoned())
            raise
        except BaseException as exc:
            load.settle(None, exc)
            raise
        finally:
            flights.end(load)
        # Joiners of a load whose derived tags turned out to be invalidated
        # meanwhile may have arrived after that invalidation: they load again.
        if load.stale:
            load.settle(None, Abandoned())
        else:
            load.settle(result, None)
        return result

    async def _load(self, load: Load) -> Lookup:
        """L2 (waiting for another node's load if it holds the lease), else
        the factory, with fail-safe and the soft timeout around it."""
        opts = load.opts
        fallback = self.l1.fallback(load.key) if opts.fail_safe else None
        load.version = self.versions.clock
        l2 = self.l2
        cluster = l2.up
        if cluster and self.options.distributed_lock and not opts.skip_l2_write:
            load.lease = l2.lease(load.key)
        # Cancelled while asking for or holding the lease: the lease gives
        # itself back rather than make other replicas wait it out.
        async with load.lease or nullcontext():
            if cluster:
                found = await self._from_cluster(load)
                if found is not None:
                    return found
                load.stats.l2_miss += 1
            produce: Awaitable[Any] = self._produce(load)
            if fallback is not None and opts.factory_soft_timeout is not None:
                # As a task, so that it can finish in the background.
                task = asyncio.ensure_future(produce)
                done, _ = await asyncio.wait({task}, timeout=opts.factory_soft_timeout)
                if not done:
                    self.background.adopt(task)
                    return Lookup(fallback.value, "stale")
                produce = task
            try:
                value = await produce
            except Exception:
                if fallback is None:
                    raise
                log.warning("factory for %r failed; fail-safe serves the last value", load.key,
                            exc_info=True)
                # Keep serving the fallback for the throttle period before retrying.
                self.l1.serve_fallback(load.key, fallback, opts)
                return Lookup(fallback.value, "stale")
        return Lookup(value, "miss")

    async def _from_cluster(self, load: Load) -> Lookup | None:
        """The value from L2, or None with ``load.version`` and ``load.epoch``
        set to where the load starts (and its lease taken if it can be)."""
        l2, node, key, opts = self.l2, self.node, load.key, load.opts
        lease = load.lease
        skip_entry = opts.skip_l2_read
        watched = False  # subscribed to this key's fill notices
        with l2.guard() as call:
            try:
                if not skip_entry:
                    # Most L2 reads are hits: a plain GET, as cheap as Redis
                    # gets. Only a miss pays for the script (clock + lease).
                    raw = await l2.get_entry(key)
                    if raw is not None:
                        found = self.from_l2(key, raw, opts, load.stats, load.gaps, load,
                                             self.versions.clock, verified=False)
                        if found is AHEAD:
                            pass  # newer than we know: READ checks it against the clock
                        elif found is not None:
                            return Lookup(found[0], "l2")
                        else:
                            skip_entry = True
                # Never wait on another node's lease longer than an L2 call
                # may take: a lease lost with its holder (or left by a Redis
                # that was paused) must not hold requests for lock_lease.
                deadline = self.now() + min(self.options.lock_lease,
                                            self.options.socket_timeout)
                while True:
                    waiter = node.fill_waiter(key) if lease is not None else None
                    if lease is not None:
                        lease.held = True  # asking: the script may take it
                    read = await l2.read(key, lease=lease is not None, skip_entry=skip_entry)
                    if lease is not None:
                        lease.held = read.leased
                    self.versions.seen(read.clock)
                    if read.raw is not None:
                        found = self.from_l2(key, read.raw, opts, load.stats, load.gaps,
                                              load, read.clock)
                        if found is not None and found is not AHEAD:
                            return Lookup(found[0], "l2")
                        skip_entry = True  # unusable (stale, expired, planted): read past it
                        continue
                    load.version, load.epoch = read.clock, read.epoch
                    remaining = deadline - self.now()
                    if read.leased or waiter is None or remaining <= 0:
                        break  # past the deadline we load without the lease
                    if not watched:
                        # Fill notices reach only the nodes that wait for
                        # the key: subscribe, then look again (it may have
                        # been filled before the subscription took).
                        watched = True
                        if await node.watch_fill(key):
                            continue
                    # Another node is loading this key: wait for its fill
                    # notice (or the lease to lapse), then look again.
                    try:
                        await asyncio.wait_for(waiter.wait(), min(remaining, _LEASE_RECHECK))
                    except TimeoutError:
                        pass
                    finally:
                        node.forget_fill_waiter(key)
            finally:
                node.forget_fill_waiter(key)
                if watched:
                    node.unwatch_fill(key)
        if call.failed:
            # Not started from the cluster clock: the value will not go to L2.
            load.version, load.epoch = self.versions.clock, None
            if lease is not None:
                lease.held = False  # no answer: not known to be ours
        return None

    async def _produce(self, load: Load) -> Any:
        """Run the factory; store its value where that is still correct.
        A load whose ``epoch`` is None did not start from the cluster clock
        (Redis was unreachable): its value never goes to L2."""
        opts = load.opts
        late_tags = load.derive is not None  # tags known only now: see load.stale
        fresh = True
        async with load.lease or nullcontext():
            load.stats.factory += 1
            if opts.factory_hard_timeout is not None:
                value = await asyncio.wait_for(load.factory(), opts.factory_hard_timeout)
            else:
                value = await load.factory()
            if type(value) is Adaptive:
                adaptive, value = value, value.value
                if not adaptive.cache:
                    return value  # the lease is given back, waking the waiters
                opts = adaptive.options or opts
                if adaptive.tags is not None:
                    load.tags = self.check_tags(adaptive.tags)
                    late_tags, load.derive = True, None
            if load.derive is not None:
                load.tags = self.check_tags(load.derive(value))
            tags = load.tags
            payload = self.dumps(value)
            l2 = self.l2
            if load.epoch is not None and l2.up:
                too_large = (payload is not None
                             and len(payload) > self.options.maximum_payload_bytes)
                if too_large:
                    self.counters.payload_too_large += 1
                if payload is not None and not too_large and not opts.skip_l2_write:
                    entry = entry_codec.encode(load.version, tags, self.fresh_until(opts),
                                               payload)
                    with l2.guard() as call:
                        fresh = await l2.set_if_fresh(load.key, entry, load.version,
                                                      self.l2_ttl(opts), load.lease,
                                                      load.epoch, tags)
                    if call.failed:
                        fresh = False
        tags_fresh = self.versions.fresh(load.version, tags)
        if late_tags and not (fresh and tags_fresh):
            load.stale = True
        if (fresh and tags_fresh and not load.detached
                and load.gaps == self.versions.gaps and not opts.skip_l1_write):
            self.l1.keep(load.key, value, payload, load.version, tags, opts, load.stats)
        return value

    # ------------------------------------------------------------------ helpers

    def from_l2(
        self,
        key: str,
        raw: bytes,
        opts: EntryOptions,
        stats: TypeStats,
        gaps: int,
        load: Load | None,
        ceiling: int,
        verified: bool = True,
    ) -> tuple[Any] | None:
        """Decode an L2 entry; None if it is stale, from an older epoch,
        undecodable or planted (a version above the cluster clock
        ``ceiling``): a miss, and the load that follows replaces it. AHEAD
        if its version is above ``ceiling`` but ``ceiling`` is only what
        this node has seen (ask Redis)."""
        counters = self.counters
        try:
            stored = entry_codec.decode(raw)
        except ValueError as exc:  # a foreign or corrupt value: treat as a miss
            counters.rejected["entry_malformed"] += 1
            log.warning("undecodable L2 entry for %r: %s", key, exc)
            return None
        versions = self.versions
        if stored.version > ceiling:
            if not verified:
                return AHEAD
            counters.rejected["entry_version"] += 1
            log.warning("refused the L2 entry for %r: version %d is above the cluster"
                        " clock %d", key, stored.version, ceiling)
            return None
        if stored.version < self.l2.entry_floor:
            return None  # written before Redis lost its records: unverifiable
        if not versions.fresh(stored.version, stored.tags):
            return None
        try:
            value = self.serializer.loads(stored.payload)
        except Exception as exc:  # a foreign or corrupt value: treat as a miss
            counters.rejected["entry_malformed"] += 1
            log.warning("undecodable L2 entry for %r: %s", key, exc)
            return None
        if stored.fresh_until and stored.fresh_until <= self.wall():
            if opts.fail_safe and self.l1.fallback(key) is None:
                # Expired in L2 but kept for fail-safe: hold it in L1, expired.
                self.l1.keep_expired(key, value, len(stored.payload), stored.version,
                                     stored.tags, opts, stats)
            return None
        stats.l2_hit += 1
        if (not opts.skip_l1_write and gaps == versions.gaps
                and (load is None or not load.detached)):
            self.l1.keep(key, value, stored.payload, stored.version, stored.tags, opts, stats)
        return (value,)

    def check_tags(self, tags: Iterable[str] | None) -> tuple[str, ...]:
        return check_tags(tags, self.options.maximum_tag_length,
                          self.options.maximum_tags_per_entry)

    def stats(self, opts: EntryOptions, key: str) -> TypeStats:
        data_type = opts.data_type or key.partition(":")[0]
        stats = self.type_stats.get(data_type)
        if stats is None:
            stats = self.type_stats[data_type] = TypeStats()
        return stats

    def dumps(self, value: Any) -> bytes | None:
        try:
            return self.serializer.dumps(value)
        except Exception as exc:
            log.warning("value of type %s is not serializable; kept in L1 only: %s",
                        type(value).__name__, exc)
            return None

    def l2_ttl(self, opts: EntryOptions) -> float:
        ttl = opts.expiration + (opts.fail_safe_max_duration if opts.fail_safe else 0.0)
        return max(0.001, min(ttl, self.options.invalidation_record_ttl))

    def fresh_until(self, opts: EntryOptions) -> float:
        return self.wall() + opts.expiration if opts.fail_safe else 0.0
