"""The subscription side of the backplane: one pub/sub connection per node.

Pub/sub keeps nothing for a subscriber that is away, so this loop never trusts
that it heard everything: every (re)subscribe, every silence longer than
``heartbeat_timeout`` and every jump in a sender's ``seq`` is a gap, after
which the cache flushes L1 and reloads invalidation state from Redis
(``on_connected``) before anything is served from L1 again.

The receive path is lean on purpose: every replica hears every invalidation
of the cluster, so its cost per message bounds the cluster's write rate.
redis-py opens the connection (URL forms, TLS, AUTH, SELECT, whatever
pool the client was built with); then the transport's protocol is swapped
for ``_Stream``, which feeds hiredis's Reader and hands each message to the
handler inside ``data_received``: no task switch, no await, no dict per
message. A handler that needs to await (a resync, a policy load, an ack)
returns that work; parsing holds (later messages wait, in order) until the
listen task has awaited it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from .keys import Keys

log = logging.getLogger("hybridcache.backplane")

# (channel, data) -> None, or work to await before the next message is handled.
Handler = Callable[[bytes, bytes], Awaitable[None] | None]
_PING = b"*1\r\n$4\r\nPING\r\n"


# Stands in ``AckResult.missing`` when Redis could not be reached at all, so
# nobody could be asked (the invalidation is applied locally and replayed later).
UNREACHABLE = "redis-unreachable"
# Stands in ``AckResult.missing`` when Redis lost its membership (a new epoch)
# so recently that a node it forgot may still be serving from L1.
UNKNOWN_MEMBERS = "members-unknown"


@dataclass(frozen=True, slots=True)
class AckResult:
    """Who confirmed an invalidation sent with ``ack_timeout``. ``missing`` are
    live nodes that did not confirm in time (empty: every replica did), or
    ``UNREACHABLE`` when Redis could not be reached."""

    acked: frozenset[str]
    missing: frozenset[str]
    # Members that did not confirm but whose backplane lease provably ran
    # out meanwhile: they flushed L1 and serve nothing stale, so they are
    # not missing.
    expired: frozenset[str] = frozenset()

    @property
    def complete(self) -> bool:
        return not self.missing


class GapError(Exception):
    """The subscription went silent or a message was missed."""


class _Stream(asyncio.Protocol):
    """The subscription connection's bytes, parsed by hiredis."""

    def __init__(self, handler: Handler, clock: Callable[[], float],
                 sharded: bool = False) -> None:
        self.reader = hiredis.Reader()
        # Sharded pub/sub (Redis Cluster) names its replies with an "s".
        self.kind = b"smessage" if sharded else b"message"
        self.subscribed_kind = b"ssubscribe" if sharded else b"subscribe"
        self.sharded = sharded
        self.leaving: set[bytes] = set()  # channels we asked to unsubscribe
        self.handler = handler
        self.clock = clock
        self.last_heard = clock()
        # Held: messages queue in ``backlog`` (in order) instead of being
        # handled; from connect until resynchronised, and while ``work`` runs.
        self.held = True
        self.backlog: deque[tuple[bytes, bytes]] = deque()
        self.work: Awaitable[None] | None = None
        self.wake = asyncio.Event()
        self.failure: str | None = None  # why the stream cannot go on
        self.confirming: dict[bytes, asyncio.Future[None]] = {}

    def data_received(self, data: bytes) -> None:
        self.last_heard = self.clock()
        reader = self.reader
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                # A list (RESP2) or a PushNotification, a list too (RESP3).
                if isinstance(reply, list) and len(reply) == 3 and reply[0] == self.kind:
                    if self.held:
                        self.backlog.append((reply[1], reply[2]))
                        continue
                    work = self.handler(reply[1], reply[2])
                    if work is not None:
                        self.hold(work)
                else:
                    self._control(reply)
        except hiredis.ProtocolError as exc:
            self.fail(f"protocol error: {exc}")

    def _control(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == self.subscribed_kind:
            future = self.confirming.pop(reply[1], None)
            if future is not None and not future.done():
                future.set_result(None)
        elif self.sharded and isinstance(reply, list) and len(reply) == 3 \
                and reply[0] == b"sunsubscribe":
            if reply[1] in self.leaving:
                self.leaving.discard(reply[1])
            else:
                # Redis drops a shard channel's subscribers when its slot
                # moves to another shard (resharding, a failover seen by
                # this server): whatever is published there now is lost to
                # us. A gap; the resubscription finds the slot's new master.
                self.fail(f"redis ended the subscription to {reply[1]!r} (slot moved)")
        elif isinstance(reply, hiredis.ReplyError):
            self.fail(f"redis refused a subscription command: {reply}")
        # pong and unsubscribe confirmations need nothing

    def hold(self, work: Awaitable[None]) -> None:
        self.held = True
        self.work = work
        self.wake.set()

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self.wake.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail("disconnected")
        for future in self.confirming.values():
            if not future.done():
                future.cancel()

    async def resume(self) -> None:
        """Await the pending work, then the messages held meanwhile, in order."""
        while True:
            if self.work is not None:
                work, self.work = self.work, None
                await work
            if not self.backlog:
                break
            channel, data = self.backlog.popleft()
            self.work = self.handler(channel, data)
        self.held = False


class Subscription:
    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        keys: Keys,
        *,
        extra_channels: tuple[str, ...] = (),
        heartbeat_interval: float,
        heartbeat_timeout: float,
        backoff_max: float,
        on_message: Handler,
        on_connected: Callable[[str], Awaitable[None]],
        on_disconnected: Callable[[str], None],
    ) -> None:
        self._client = client
        # Redis Cluster: sharded pub/sub (SSUBSCRIBE) on one connection to
        # the master of the state slot, where every channel heard lives.
        self._sharded = isinstance(client, RedisCluster)
        self._subscribe = b"SSUBSCRIBE" if self._sharded else b"SUBSCRIBE"
        self._unsubscribe = b"SUNSUBSCRIBE" if self._sharded else b"UNSUBSCRIBE"
        self._state_key = keys.state
        # The shared acks and fill channels carry only what wire revision 1
        # replicas send (silent once every replica speaks revision 2).
        self._channels = tuple(c.encode() for c in (
            keys.channel, keys.ack_channel, keys.fill_channel, *extra_channels))
        self._interval = heartbeat_interval
        self._timeout = heartbeat_timeout
        self._backoff_max = backoff_max
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._reset = asyncio.Event()
        self._reset_reason = "forced"
        self._stream: _Stream | None = None
        self._transport: asyncio.Transport | None = None
        self._watched: dict[bytes, int] = {}  # channels subscribed on demand -> users
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hybridcache-backplane")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def force_gap(self, reason: str = "forced") -> None:
        """Drop the subscription and resubscribe (used after an L2 error, a
        lost Redis state, a lease that ran out: this node may have missed
        something, so it resynchronises). ``reason`` labels the resync."""
        self._reset_reason = reason
        self._reset.set()
        if self._stream is not None:
            self._stream.wake.set()

    # ------------------------------------------------------------ on demand

    async def watch(self, channel: str, timeout: float) -> bool:
        """Subscribe to ``channel`` too (a fill notice this node waits for),
        until ``unwatch``. True once Redis confirmed it: everything published
        on it from then on is heard; False if the subscription is down or
        did not confirm in ``timeout`` (the caller falls back to polling)."""
        name = channel.encode()
        users = self._watched.get(name, 0)
        self._watched[name] = users + 1
        stream, transport = self._stream, self._transport
        if stream is None or transport is None or stream.failure is not None:
            return False
        future = stream.confirming.get(name)
        if future is None:
            if users:
                return True  # already subscribed and confirmed
            future = asyncio.get_running_loop().create_future()
            stream.confirming[name] = future
            transport.write(_command(self._subscribe, name))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return False
        except asyncio.CancelledError:
            if future.cancelled():
                return False  # the connection was lost meanwhile
            raise
        return True

    def unwatch(self, channel: str) -> None:
        name = channel.encode()
        users = self._watched.get(name, 0) - 1
        if users > 0:
            self._watched[name] = users
            return
        self._watched.pop(name, None)
        if self._transport is not None and self._stream is not None \
                and self._stream.failure is None:
            self._stream.leaving.add(name)
            self._transport.write(_command(self._unsubscribe, name))

    # ------------------------------------------------------------ the loop

    async def _run(self) -> None:
        backoff = 0.05
        reason = "start"
        loop = asyncio.get_running_loop()
        while not self._stopping:
            conn: Any = None
            cancelled = False
            forced = False
            self._reset.clear()
            try:
                conn = await self._connection(reason)
                await conn.connect()
                # redis-py authenticated and selected the database; from
                # here on the bytes are ours.
                transport = conn._writer.transport
                stream = _Stream(self._on_message, loop.time, self._sharded)
                transport.set_protocol(stream)
                channels = (*self._channels, *self._watched)
                confirmed = [loop.create_future() for _ in channels]
                stream.confirming = dict(zip(channels, confirmed, strict=True))
                transport.write(_command(self._subscribe, *channels))
                self._stream, self._transport = stream, transport
                # Subscribed (confirmed) first, then resync: whatever is
                # invalidated from here on is heard, whatever came before is
                # in Redis's state.
                done, _ = await asyncio.wait(confirmed, timeout=self._timeout)
                if len(done) != len(confirmed) or stream.failure is not None:
                    raise GapError(stream.failure or "subscribe unconfirmed")
                await self._on_connected(reason)
                await stream.resume()  # what arrived meanwhile
                self.subscribed.set()
                backoff = 0.05
                await self._listen(stream, transport, loop)
            except asyncio.CancelledError:
                cancelled = True
                raise
            except GapError as exc:
                reason = str(exc)
                forced = self._reset.is_set()
            except (RedisError, OSError, RedisClusterException) as exc:
                reason = "disconnected"
                log.warning("backplane connection lost: %s", exc)
            except Exception:
                reason = "error"
                log.exception("backplane listener failed")
            finally:
                self.subscribed.clear()
                self._stream = self._transport = None
                if not cancelled:
                    self._on_disconnected(reason)
                if conn is not None:
                    await _close_quietly(conn)
            if not forced:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max)

    async def _connection(self, reason: str) -> Any:
        """A new, unconnected connection for the subscription: to the one
        server, the Sentinel master, or (cluster) the current master of the
        state slot, after re-reading the topology if this is a reconnect
        (the slot may have moved or its master failed over)."""
        client = self._client
        if not isinstance(client, RedisCluster):
            return client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        if reason != "start" or not client.nodes_manager.slots_cache:
            await client.nodes_manager.initialize()
        node = client.nodes_manager.get_node_from_slot(client.keyslot(self._state_key))
        return node.connection_class(**node.connection_kwargs)

    async def _listen(self, stream: _Stream, transport: asyncio.Transport,
                      loop: asyncio.AbstractEventLoop) -> None:
        last_ping = loop.time()
        wake = stream.wake
        while True:
            if self._stopping:
                raise asyncio.CancelledError
            if self._reset.is_set():
                raise GapError(self._reset_reason)
            if stream.failure is not None:
                raise GapError(stream.failure)
            if stream.work is not None:
                await stream.resume()
                continue
            wake.clear()
            try:
                async with asyncio.timeout(min(self._interval, 0.25)):
                    await wake.wait()
            except TimeoutError:
                pass
            now = loop.time()
            if now - stream.last_heard > self._timeout:
                raise GapError("silence")
            if now - last_ping >= self._interval:
                transport.write(_PING)
                last_ping = now


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


async def _close_quietly(conn: Any) -> None:
    try:
        await asyncio.wait_for(conn.disconnect(nowait=True), 1.0)
    except Exception:
        pass
