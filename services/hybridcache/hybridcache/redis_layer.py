"""L2: every Redis call the cache makes, its registered scripts, the lease,
and the one place a failed Redis call is handled.

Nothing above this module talks to redis-py. A failed call is reported once,
through ``failed`` (counted, logged, and, while the cache is connected,
turned into a backplane gap, since a write or an invalidation may have been
lost); callers wrap calls in ``with l2.guard() as call:`` and read
``call.failed`` to choose their fallback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from . import scripts
from .keys import Keys
from .options import CacheOptions
from .redis_pool import BoundedConnectionPool
from .stats import CacheCounters
from .tasks import Background

log = logging.getLogger("hybridcache")

L2_ERRORS = (RedisError, OSError)


class Read(NamedTuple):
    """The READ script's answer: the entry, or else the clock (and epoch) a
    load starts at and whether this node got the key's lease."""

    raw: bytes | None
    clock: int
    leased: bool
    epoch: bytes


class Guard:
    """Swallows a Redis failure inside its block after reporting it once."""

    __slots__ = ("_layer", "failed")

    def __init__(self, layer: RedisLayer) -> None:
        self._layer = layer
        self.failed = False

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if isinstance(exc, L2_ERRORS):
            self._layer.failed(exc)
            self.failed = True
            return True
        return False


class Lease:
    """This node's claim on loading one key for the whole cluster.

    Entered around every phase of a load that may hold it (asking for it in
    the READ script, running the factory, storing); when the last block
    exits with the lease still held, it is given back here and nowhere else:
    awaited after a clean end (waiters on other nodes wake before the caller
    returns), in the background after an error, a cancellation or a lost
    connection (the caller must not wait on a failing Redis). ``SET_IF_FRESH``
    releases it inside Redis: ``consumed()`` records that."""

    __slots__ = ("_errored", "_layer", "_users", "held", "key")

    def __init__(self, layer: RedisLayer, key: str) -> None:
        self._layer = layer
        self.key = key
        self.held = False  # from asking for it until it is given back
        self._users = 0
        self._errored = False

    def consumed(self) -> None:
        self.held = False

    async def __aenter__(self) -> Lease:
        self._users += 1
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._users -= 1
        self._errored |= exc is not None
        if self._users or not self.held:
            return
        self.held = False
        layer = self._layer
        if self._errored or not layer.up:
            layer.background.spawn(layer.release(self.key))
        else:
            await layer.release(self.key)


class RedisLayer:
    """The Redis connections of one cache and every command it sends."""

    def __init__(self, options: CacheOptions, keys: Keys, counters: CacheCounters,
                 background: Background) -> None:
        self.options = options
        self.keys = keys
        self.node_id = options.node_id
        self.counters = counters
        self.background = background
        self.up = False  # L2 and the backplane usable
        self.on_lost: Callable[[str], None] | None = None  # told when `up` may be wrong
        self.client: aioredis.Redis | None = None
        self.pubsub_client: aioredis.Redis | None = None
        self._lease_ms = int(options.lock_lease * 1000)
        self._record_ms = int(options.invalidation_record_ttl * 1000)

    # ------------------------------------------------------------ connections

    def connect(self, url: str) -> None:
        timeout = self.options.socket_timeout
        # One immediate retry (a pooled connection may be stale after a Redis
        # restart), never redis-py's default backoff of seconds: a cache must
        # fail fast and fall back to the source.
        pool = BoundedConnectionPool.from_url(
            url, max_connections=self.options.max_connections,
            socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self.client = client = aioredis.Redis.from_pool(pool)  # owns the pool
        self._read = client.register_script(scripts.READ)
        self._set_if_fresh = client.register_script(scripts.SET_IF_FRESH)
        self._release = client.register_script(scripts.RELEASE)
        self._invalidate_key = client.register_script(scripts.INVALIDATE_KEY)
        self._invalidate_tags = client.register_script(scripts.INVALIDATE_TAGS)
        self._heartbeat = client.register_script(scripts.HEARTBEAT)
        self._prune = client.register_script(scripts.PRUNE_TAGS)
        # The backplane has a connection of its own, outside the bounded pool:
        # a burst of misses must never delay (or starve) the subscription.
        # No retry at all here: a silent reconnect inside redis-py would hide
        # exactly the gap (lost messages) the subscription loop must see.
        self.pubsub_client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0))

    async def close(self) -> None:
        if self.client is not None:
            if self.up:
                try:
                    await asyncio.wait_for(self.client.zrem(self.keys.nodes, self.node_id), 1.0)
                except (*L2_ERRORS, TimeoutError):
                    pass
            await self.client.aclose()
        if self.pubsub_client is not None:
            await self.pubsub_client.aclose()
        self.up = False
        self.client = self.pubsub_client = None

    @property
    def _redis(self) -> aioredis.Redis:
        assert self.client is not None, "not connected"
        return self.client

    # ------------------------------------------------------------ failures

    def guard(self) -> Guard:
        return Guard(self)

    def failed(self, exc: BaseException) -> None:
        self.counters.l2_errors += 1
        log.warning("redis operation failed: %s", exc)
        if self.up and self.on_lost is not None:
            self.on_lost("l2_error")

    # ------------------------------------------------------------ entries

    async def get_entry(self, key: str) -> bytes | None:
        """A plain GET: most L2 reads are hits, and a hit needs nothing more."""
        return await self._redis.get(self.keys.entry(key))  # type: ignore[return-value]

    async def read(self, key: str, *, lease: bool, skip_entry: bool = False) -> Read:
        """One round trip: the entry, or else the clock (and epoch) a load
        starts at and, if asked, this key's lease."""
        k = self.keys
        res = await self._read(
            keys=[k.entry(key) if not skip_entry else k.prefix + "\x00none",
                  k.clock, k.lease(key), k.epoch],
            args=[self.node_id if lease else "", self._lease_ms],
        )
        if res[0] is not None:
            return Read(res[0], 0, False, b"")
        return Read(None, int(res[1]), bool(res[2]), res[3])

    async def set_if_fresh(self, key: str, entry: bytes, version: int, ttl: float,
                           lease: Lease | None, epoch: bytes, tags: tuple[str, ...]) -> bool:
        """Store a loaded entry unless its key or a tag was invalidated after
        ``version``; also gives back ``lease`` (inside the same script)."""
        k = self.keys
        leased = lease is not None and lease.held
        fresh = bool(await self._set_if_fresh(
            keys=[k.entry(key), k.key_mark(key), k.tags, k.lease(key), k.epoch],
            args=[entry, version, int(ttl * 1000), self.node_id if leased else "",
                  k.fill_channel, key, epoch, *tags],
        ))
        if leased:
            lease.consumed()  # type: ignore[union-attr]
        return fresh

    def lease(self, key: str) -> Lease:
        return Lease(self, key)

    async def release(self, key: str) -> None:
        """Give a lease back without a value, waking the waiters."""
        if self.client is None:
            return
        with self.guard():
            await self._release(keys=[self.keys.lease(key)],
                                args=[self.node_id, self.keys.fill_channel, key])

    # ------------------------------------------------------------ invalidation

    async def invalidate_key(self, key: str, message_open: bytes, tail: bytes = b"",
                             ttl: float = 0.0) -> int:
        """New version for ``key``, published; ``tail`` (an encoded entry
        after its version) stores a new value at that version."""
        k = self.keys
        return int(await self._invalidate_key(
            keys=[k.key_mark(key), k.clock, k.entry(key), k.epoch],
            args=[message_open, self._record_ms, k.channel, tail, int(ttl * 1000)]))

    async def invalidate_tags(self, tagged_messages: list[tuple[str, bytes]],
                              now: float) -> int:
        """One new version for every tag, one message each."""
        k = self.keys
        args: list[Any] = [k.channel, now]
        for tag, message_open in tagged_messages:
            args += [tag, message_open]
        return int(await self._invalidate_tags(
            keys=[k.tags, k.clock, k.tag_times, k.epoch], args=args))

    async def tag_table(self) -> tuple[dict[str, int], int]:
        """The recorded tag versions and the clock, read atomically."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.tags)
            pipe.get(self.keys.clock)
            tags, clock = await pipe.execute()
        return {t.decode(): int(v) for t, v in tags.items()}, int(clock or 0)

    async def cluster_state(self) -> tuple[dict[str, int], int, dict[str, bytes]]:
        """Tag versions, clock and stored policies, read atomically."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.tags)
            pipe.get(self.keys.clock)
            pipe.hgetall(self.keys.policies)
            tags, clock, policies = await pipe.execute()
        return ({t.decode(): int(v) for t, v in tags.items()}, int(clock or 0),
                {d.decode(): raw for d, raw in policies.items()})

    async def prune_tags(self, cutoff: float) -> None:
        await self._prune(keys=[self.keys.tags, self.keys.tag_times], args=[cutoff])

    # ------------------------------------------------------------ the node

    def liveness_window(self) -> float:
        return max(10.0, 3 * self.options.heartbeat_interval)

    async def heartbeat(self) -> None:
        await self._heartbeat(keys=[self.keys.nodes],
                              args=[self.node_id, self.liveness_window()])

    async def live_nodes(self) -> frozenset[str]:
        nodes = await self._heartbeat(keys=[self.keys.nodes],
                                      args=["", self.liveness_window()])
        return frozenset(n.decode() for n in nodes)

    async def publish(self, channel: str, data: bytes) -> None:
        await self._redis.publish(channel, data)

    async def policy(self, data_type: str) -> bytes | None:
        return await self._redis.hget(self.keys.policies, data_type)  # type: ignore[return-value]

    async def ack_policy(self, data_type: str, generation: int) -> None:
        await self._redis.hset(self.keys.policy_acks(data_type), self.node_id, str(generation))

    async def answer_probe(self, probe_id: str, now: float) -> None:
        key = self.keys.probe(probe_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, self.node_id, repr(now))
            pipe.expire(key, 300)
            await pipe.execute()

    async def publish_stats(self, fields: Mapping[str, int], ttl: int) -> None:
        key = self.keys.stats(self.node_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            pipe.expire(key, ttl)
            await pipe.execute()
