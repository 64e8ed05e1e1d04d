"""HybridCache: L1 (this process) -> L2 (Redis) -> the factory (the truth).

How correctness is kept, in one place:

* Versions, not clocks. Every invalidation takes a new number from the
  cluster counter ``{prefix}clock`` (INCR, inside the script that records it),
  and every load reads that counter *before* its factory runs. An entry is
  stale when any of its tags (or ``*``) carries a higher number than the
  entry. Wall clocks are used only to measure lag, so skew between nodes
  cannot keep a stale entry alive.
* The stale-set race is decided in Redis: ``SET_IF_FRESH`` writes a loaded
  value only if neither its key nor any tag was invalidated after the load's
  version, atomically. Locally, an invalidation detaches any in-flight load it
  touches, so no new caller joins it and its result never enters L1.
* Gaps. When the backplane subscription is lost or silent, or a sender's
  ``seq`` jumps, L1 is flushed and the tag table reloaded from Redis before L1
  is trusted again (``_resync``). Invalidations made while Redis was down are
  queued and replayed on reconnect.
* Tag invalidation is O(1): one HSET per tag; entries are never scanned.
"""

from __future__ import annotations

import asyncio
import copy as copy_module
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any, Literal, NamedTuple, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from . import entry_codec, metrics, scripts
from .backplane import UNREACHABLE, AckResult, Subscription
from .keys import ALL_TAG, Keys
from .local_store import NEVER, Entry, LocalStore, TypeStats
from .metrics import CacheCounters
from .options import Adaptive, CacheOptions, EntryOptions
from .policies import PolicyRegistry
from .redis_pool import BoundedConnectionPool
from .serializers import JsonSerializer, Serializer
from .validation import check_key, check_tag, check_tags
from .wire import Message, MessageError, decode_message

log = logging.getLogger("hybridcache")

T = TypeVar("T")
Layer = Literal["l1", "l2", "miss", "stale"]
Factory = Callable[[], Awaitable[T]]
# Tags, or a function of the loaded value that returns them (for tags such as
# "category:{category_id}" that are only known once the value is loaded).
Tags = Iterable[str] | Callable[[Any], Iterable[str]] | None
_monotonic = time.monotonic
# While another node holds a key's lease, look again at least this often even
# if no fill notice came (the notice is lost if our subscription is down).
_LEASE_RECHECK = 0.5
_AckWaiter = tuple[set[str], asyncio.Event]  # nodes that confirmed, woken on each


class Lookup(NamedTuple):
    """A value and the layer it came from: ``l1``, ``l2``, ``miss`` (the
    factory ran) or ``stale`` (fail-safe served an expired value). A named
    tuple: built on every lookup, and a frozen dataclass costs twice as much."""

    value: Any
    layer: Layer


class _Flight:
    """One in-flight load of a key in this process, shared by every caller
    that misses the key meanwhile, unless an invalidation detached it.

    The first caller runs the load itself (no task hop on the miss path);
    callers that join wait on ``future``, which is only resolved when someone
    joined. If the first caller is cancelled, joiners get ``_Abandoned`` and
    start over, one of them becoming the new loader."""

    __slots__ = ("detached", "future", "generation", "joiners", "may_hold_lease", "stale",
                 "tags")

    def __init__(self, tags: tuple[str, ...], generation: int,
                 future: asyncio.Future[Lookup]) -> None:
        self.tags = tags
        self.generation = generation
        self.future = future
        self.detached = False
        self.joiners = 0
        self.stale = False  # its value was invalidated during the load
        self.may_hold_lease = False  # from asking for the lease until giving it back

    def settle(self, result: Lookup | None, exc: BaseException | None) -> None:
        if not self.joiners or self.future.done():
            return
        if exc is None:
            self.future.set_result(result)  # type: ignore[arg-type]
        else:
            self.future.set_exception(exc)


class _Abandoned(Exception):
    """The caller running a shared load was cancelled before it finished."""


class HybridCache:
    """One cache replica. See the module docstring for the consistency model."""

    def __init__(self, options: CacheOptions | None = None) -> None:
        self.options = opts = options or CacheOptions()
        self.node_id = opts.node_id
        self.keys = Keys(opts.key_prefix)
        self.policies = PolicyRegistry()
        self._serializer: Serializer = opts.serializer or JsonSerializer()
        self._default = opts.default_entry_options
        self._wall: Callable[[], float] = opts.clock or time.time
        self._l1 = LocalStore(opts.l1_max_entries, opts.l1_max_bytes)
        self._entries = self._l1.entries
        self._type_stats: dict[str, TypeStats] = {}
        self._counters = CacheCounters()
        self._tag_versions: dict[str, int] = {}
        self._all_version = 0
        self._serial = 0  # bumped by every invalidation applied locally
        self._clock = 0  # highest cluster version seen (a local counter while offline)
        self._generation = 0  # bumped at every backplane gap
        self._flights: dict[str, _Flight] = {}
        self._seq = 0
        self._peer_seq: dict[str, int] = {}
        self._pending: dict[tuple[str, str], None] = {}  # invalidations to replay
        self._fill_waiters: dict[str, asyncio.Event] = {}
        self._ack_waiters: dict[int, _AckWaiter] = {}
        self._redis: aioredis.Redis | None = None
        self._pubsub_redis: aioredis.Redis | None = None
        self._subscription: Subscription | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._up = False  # L2 and backplane usable (cluster mode)
        self._fill_channel_b = self.keys.fill_channel.encode()
        self._ack_channel_b = self.keys.ack_channel.encode()
        self._own_marker = b'"node":' + orjson.dumps(self.node_id) + b","
        self._started = False
        self._closing = False
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
        timeout = self.options.socket_timeout
        # One immediate retry (a pooled connection may be stale after a Redis
        # restart), never redis-py's default backoff of seconds: a cache must
        # fail fast and fall back to the source.
        pool = BoundedConnectionPool.from_url(
            url, max_connections=self.options.max_connections,
            socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self._redis = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
        self._read = self._redis.register_script(scripts.READ)
        self._set_if_fresh = self._redis.register_script(scripts.SET_IF_FRESH)
        self._release = self._redis.register_script(scripts.RELEASE)
        self._invalidate_key = self._redis.register_script(scripts.INVALIDATE_KEY)
        self._invalidate_tags = self._redis.register_script(scripts.INVALIDATE_TAGS)
        self._heartbeat = self._redis.register_script(scripts.HEARTBEAT)
        self._prune = self._redis.register_script(scripts.PRUNE_TAGS)
        # The backplane has a connection of its own, outside the bounded pool:
        # a burst of misses must never delay (or starve) the subscription.
        # No retry at all here: a silent reconnect inside redis-py would hide
        # exactly the gap (lost messages) the subscription loop must see.
        self._pubsub_redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0))
        self._subscription = Subscription(
            self._pubsub_redis, self.keys,
            heartbeat_interval=self.options.heartbeat_interval,
            heartbeat_timeout=self.options.heartbeat_timeout,
            backoff_max=self.options.reconnect_backoff_max,
            on_message=self._on_message,
            on_connected=self._resync,
            on_disconnected=self._on_gap,
        )
        self._subscription.start()
        self._maintenance = asyncio.create_task(self._maintain(), name="hybridcache-maintenance")
        try:
            await asyncio.wait_for(self._subscription.subscribed.wait(),
                                   connect_timeout if connect_timeout is not None else timeout)
        except TimeoutError:
            log.warning("redis unavailable at start; running on L1 + factory, reconnecting")

    async def close(self) -> None:
        self._closing = True
        if self._subscription is not None:
            await self._subscription.stop()
        tasks = [t for t in (self._maintenance, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._redis is not None:
            if self._up:
                try:
                    await asyncio.wait_for(self._redis.zrem(self.keys.nodes, self.node_id), 1.0)
                except (RedisError, OSError, TimeoutError):
                    pass
            await self._redis.aclose()
        if self._pubsub_redis is not None:
            await self._pubsub_redis.aclose()
        self._up = False
        self._redis = self._pubsub_redis = None
        self._subscription = None
        self._maintenance = None

    @property
    def connected(self) -> bool:
        """True while L2 and the backplane are usable."""
        return self._up

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until the backplane is subscribed and resynchronised."""
        if self._subscription is None:
            raise RuntimeError("this cache has no redis_url")
        await asyncio.wait_for(self._subscription.subscribed.wait(), timeout)

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
        # The L1 hit test of _l1_hit, inlined: this is the hottest path and a
        # call costs a sixth of it.
        entry = self._entries.get(key)
        now = _monotonic()
        if (
            entry is not None
            and entry.expires > now
            and (entry.checked == self._serial or self._still_valid(entry))
            and (options is None or not options.skip_l1_read)
        ):
            entry.referenced = True
            entry.stats.l1_hit += 1
            if entry.refresh_at <= now:
                self._refresh_eagerly(key, factory, tags, options, entry)
            if entry.copy:
                return self._copy(entry)  # type: ignore[no-any-return]
            return entry.value  # type: ignore[no-any-return]
        return (await self._miss(key, factory, tags, options)).value  # type: ignore[no-any-return]

    def _refresh_eagerly(self, key: str, factory: Factory[Any], tags: Tags,
                         options: EntryOptions | None, entry: Entry) -> None:
        """Reload a hot entry in the background before it expires; callers
        keep getting the current value meanwhile."""
        entry.refresh_at = NEVER  # once per entry
        opts = replace(options or self._default, skip_l1_read=True, skip_l2_read=True)
        self._spawn(self._miss(key, factory, tags, opts))

    def _l1_hit(self, key: str, options: EntryOptions | None) -> Entry | None:
        """The L1 entry for ``key`` if it may be served (counted as a hit)."""
        entry = self._entries.get(key)
        if (
            entry is not None
            and entry.expires > _monotonic()
            and (entry.checked == self._serial or self._still_valid(entry))
            and (options is None or not options.skip_l1_read)
        ):
            entry.referenced = True
            entry.stats.l1_hit += 1
            return entry
        return None

    async def lookup(
        self,
        key: str,
        factory: Factory[Any],
        *,
        tags: Tags = None,
        options: EntryOptions | None = None,
    ) -> Lookup:
        """Like get_or_create, but also says which layer answered."""
        entry = self._l1_hit(key, options)
        if entry is not None:
            if entry.refresh_at != NEVER and entry.refresh_at <= _monotonic():
                self._refresh_eagerly(key, factory, tags, options, entry)
            return Lookup(self._copy(entry) if entry.copy else entry.value, "l1")
        return await self._miss(key, factory, tags, options)

    def peek(self, key: str, options: EntryOptions | None = None) -> Lookup | None:
        """The L1 value for ``key`` if it may be served, without awaiting
        anything: for synchronous code, and for hot paths that try L1 for
        several keys before falling back to ``lookup``. A miss is not counted
        (the ``lookup`` that follows counts it); eager refresh needs ``lookup``."""
        entry = self._l1_hit(key, options)
        if entry is None:
            return None
        return Lookup(self._copy(entry) if entry.copy else entry.value, "l1")

    async def get(self, key: str, default: Any = None, *,
                  options: EntryOptions | None = None) -> Any:
        """The cached value, or ``default``; never calls a source."""
        entry = self._l1_hit(key, options)
        if entry is not None:
            return self._copy(entry) if entry.copy else entry.value
        key = check_key(key, self.options.maximum_key_length)
        opts = options or self._default
        stats = self._stats(opts, key)
        stats.l1_miss += 1
        if not self._up or opts.skip_l2_read:
            return default
        generation = self._generation
        try:
            raw, _, _, _ = await self._l2_read(key, lease=False)
        except (RedisError, OSError) as exc:
            self._l2_failed(exc)
            return default
        if raw is None:
            stats.l2_miss += 1
            return default
        found = self._from_l2(key, raw, opts, stats, generation, None)
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
        tag_tuple = self._check_tags(tags(value) if callable(tags) else tags)
        stats = self._stats(opts, key)
        self._drop_key_locally(key, "local")
        payload = self._dumps(value)
        version: int | None = None
        if self._up:
            generation = self._generation
            tail = b""
            ttl = self._l2_ttl(opts)
            if payload is not None and not opts.skip_l2_write:
                if len(payload) <= self.options.maximum_payload_bytes:
                    tail = entry_codec.encode_tail(tag_tuple, self._fresh_until(opts), payload)
                else:
                    self._counters.payload_too_large += 1
            try:
                version = int(await self._invalidate_key(
                    keys=self._key_script_keys(key),
                    args=[self._message("key", key).encode_open(),
                          int(self.options.invalidation_record_ttl * 1000),
                          self.keys.channel, tail, int(ttl * 1000)],
                ))
                self._seen(version)
            except (RedisError, OSError) as exc:
                self._l2_failed(exc)
                self._pending[("key", key)] = None
                version = None
            if version is not None and generation != self._generation:
                return
        else:
            self._pending_if_clustered("key", key)
        if not opts.skip_l1_write:
            if version is None:
                version = self._bump_local()
            self._install(key, value, payload, version, tag_tuple, opts, stats)

    async def remove(self, key: str, *, ack_timeout: float | None = None) -> AckResult | None:
        """Remove ``key`` from L1 and L2 here and on every replica."""
        key = check_key(key, self.options.maximum_key_length)
        self._drop_key_locally(key, "local")
        if not self._up:
            self._pending_if_clustered("key", key)
            return self._unconfirmed() if ack_timeout is not None else None
        message = self._message("key", key, ack=ack_timeout is not None)
        if ack_timeout is not None:
            self._expect_acks(message.seq)
        try:
            version = int(await self._invalidate_key(
                keys=self._key_script_keys(key),
                args=[message.encode_open(), int(self.options.invalidation_record_ttl * 1000),
                      self.keys.channel, b"", 0],
            ))
            self._seen(version)
        except (RedisError, OSError) as exc:
            self._l2_failed(exc)
            self._pending[("key", key)] = None
            self._ack_waiters.pop(message.seq, None)
            return self._unconfirmed() if ack_timeout is not None else None
        if ack_timeout is None:
            return None
        return await self._await_acks(message.seq, ack_timeout)

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
        if not tag_list:
            return AckResult(frozenset(), frozenset()) if ack_timeout is not None else None
        if not self._up:
            version = self._bump_local()
            for tag in tag_list:
                self._apply_tag(tag, version, "local")
                self._pending_if_clustered("tag", tag)
            return self._unconfirmed() if ack_timeout is not None else None
        messages = [self._message("tag", t, ack=ack_timeout is not None) for t in tag_list]
        last_seq = messages[-1].seq
        if ack_timeout is not None:
            self._expect_acks(last_seq)
        args: list[Any] = [self.keys.channel, self._wall()]
        for tag, message in zip(tag_list, messages, strict=True):
            args += [tag, message.encode_open()]
        try:
            version = int(await self._invalidate_tags(
                keys=self._tag_script_keys, args=args))
        except (RedisError, OSError) as exc:
            self._l2_failed(exc)
            self._ack_waiters.pop(last_seq, None)
            version = self._bump_local()
            for tag in tag_list:
                self._apply_tag(tag, version, "local")
                self._pending[("tag", tag)] = None
            return self._unconfirmed() if ack_timeout is not None else None
        self._seen(version)
        for tag in tag_list:
            self._apply_tag(tag, version, "local")
        if ack_timeout is None:
            return None
        return await self._await_acks(last_seq, ack_timeout)

    async def live_nodes(self) -> frozenset[str]:
        """Replicas that heartbeated recently (Redis's clock), this one included."""
        if not self._up:
            return frozenset({self.node_id})
        nodes = await self._heartbeat(keys=[self.keys.nodes],
                                      args=["", self._liveness_window()])
        return frozenset(n.decode() for n in nodes) | {self.node_id}

    # ------------------------------------------------------------------ miss path

    async def _miss(
        self,
        key: str,
        factory: Factory[Any],
        tags: Tags,
        options: EntryOptions | None,
    ) -> Lookup:
        key = check_key(key, self.options.maximum_key_length)
        opts = options or self._default
        derive = tags if callable(tags) else None
        tag_tuple = () if derive is not None else self._check_tags(tags)  # type: ignore[arg-type]
        stats = self._stats(opts, key)
        stats.l1_miss += 1
        while True:
            flight = self._flights.get(key)
            if (flight is None or flight.detached
                    or flight.generation != self._generation):
                break
            self._counters.coalesced += 1
            flight.joiners += 1
            try:
                return await asyncio.shield(flight.future)
            except _Abandoned:
                continue
        flight = _Flight(tag_tuple, self._generation, asyncio.get_running_loop().create_future())
        self._flights[key] = flight
        try:
            result = await self._load_layers(key, factory, tag_tuple, derive, opts, stats,
                                             flight)
        except asyncio.CancelledError:
            flight.settle(None, _Abandoned())
            if flight.may_hold_lease:
                # Cancelled while asking for or holding the lease: give it
                # back now rather than make other replicas wait it out.
                self._spawn(self._release_lease(key))
            raise
        except BaseException as exc:
            flight.settle(None, exc)
            raise
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
        # Joiners of a load whose derived tags turned out to be invalidated
        # meanwhile may have arrived after that invalidation: they load again.
        if flight.stale:
            flight.settle(None, _Abandoned())
        else:
            flight.settle(result, None)
        return result

    async def _load_layers(
        self,
        key: str,
        factory: Factory[Any],
        tags: tuple[str, ...],
        derive: Callable[[Any], Iterable[str]] | None,
        opts: EntryOptions,
        stats: TypeStats,
        flight: _Flight,
    ) -> Lookup:
        fallback = self._fallback(key) if opts.fail_safe else None
        version = self._clock
        cluster = False
        leased = False
        epoch = b""
        if self._up:
            want_lease = self.options.distributed_lock and not opts.skip_l2_write
            skip_entry = opts.skip_l2_read
            try:
                if not skip_entry:
                    # Most L2 reads are hits: a plain GET, as cheap as Redis
                    # gets. Only a miss pays for the script (clock + lease).
                    assert self._redis is not None
                    raw: bytes | None = await self._redis.get(  # type: ignore[assignment]
                        self.keys.entry(key))
                    if raw is not None:
                        found = self._from_l2(key, raw, opts, stats, flight.generation, flight)
                        if found is not None:
                            return Lookup(found[0], "l2")
                        skip_entry = True
                deadline = _monotonic() + self.options.lock_lease
                while True:
                    waiter = self._fill_waiter(key) if want_lease else None
                    flight.may_hold_lease = want_lease
                    raw, clock, leased, epoch = await self._l2_read(
                        key, lease=want_lease, skip_entry=skip_entry)
                    flight.may_hold_lease = leased
                    if raw is not None:
                        found = self._from_l2(key, raw, opts, stats, flight.generation, flight)
                        if found is not None:
                            return Lookup(found[0], "l2")
                        skip_entry = True  # unusable (stale or expired): read past it
                        continue
                    version = clock
                    cluster = True
                    remaining = deadline - _monotonic()
                    if leased or not want_lease or waiter is None or remaining <= 0:
                        break  # past the deadline we load without the lease
                    # Another node is loading this key: wait for its fill
                    # notice (or the lease to lapse), then look again.
                    try:
                        await asyncio.wait_for(waiter.wait(), min(remaining, _LEASE_RECHECK))
                    except TimeoutError:
                        pass
                    finally:
                        self._fill_waiters.pop(key, None)
            except (RedisError, OSError) as exc:
                self._l2_failed(exc)
                cluster = False
                version = self._clock
            finally:
                self._fill_waiters.pop(key, None)
            stats.l2_miss += 1
        produce: Awaitable[Any] = self._produce(key, factory, tags, derive, opts, stats, flight,
                                                version, epoch if cluster else None, leased)
        if fallback is not None and opts.factory_soft_timeout is not None:
            # As a task, so that it can finish in the background.
            task = asyncio.ensure_future(produce)
            done, _ = await asyncio.wait({task}, timeout=opts.factory_soft_timeout)
            if not done:
                self._background.add(task)
                task.add_done_callback(self._background_done)
                return Lookup(fallback.value, "stale")
            produce = task
        try:
            value = await produce
        except Exception:
            if fallback is None:
                raise
            log.warning("factory for %r failed; fail-safe serves the last value", key,
                        exc_info=True)
            # Keep serving the fallback for the throttle period before retrying.
            self._install_fallback(key, fallback, opts)
            return Lookup(fallback.value, "stale")
        return Lookup(value, "miss")

    async def _produce(
        self,
        key: str,
        factory: Factory[Any],
        tags: tuple[str, ...],
        derive: Callable[[Any], Iterable[str]] | None,
        opts: EntryOptions,
        stats: TypeStats,
        flight: _Flight,
        version: int,
        epoch: bytes | None,
        leased: bool,
    ) -> Any:
        """Run the factory; store its value where that is still correct.
        ``epoch`` is None for a load that did not start from the cluster clock
        (Redis was unreachable): such a value never goes to L2."""
        stats.factory += 1
        late_tags = derive is not None  # tags known only now: see flight.stale
        try:
            if opts.factory_hard_timeout is not None:
                value = await asyncio.wait_for(factory(), opts.factory_hard_timeout)
            else:
                value = await factory()
            if type(value) is Adaptive:
                adaptive, value = value, value.value
                if not adaptive.cache:
                    if leased:
                        await self._release_lease(key)  # and wake the waiters
                    return value
                opts = adaptive.options or opts
                if adaptive.tags is not None:
                    tags = flight.tags = self._check_tags(adaptive.tags)
                    late_tags, derive = True, None
            if derive is not None:
                tags = flight.tags = self._check_tags(derive(value))
        except BaseException:
            if leased:
                self._spawn(self._release_lease(key))
            raise
        payload = self._dumps(value)
        fresh = True
        if leased and (epoch is None or not self._up):
            # Redis may be unreachable: give the lease back without making the
            # caller wait for that to fail.
            self._spawn(self._release_lease(key))
        elif epoch is not None and self._up:
            too_large = payload is not None and len(payload) > self.options.maximum_payload_bytes
            if too_large:
                self._counters.payload_too_large += 1
            if payload is not None and not too_large and not opts.skip_l2_write:
                try:
                    fresh = bool(await self._set_if_fresh(
                        keys=[self.keys.entry(key), self.keys.key_mark(key), self.keys.tags,
                              self.keys.lease(key), self.keys.epoch],
                        args=[entry_codec.encode(version, tags, self._fresh_until(opts), payload),
                              version, int(self._l2_ttl(opts) * 1000),
                              self.node_id if leased else "", self.keys.fill_channel, key,
                              epoch, *tags],
                    ))
                except (RedisError, OSError) as exc:
                    self._l2_failed(exc)
                    fresh = False
                    if leased:  # the script may not have run: free the waiters
                        self._spawn(self._release_lease(key))
            elif leased:
                await self._release_lease(key)
        tags_fresh = self._tags_fresh(version, tags)
        if late_tags and not (fresh and tags_fresh):
            flight.stale = True
        if (fresh and tags_fresh and not flight.detached
                and flight.generation == self._generation and not opts.skip_l1_write):
            self._install(key, value, payload, version, tags, opts, stats)
        return value

    # ------------------------------------------------------------------ L1 helpers

    def _still_valid(self, entry: Entry) -> bool:
        """Re-check an entry's tags after some invalidation arrived."""
        if not self._tags_fresh(entry.version, entry.tags):
            return False
        entry.checked = self._serial
        return True

    def _tags_fresh(self, version: int, tags: tuple[str, ...]) -> bool:
        if self._all_version > version:
            return False
        versions = self._tag_versions
        return all(versions.get(tag, 0) <= version for tag in tags)

    def _install(
        self,
        key: str,
        value: Any,
        payload: bytes | None,
        version: int,
        tags: tuple[str, ...],
        opts: EntryOptions,
        stats: TypeStats,
    ) -> None:
        now = _monotonic()
        lifetime = opts.l1_expiration
        if opts.jitter:
            lifetime += random.uniform(0, opts.jitter)
        if self.options.redis_url is not None and not self._up:
            # Deaf to invalidations: keep what we load only briefly.
            lifetime = min(lifetime, self.options.disconnected_local_expiration)
        expires = now + lifetime
        stale_until = expires + opts.fail_safe_max_duration if opts.fail_safe else expires
        entry = Entry(value, payload if opts.copy_on_read else None,
                      len(payload) if payload is not None else 0, version, tags,
                      expires, stale_until, stats, opts.copy_on_read, self._serial)
        if opts.eager_refresh is not None:
            entry.refresh_at = now + lifetime * opts.eager_refresh
        self._l1.put(key, entry)

    def _install_fallback(self, key: str, fb: Entry, opts: EntryOptions) -> None:
        """Serve the fail-safe value as fresh for the throttle period, so the
        failing source is not asked again on every call meanwhile."""
        fb.expires = _monotonic() + opts.fail_safe_throttle
        fb.checked = self._serial
        self._l1.put(key, fb)

    def _fallback(self, key: str) -> Entry | None:
        """The expired L1 entry that fail-safe keeps until ``stale_until``:
        never one that was invalidated (an invalidation means it is wrong)."""
        entry = self._entries.get(key)
        if (entry is None or entry.stale_until <= _monotonic()
                or not self._tags_fresh(entry.version, entry.tags)):
            return None
        return entry

    def _copy(self, entry: Entry) -> Any:
        if entry.payload is not None:
            return self._serializer.loads(entry.payload)
        return copy_module.deepcopy(entry.value)

    def _from_l2(
        self,
        key: str,
        raw: bytes,
        opts: EntryOptions,
        stats: TypeStats,
        generation: int,
        flight: _Flight | None,
    ) -> tuple[Any] | None:
        """Decode an L2 entry; None if it is stale or undecodable."""
        try:
            stored = entry_codec.decode(raw)
            value = self._serializer.loads(stored.payload)
        except Exception as exc:  # a foreign or corrupt value: treat as a miss
            log.warning("undecodable L2 entry for %r: %s", key, exc)
            return None
        self._seen(stored.version)
        if not self._tags_fresh(stored.version, stored.tags):
            return None
        if stored.fresh_until and stored.fresh_until <= self._wall():
            if opts.fail_safe and self._fallback(key) is None:
                # Expired in L2 but kept for fail-safe: hold it in L1, expired.
                now = _monotonic()
                self._l1.put(key, Entry(value, None, len(stored.payload), stored.version,
                                        stored.tags, now, now + opts.fail_safe_max_duration,
                                        stats, False, self._serial))
            return None
        stats.l2_hit += 1
        if (not opts.skip_l1_write and generation == self._generation
                and (flight is None or not flight.detached)):
            self._install(key, value, stored.payload, stored.version, stored.tags, opts, stats)
        return (value,)

    def _check_tags(self, tags: Iterable[str] | None) -> tuple[str, ...]:
        return check_tags(tags, self.options.maximum_tag_length,
                          self.options.maximum_tags_per_entry)

    def _stats(self, opts: EntryOptions, key: str) -> TypeStats:
        data_type = opts.data_type or key.partition(":")[0]
        stats = self._type_stats.get(data_type)
        if stats is None:
            stats = self._type_stats[data_type] = TypeStats()
        return stats

    def _dumps(self, value: Any) -> bytes | None:
        try:
            return self._serializer.dumps(value)
        except Exception as exc:
            log.warning("value of type %s is not serializable; kept in L1 only: %s",
                        type(value).__name__, exc)
            return None

    def _l2_ttl(self, opts: EntryOptions) -> float:
        ttl = opts.expiration + (opts.fail_safe_max_duration if opts.fail_safe else 0.0)
        return max(0.001, min(ttl, self.options.invalidation_record_ttl))

    def _fresh_until(self, opts: EntryOptions) -> float:
        return self._wall() + opts.expiration if opts.fail_safe else 0.0

    # ------------------------------------------------------------------ invalidation

    def _drop_key_locally(self, key: str, origin: str) -> None:
        self._l1.pop(key)
        flight = self._flights.pop(key, None)
        if flight is not None:
            flight.detached = True
        self._counters.invalidations["key", origin] += 1

    def _apply_tag(self, tag: str, version: int, origin: str) -> None:
        if tag == ALL_TAG:
            if version > self._all_version:
                self._all_version = version
            for flight in self._flights.values():
                flight.detached = True
            self._flights.clear()
        else:
            if version > self._tag_versions.get(tag, 0):
                self._tag_versions[tag] = version
            for k in [k for k, f in self._flights.items() if tag in f.tags]:
                self._flights.pop(k).detached = True
        self._serial += 1
        self._counters.invalidations["tag", origin] += 1

    def _bump_local(self) -> int:
        self._clock += 1
        return self._clock

    def _seen(self, version: int) -> None:
        if version > self._clock:
            self._clock = version

    def _pending_if_clustered(self, op: str, ident: str) -> None:
        if self.options.redis_url is not None:
            self._pending[(op, ident)] = None

    def _message(self, op: str, ident: str, *, ack: bool = False) -> Message:
        self._seq += 1
        return Message(op, ident, self.node_id, self._wall(), self._seq, ack=ack)

    # ------------------------------------------------------------------ acks

    def _expect_acks(self, seq: int) -> _AckWaiter:
        waiter: _AckWaiter = (set(), asyncio.Event())
        self._ack_waiters[seq] = waiter
        return waiter

    async def _await_acks(self, seq: int, timeout: float) -> AckResult:
        acked, changed = self._ack_waiters[seq]
        deadline = _monotonic() + timeout
        try:
            live = await self.live_nodes() - {self.node_id}
            while not live <= acked:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    break
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except TimeoutError:
                    break
            return AckResult(frozenset(acked & live), frozenset(live - acked))
        except (RedisError, OSError) as exc:
            self._l2_failed(exc)
            return AckResult(frozenset(acked), frozenset({UNREACHABLE}))
        finally:
            self._ack_waiters.pop(seq, None)

    def _unconfirmed(self) -> AckResult:
        return AckResult(frozenset(), frozenset({UNREACHABLE}))

    # ------------------------------------------------------------------ backplane

    async def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel == self._fill_channel_b:
            event = self._fill_waiters.get(data.decode())
            if event is not None:
                event.set()
            return
        if channel == self._ack_channel_b:
            self._on_ack(data)
            return
        if self._own_marker in data:
            return  # our own message (we wrote it, compactly): skip decoding it
        try:
            msg = decode_message(data)
        except MessageError as exc:
            log.warning("ignoring backplane message: %s", exc)
            return
        if msg.node == self.node_id:
            return
        self._counters.lag.observe(max(0.0, self._wall() - msg.ts))
        if msg.op in ("key", "tag"):
            last = self._peer_seq.get(msg.node)
            self._peer_seq[msg.node] = msg.seq
            if last is not None and msg.seq > last + 1 and self._subscription is not None:
                # Something from this sender never reached us.
                await self._resync("seq_gap")
            if msg.op == "key":
                self._drop_key_locally(msg.id, "remote")
            else:
                version = msg.ver if msg.ver is not None else self._bump_local()
                self._seen(version)
                self._apply_tag(msg.id, version, "remote")
        elif msg.op == "policy":
            await self._load_policy(msg.id)
        elif msg.op == "probe":
            await self._answer_probe(msg.id)
        if msg.ack and self._redis is not None:
            reply = orjson.dumps({"node": self.node_id, "to": msg.node, "seq": msg.seq})
            await self._redis.publish(self.keys.ack_channel, reply)

    def _on_ack(self, data: bytes) -> None:
        try:
            body = orjson.loads(data)
            if body["to"] != self.node_id:
                return
            waiter = self._ack_waiters.get(int(body["seq"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        if waiter is not None:
            waiter[0].add(str(body["node"]))
            waiter[1].set()

    async def _load_policy(self, data_type: str) -> None:
        assert self._redis is not None
        raw: bytes | None = await self._redis.hget(  # type: ignore[assignment]
            self.keys.policies, data_type)
        policy = self.policies.apply(data_type, raw)
        await self._redis.hset(self.keys.policy_acks(data_type), self.node_id,
                               str(policy.generation if policy is not None else 0))

    async def _answer_probe(self, probe_id: str) -> None:
        assert self._redis is not None
        key = self.keys.probe(probe_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, self.node_id, repr(self._wall()))
            pipe.expire(key, 300)
            await pipe.execute()

    def _flush(self) -> None:
        """Forget everything this node might have missed an invalidation for."""
        self._generation += 1
        self._serial += 1
        self._l1.clear()
        for flight in self._flights.values():
            flight.detached = True
        self._flights.clear()

    def _on_gap(self, reason: str) -> None:
        was_up = self._up
        self._up = False
        self._flush()
        if was_up:
            log.warning("backplane gap (%s): L1 flushed, running on L1 + factory", reason)

    async def _resync(self, reason: str) -> None:
        """After (re)subscribing: replay what we could not send, reload the
        invalidation state and policies from Redis, and start L1 afresh."""
        assert self._redis is not None
        self._flush()
        for (op, ident) in list(self._pending):
            if op == "key":
                await self._invalidate_key(
                    keys=self._key_script_keys(ident),
                    args=[self._message("key", ident).encode_open(),
                          int(self.options.invalidation_record_ttl * 1000),
                          self.keys.channel, b"", 0])
            else:
                await self._invalidate_tags(
                    keys=self._tag_script_keys,
                    args=[self.keys.channel, self._wall(), ident,
                          self._message("tag", ident).encode_open()])
            del self._pending[(op, ident)]
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.tags)
            pipe.get(self.keys.clock)
            pipe.hgetall(self.keys.policies)
            tags, clock, policies = await pipe.execute()
        self._tag_versions = {k.decode(): int(v) for k, v in tags.items()}
        self._all_version = self._tag_versions.pop(ALL_TAG, 0)
        self._clock = int(clock or 0)
        self._peer_seq.clear()
        self._flush()
        self._up = True
        if reason != "start":
            self._counters.resyncs[reason] += 1
        stored = {k.decode(): v for k, v in policies.items()}
        self.policies.replace_all(stored)
        for data_type in stored:
            policy = self.policies.get(data_type)
            await self._redis.hset(self.keys.policy_acks(data_type), self.node_id,
                                   str(policy.generation if policy else 0))
        await self._beat()

    def _l2_failed(self, exc: BaseException) -> None:
        self._counters.l2_errors += 1
        log.warning("redis operation failed: %s", exc)
        if self._up and self._subscription is not None:
            # We may have lost a write or an invalidation: treat it as a gap.
            self._on_gap("l2_error")
            self._subscription.force_gap()

    # ------------------------------------------------------------------ maintenance

    async def _l2_read(self, key: str, *, lease: bool,
                       skip_entry: bool = False) -> tuple[bytes | None, int, bool, bytes]:
        """One round trip: the entry, or else the clock (and epoch) a load
        starts at and, if asked, this key's lease."""
        res = await self._read(
            keys=[self.keys.entry(key) if not skip_entry else self.keys.prefix + "\x00none",
                  self.keys.clock, self.keys.lease(key), self.keys.epoch],
            args=[self.node_id if lease else "", int(self.options.lock_lease * 1000)],
        )
        if res[0] is not None:
            return res[0], 0, False, b""
        return None, int(res[1]), bool(res[2]), res[3]

    def _key_script_keys(self, key: str) -> list[str]:
        k = self.keys
        return [k.key_mark(key), k.clock, k.entry(key), k.epoch]

    @property
    def _tag_script_keys(self) -> list[str]:
        k = self.keys
        return [k.tags, k.clock, k.tag_times, k.epoch]

    def _fill_waiter(self, key: str) -> asyncio.Event:
        event = self._fill_waiters.get(key)
        if event is None:
            event = self._fill_waiters[key] = asyncio.Event()
        return event

    async def _release_lease(self, key: str) -> None:
        if self._redis is None:
            return
        try:
            await self._release(keys=[self.keys.lease(key)],
                                args=[self.node_id, self.keys.fill_channel, key])
        except (RedisError, OSError) as exc:
            self._l2_failed(exc)

    def _liveness_window(self) -> float:
        return max(10.0, 3 * self.options.heartbeat_interval)

    async def _beat(self) -> None:
        assert self._redis is not None
        await self._heartbeat(keys=[self.keys.nodes],
                              args=[self.node_id, self._liveness_window()])

    async def _publish_stats(self) -> None:
        assert self._redis is not None
        fields: dict[str, int] = {}
        for data_type, s in self._type_stats.items():
            fields[f"l1_hit:{data_type}"] = s.l1_hit
            fields[f"l1_miss:{data_type}"] = s.l1_miss
            fields[f"l2_hit:{data_type}"] = s.l2_hit
            fields[f"l2_miss:{data_type}"] = s.l2_miss
            fields[f"factory:{data_type}"] = s.factory
        if not fields:
            return
        key = self.keys.stats(self.node_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            pipe.expire(key, max(1, int(3 * self.options.stats_interval)))
            await pipe.execute()

    async def _maintain(self) -> None:
        """Heartbeat, counters for the operator, pruning of old tag records."""
        last_stats = last_prune = 0.0
        # Not `while True`: redis-py can turn a cancellation that lands inside
        # a command into a ConnectionError, which this loop would survive.
        while not self._closing:
            await asyncio.sleep(self.options.heartbeat_interval)
            if not self._up:
                continue
            now = _monotonic()
            try:
                await self._beat()
                if now - last_stats >= self.options.stats_interval:
                    last_stats = now
                    await self._publish_stats()
                if now - last_prune >= 60.0:
                    last_prune = now
                    await self._prune(keys=[self.keys.tags, self.keys.tag_times],
                                      args=[self._wall() - self.options.invalidation_record_ttl])
                    await self._refresh_tag_table()
            except (RedisError, OSError) as exc:
                self._l2_failed(exc)

    async def _refresh_tag_table(self) -> None:
        """Bound the local tag table by Redis's (which forgets invalidations
        older than ``invalidation_record_ttl``), and repair any divergence.

        The table and the clock are read atomically: a local record above that
        clock arrived after the snapshot and is kept; one at or below it that
        Redis no longer has was pruned there, and no entry can still need it.
        """
        assert self._redis is not None
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.tags)
            pipe.get(self.keys.clock)
            tags, clock = await pipe.execute()
        snapshot = int(clock or 0)
        fresh = {k.decode(): int(v) for k, v in tags.items()}
        fresh.pop(ALL_TAG, None)
        for tag, version in self._tag_versions.items():
            known = fresh.get(tag)
            if known is None:
                if version > snapshot:  # arrived after the snapshot
                    fresh[tag] = version
            elif version > known:
                fresh[tag] = version
        self._tag_versions = fresh

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background cache task failed: %s", task.exception())
