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
from typing import Any, NamedTuple, TypeVar

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.event import EventDispatcher
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from . import cluster_scripts, scripts
from .keys import Keys
from .options import CacheOptions
from .redis_clients import AnyRedis, RedisConnector
from .redis_pool import OwningSentinelPool
from .redis_topology import PrimaryWatch
from .redis_url import parse_redis_url
from .stats import CacheCounters
from .tasks import Background

log = logging.getLogger("hybridcache")
_T = TypeVar("_T")



class BadReply(RedisError):
    """Redis answered with something of the wrong shape (a key deleted or
    overwritten by hand, a planted value). A Redis failure like any other:
    it goes through ``failed`` (a miss, and a resync), never to the caller."""


# redis-py's cluster client raises some errors outside RedisError (a slot no
# master serves, during a failover): Redis failures all the same.
L2_ERRORS = (RedisError, OSError, RedisClusterException)


class BatchGroup(NamedTuple):
    """One invalidation inside a batch: a key (``tail``: a new entry stored at
    its version, b"" to remove it) or tags invalidated at one version."""

    key: str | None
    tags: tuple[str, ...] = ()
    tail: bytes = b""
    ttl: float = 0.0


class Read(NamedTuple):
    """The READ script's answer: the entry (if any), the clock (the version a
    load starts at, and the ceiling of any honest entry's version), whether
    this node got the key's lease, and the epoch."""

    raw: bytes | None
    clock: int
    leased: bool
    epoch: bytes


class Heartbeat(NamedTuple):
    """The HEARTBEAT script's answer: the epoch, Redis's time, and the
    members (nodes that heartbeated within the membership window) with the
    Redis time of their last heartbeat."""

    epoch: bytes
    time: float
    # None: unchanged since the ``seen`` the caller passed (see HEARTBEAT).
    members: dict[str, float] | None
    replaced: bool  # this epoch replaced a state Redis lost (not a first start)
    seen: bytes  # the membership's '<epoch>:<changes>', to pass next time


def _parse(what: str, parse: Callable[[], _T]) -> _T:
    """Run ``parse`` over a reply; any shape it did not expect is a BadReply."""
    try:
        return parse()
    except (TypeError, ValueError, IndexError, KeyError, AttributeError,
            UnicodeDecodeError) as exc:
        raise BadReply(f"unexpected reply to {what}: {exc!r}") from None


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
        self.client: AnyRedis | None = None
        self.pubsub_client: AnyRedis | None = None
        self.control_client: AnyRedis | None = None
        self.connector: RedisConnector | None = None
        # The epoch of the invalidation state this node trusts (b"": none
        # yet); a script reporting another one means Redis lost its state.
        self.epoch = b""
        self.epoch_start = 0  # the epoch as a version: older entries are refused
        # L2 entries below this version are refused (a miss): the epoch's
        # start, raised on a cluster when a shard changed masters (its
        # entries may have lost removals) to the clock read after the
        # change; infinite from the change until then.
        self.entry_floor = 0.0
        self.cluster = False  # Redis Cluster: split scripts, sharded pub/sub
        self._topology: PrimaryWatch | None = None
        self._topology_changes = 0
        self.floor: Callable[[], int] = lambda: 0  # highest version this node has seen
        self.replaced_epoch = b""  # an epoch this node saw replace the one it knew
        self._lease_ms = int(options.lock_lease * 1000)
        self._record_ms = int(options.invalidation_record_ttl * 1000)

    # ------------------------------------------------------------ connections

    def connect(self, url: str) -> None:
        """Open the clients (lazily: nothing is sent yet) for ``url``, one
        server or a Sentinel-managed master (redis_url.py has the forms);
        every client follows a failover by looking the master up again on
        reconnect."""
        timeout = self.options.socket_timeout
        target = parse_redis_url(url)
        self.cluster = cluster = target.mode == "cluster"
        assert self.keys.cluster == cluster, "Keys layout does not match the URL's mode"
        self.connector = connector = RedisConnector(target, socket_timeout=timeout)
        # One immediate retry (a pooled connection may be stale after a Redis
        # restart), never redis-py's default backoff of seconds: a cache must
        # fail fast and fall back to the source.
        # On a cluster, the data client's topology refreshes are watched.
        dispatcher = EventDispatcher() if cluster else None
        self.client = client = connector.client(
            max_connections=self.options.max_connections,
            socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            **({"event_dispatcher": dispatcher} if cluster else {}),
        )
        lua = cluster_scripts if cluster else scripts
        if cluster:
            self._read_state = client.register_script(cluster_scripts.READ_STATE)
            self._read_entry = client.register_script(cluster_scripts.READ_ENTRY)
            self._check_fresh = client.register_script(cluster_scripts.CHECK_FRESH)
            self._store_entry = client.register_script(cluster_scripts.STORE_ENTRY)
            self._entry_invalidate = client.register_script(cluster_scripts.ENTRY_INVALIDATE)
            self._invalidate_key = client.register_script(cluster_scripts.INVALIDATE_KEY_STATE)
            self._invalidate_batch = client.register_script(
                cluster_scripts.INVALIDATE_BATCH_STATE)
            self._release = client.register_script(cluster_scripts.RELEASE)
            # A shard changing masters may have lost removals of entries.
            assert dispatcher is not None
            assert isinstance(client, RedisCluster)
            self._topology = PrimaryWatch(client, dispatcher, self._primaries_changed)
        else:
            self._read = client.register_script(scripts.READ)
            self._set_if_fresh = client.register_script(scripts.SET_IF_FRESH)
            self._release = client.register_script(scripts.RELEASE)
            self._invalidate_key = client.register_script(scripts.INVALIDATE_KEY)
            self._invalidate_batch = client.register_script(scripts.INVALIDATE_BATCH)
        self._invalidate_tags = client.register_script(lua.INVALIDATE_TAGS)
        # Heartbeats renew the backplane lease: they get a connection of
        # their own, so a burst of misses queued on the bounded pool can
        # never starve them (and expire the lease, flushing L1, under load).
        self.control_client = connector.client(
            socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1))
        self._heartbeat = self.control_client.register_script(lua.HEARTBEAT)
        self._leave = client.register_script(lua.LEAVE)
        self._prune = client.register_script(lua.PRUNE)
        self._snapshot = client.register_script(lua.SNAPSHOT)
        # The backplane has a connection of its own, outside the bounded pool:
        # a burst of misses must never delay (or starve) the subscription.
        # No retry at all here: a silent reconnect inside redis-py would hide
        # exactly the gap (lost messages) the subscription loop must see.
        # Each resubscription opens a new connection (the old one is closed
        # with its pub/sub), so on Sentinel it lands on the current master.
        self.pubsub_client = connector.client(
            socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0))

    async def close(self) -> None:
        if self._topology is not None:
            self._topology.close()
            self._topology = None
        if self.client is not None:
            if self.up:
                try:
                    await asyncio.wait_for(self._leave(keys=[self.keys.state, self.keys.nodes],
                                                       args=[self.node_id]), 1.0)
                except (*L2_ERRORS, TimeoutError):
                    pass
            await self.client.aclose()
        if self.pubsub_client is not None:
            await self.pubsub_client.aclose()
        if self.control_client is not None:
            await self.control_client.aclose()
        if self.connector is not None:
            await self.connector.aclose()
        self.up = False
        self.client = self.pubsub_client = self.control_client = None
        self.connector = None

    @property
    def _redis(self) -> AnyRedis:
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

    def trust_epoch(self, epoch: bytes) -> None:
        """Take ``epoch`` as the one this node's L1 and tag table belong to
        (after a resync)."""
        if self.epoch and epoch != self.epoch:
            self.replaced_epoch = epoch
        self.epoch = epoch
        self.epoch_start = int(epoch)
        self.entry_floor = max(self.entry_floor, self.epoch_start)

    def _primaries_changed(self) -> None:
        """Cluster: some slot has another master than when this node last
        looked (a failover, or a slot migrated). The new master may lack
        removals (replication is asynchronous), so L2 entries are refused
        from now until a resync has read the clock, then the older ones
        stay refused: misses, reloaded at current versions."""
        log.warning("redis cluster topology changed: refusing older L2 entries, resyncing")
        self._topology_changes += 1
        self.entry_floor = float("inf")
        if self.on_lost is not None:
            self.on_lost("topology")

    def _check_epoch(self, epoch: bytes) -> None:
        """A script saw another epoch: Redis lost (part of) its invalidation
        state since this node last synchronised; what this node holds may
        rest on records that are gone. Treated as a gap (flush, resync)."""
        if epoch != self.epoch and self.epoch:
            self.replaced_epoch = epoch
        if epoch != self.epoch and self.epoch and self.up:
            log.warning("redis invalidation state was lost (epoch %s -> %s): resyncing",
                        self.epoch.decode(), epoch.decode(errors="replace"))
            if self.on_lost is not None:
                self.on_lost("epoch")

    def _state_keys(self) -> list[str]:
        return [self.keys.state, self.keys.marks, self.keys.nodes]

    # ------------------------------------------------------------ entries

    async def get_entry(self, key: str) -> bytes | None:
        """A plain GET: most L2 reads are hits, and a hit needs nothing more."""
        return await self._redis.get(self.keys.entry(key))  # type: ignore[return-value]

    async def read(self, key: str, *, lease: bool, skip_entry: bool = False) -> Read:
        """One round trip: the entry (unless skipped), the clock and epoch a
        load starts at and, if there is no entry and it is asked for, this
        key's lease."""
        k = self.keys
        if self.cluster:
            return await self._cluster_read(key, lease=lease, skip_entry=skip_entry)
        res = await self._read(
            keys=[*self._state_keys(),
                  k.entry(key) if not skip_entry else k.prefix + "\x00none", k.lease(key)],
            args=[self.floor(), self.node_id if lease else "", self._lease_ms],
        )
        read = _parse("READ", lambda: Read(
            _bytes_or_none(res[0]), int(res[1]), bool(res[2]), _bytes(res[3])))
        self._check_epoch(read.epoch)
        return read

    async def _cluster_read(self, key: str, *, lease: bool, skip_entry: bool) -> Read:
        """READ on a cluster: the clock and epoch from the state slot first
        (a load's version is never above what was true when it read the
        source), then the entry and the lease from the entry's slot."""
        k = self.keys
        state = await self._read_state(keys=self._state_keys(), args=[self.floor()])
        clock, epoch = _parse("READ_STATE", lambda: (int(state[0]), _bytes(state[1])))
        self._check_epoch(epoch)
        res = await self._read_entry(
            keys=[k.entry(key), k.lease(key)],
            args=[self.node_id if lease else "", self._lease_ms, "1" if skip_entry else ""])
        return _parse("READ_ENTRY", lambda: Read(
            _bytes_or_none(res[0]), clock, bool(res[1]), epoch))

    async def _cluster_set_if_fresh(self, key: str, entry: bytes, version: int, ttl: float,
                                    lease: Lease | None, leased: bool, epoch: bytes,
                                    tags: tuple[str, ...]) -> bool:
        """SET_IF_FRESH on a cluster: the state slot's verdict, then the
        entry slot's (its mark), the store and the lease in one script
        there, then the fill notice (cluster_scripts explains the order)."""
        k = self.keys
        fresh = await self._check_fresh(keys=[k.state, k.marks],
                                        args=[version, key, epoch, *tags])
        res = await self._store_entry(
            keys=[k.entry(key), k.lease(key), k.mark(key)],
            args=[entry, version, int(ttl * 1000), self.node_id if leased else "",
                  "1" if fresh else "0"])
        if lease is not None and leased:
            lease.consumed()  # given back by STORE_ENTRY (or no longer ours)
        stored, released = _parse("STORE_ENTRY", lambda: (bool(res[0]), bool(res[1])))
        if released:
            await self._redis.spublish(k.fill_channel_for(key), key)
        return stored

    async def set_if_fresh(self, key: str, entry: bytes, version: int, ttl: float,
                           lease: Lease | None, epoch: bytes, tags: tuple[str, ...]) -> bool:
        """Store a loaded entry unless its key or a tag was invalidated after
        ``version``; also gives back ``lease`` (inside the same script)."""
        k = self.keys
        leased = lease is not None and lease.held
        if self.cluster:
            # A failure before STORE_ENTRY ran leaves the lease held: given
            # back by the Lease (in the background), as after SET_IF_FRESH.
            return await self._cluster_set_if_fresh(key, entry, version, ttl, lease, leased,
                                                    epoch, tags)
        fresh = bool(await self._set_if_fresh(
            keys=[k.state, k.marks, k.entry(key), k.lease(key)],
            args=[entry, version, int(ttl * 1000), self.node_id if leased else "",
                  k.fill_channel_for(key), key, epoch, *tags],
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
            k = self.keys
            if self.cluster:
                if await self._release(keys=[k.lease(key)], args=[self.node_id]):
                    await self._redis.spublish(k.fill_channel_for(key), key)
                return
            await self._release(keys=[k.lease(key)],
                                args=[self.node_id, k.fill_channel_for(key), key])

    # ------------------------------------------------------------ invalidation

    async def invalidate_key(self, key: str, message_open: bytes, tail: bytes = b"",
                             ttl: float = 0.0) -> int:
        """New version for ``key``, published; ``tail`` (an encoded entry
        after its version) stores a new value at that version."""
        k = self.keys
        if self.cluster:
            res = await self._invalidate_key(
                keys=[*self._state_keys(), k.mark_times], args=[self.floor(), message_open, key])
            version = self._versioned("INVALIDATE_KEY_STATE", res)
            message = _parse("INVALIDATE_KEY_STATE", lambda: _bytes(res[2]))
            await self._entry_invalidated(key, version, tail, ttl)
            await self._redis.spublish(k.channel, message)
            return version
        res = await self._invalidate_key(
            keys=[*self._state_keys(), k.mark_times, k.entry(key)],
            args=[self.floor(), message_open, k.channel, tail, int(ttl * 1000), key])
        return self._versioned("INVALIDATE_KEY", res)

    async def _entries_invalidated(self, items: list[tuple[str, int, bytes, float]]) -> None:
        """The entry halves of a batch's key groups in one pipeline: redis-py
        sends each master its share in one round trip, where a call per key
        cost a round trip and a pass through the cluster client each (a
        third of the batch's time). redis-py's pipeline refuses its
        ``evalsha`` method on a cluster; the command itself is routed by its
        keys like any other (each call's keys are in one slot). A master
        that does not know the script yet (just promoted) gets the calls
        one by one, which load it."""
        if len(items) <= 1:
            for item in items:
                await self._entry_invalidated(*item)
            return
        k, sha = self.keys, self._entry_invalidate.sha
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, version, tail, ttl in items:
                    pipe.execute_command("EVALSHA", sha, 2, k.entry(key), k.mark(key),
                                         version, tail, int(ttl * 1000), self._record_ms)
                await pipe.execute()
        except NoScriptError:
            await asyncio.gather(*(self._entry_invalidated(*item) for item in items))

    async def _entry_invalidated(self, key: str, version: int, tail: bytes,
                                 ttl: float) -> None:
        """Cluster: the entry half of a key removal or set (its mark, then
        the entry deleted or replaced), before the message goes out."""
        k = self.keys
        await self._entry_invalidate(
            keys=[k.entry(key), k.mark(key)],
            args=[version, tail, int(ttl * 1000), self._record_ms])

    async def invalidate_tags(self, tagged_messages: list[tuple[str, bytes]]) -> int:
        """One new version for every tag, one message each."""
        k = self.keys
        args: list[Any] = [self.floor(), k.channel]
        for tag, message_open in tagged_messages:
            args += [tag, message_open]
        res = await self._invalidate_tags(keys=[*self._state_keys(), k.tag_times], args=args)
        return self._versioned("INVALIDATE_TAGS", res)

    async def invalidate_batch(self, envelope: bytes, groups: list[BatchGroup]) -> list[int]:
        """Several invalidation groups, each at its own version, in order,
        published as one batch message (``envelope``: wire.encode_batch_open)."""
        k = self.keys
        keys = [*self._state_keys(), k.mark_times, k.tag_times]
        args: list[Any] = [self.floor(), k.channel, envelope]
        for group in groups:
            if group.key is not None:
                keys.append(k.entry(group.key))
                args += ["k", group.key, orjson.dumps(group.key), group.tail,
                         int(group.ttl * 1000)]
            else:
                args += ["t", len(group.tags)]
                for tag in group.tags:
                    args += [tag, orjson.dumps(tag)]
        if self.cluster:
            keys = keys[:5]  # the entries are written by the entry half
        res = await self._invalidate_batch(keys=keys, args=args)

        def parse() -> tuple[list[int], bytes]:
            versions = [int(v) for v in res[0]]
            if len(versions) != len(groups):
                raise ValueError(f"{len(versions)} versions for {len(groups)} groups")
            return versions, _bytes(res[1])

        versions, epoch = _parse("INVALIDATE_BATCH", parse)
        self._check_epoch(epoch)
        if self.cluster:
            message = _parse("INVALIDATE_BATCH_STATE", lambda: _bytes(res[2]))
            # Each key's entry half, all done before the message is published.
            await self._entries_invalidated([
                (group.key, version, group.tail, group.ttl)
                for group, version in zip(groups, versions, strict=True)
                if group.key is not None])
            await self._redis.spublish(k.channel, message)
        return versions

    def _versioned(self, what: str, res: Any) -> int:
        version, epoch = _parse(what, lambda: (int(res[0]), _bytes(res[1])))
        self._check_epoch(epoch)
        return version

    async def follow_master(self) -> None:
        """On Sentinel, make the data and heartbeat connections follow the
        sentinels' current master (the subscription does on its own: it
        opens a new connection each time). One server: nothing to do."""
        for client in (self.client, self.control_client):
            pool = getattr(client, "connection_pool", None)  # a cluster has none
            if isinstance(pool, OwningSentinelPool):
                await pool.follow_master()

    async def snapshot(self) -> tuple[bytes, int, dict[str, int]]:
        """The epoch, the clock and the tag versions, read atomically (a new
        epoch is started if the state was lost). It starts every resync and
        tag-table refresh, so on Sentinel the clients first check which
        server is the master: a subscription on the new master and
        heartbeats on a demoted one would never hear their echo."""
        await self.follow_master()
        changes = self._topology_changes
        res = await self._snapshot(keys=self._state_keys(), args=[self.floor()])

        def parse() -> tuple[bytes, int, dict[str, int]]:
            epoch, flat = _bytes(res[0]), res[1]
            fields = {_bytes(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
            tags = {name[2:].decode(): int(v) for name, v in fields.items()
                    if name.startswith(b"t:")}
            return epoch, int(fields[b"clock"]), tags

        epoch, clock, tags = _parse("SNAPSHOT", parse)
        if self.entry_floor == float("inf") and changes == self._topology_changes:
            # Cluster: a shard changed masters before this snapshot began,
            # none since. A removal it lost was made before the change, at
            # a version below this clock; an entry at or above it was
            # loaded after the change. (A change during the snapshot keeps
            # the refusal: the resync it forces comes after.)
            self.entry_floor = max(clock, self.epoch_start)
        return epoch, clock, tags

    async def stored_policies(self) -> dict[str, bytes]:
        policies = await self._redis.hgetall(self.keys.policies)
        return _parse("HGETALL policies", lambda: {
            _bytes(d).decode(): _bytes(raw) for d, raw in policies.items()})

    async def prune(self) -> None:
        """Drop invalidation records older than the record TTL (Redis's clock)."""
        k = self.keys
        await self._prune(keys=[k.state, k.marks, k.tag_times, k.mark_times],
                          args=[int(self.options.invalidation_record_ttl)])

    # ------------------------------------------------------------ the node

    def membership_window(self) -> float:
        """How long a node stays a member after its last heartbeat: longer
        than the backplane lease, so a node that may still serve from L1 is
        always a member (waited for by acknowledged writes)."""
        return max(10.0, 3 * self.options.heartbeat_interval,
                   2 * self.options.backplane_lease + self.options.heartbeat_interval)

    async def heartbeat(self, beat: bool = True, token: int = 0,
                        seen: bytes = b"") -> Heartbeat:
        """Record this node's heartbeat (``beat``; Redis echoes ``token`` on
        the node's heartbeat channel) or only read the members. With
        ``seen`` (a previous answer's), the members come back only if they
        changed since (None otherwise): periodic heartbeats stay O(1) in
        the fleet's size; an acknowledged write passes nothing and reads them."""
        k = self.keys
        res = await self._heartbeat(
            keys=self._state_keys(),
            args=[self.floor(), self.node_id if beat else "", self.membership_window(),
                  k.heartbeat_channel(self.node_id) if beat else "", token, seen])

        def parse() -> Heartbeat:
            flat = res[2]
            members = None if flat is None else {
                _bytes(flat[i]).decode(): float(flat[i + 1]) for i in range(0, len(flat), 2)}
            return Heartbeat(_bytes(res[0]), float(res[1]), members,
                             bool(res[3]) or res[0] == self.replaced_epoch, _bytes(res[4]))

        hb = _parse("HEARTBEAT", parse)
        self._check_epoch(hb.epoch)
        return hb

    async def maxmemory_policy(self) -> str | None:
        """The server's eviction policy, or None if it cannot be read. Read
        from ``INFO memory`` rather than ``CONFIG GET``: a least-privilege ACL
        user may be allowed INFO, but CONFIG GET would also reveal secrets."""
        try:
            reply = await self._redis.info("memory")
        except L2_ERRORS:
            return None
        value = reply.get("maxmemory_policy") if isinstance(reply, dict) else None
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        return value if isinstance(value, str) else None

    async def publish(self, channel: str, data: bytes) -> None:
        if self.cluster:
            await self._redis.spublish(channel, data)
        else:
            await self._redis.publish(channel, data)

    async def policy(self, data_type: str) -> bytes | None:
        return await self._redis.hget(self.keys.policies, data_type)  # type: ignore[return-value]

    async def ack_policy(self, data_type: str, generation: int) -> None:
        """Record the generation of ``data_type``'s policy applied here."""
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


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    raise TypeError(f"expected bytes, got {type(value).__name__}")


def _bytes_or_none(value: Any) -> bytes | None:
    return None if value is None else _bytes(value)
