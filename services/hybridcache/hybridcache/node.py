"""This replica on the backplane: what it hears, what it applies, and how it
recovers from what it may have missed.

It dispatches backplane messages (invalidations, fill notices, acks, policy
changes, probes), tracks each sender's ``seq`` to notice lost messages,
applies invalidations to L1, the in-flight loads and the tag versions,
collects acknowledgements, queues invalidations made while Redis was out of
reach and replays them, and resynchronises after every gap: L1 flushed, tag
table, clock and policies reloaded from Redis before L1 is trusted again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson

from .backplane import UNREACHABLE, AckResult, Subscription
from .flights import Flights
from .keys import ALL_TAG
from .local_store import LocalStore
from .options import CacheOptions
from .policies import PolicyRegistry
from .redis_layer import RedisLayer
from .stats import CacheCounters
from .versions import Versions
from .wire import Message, MessageError, decode_message

log = logging.getLogger("hybridcache")

AckWaiter = tuple[set[str], asyncio.Event]  # nodes that confirmed, woken on each
# Told of every invalidation applied here: (op "key" or "tag", key or tag, origin).
InvalidationListener = Callable[[str, str, str], None]


class Node:
    def __init__(self, options: CacheOptions, l2: RedisLayer, l1: LocalStore,
                 flights: Flights, versions: Versions, policies: PolicyRegistry,
                 counters: CacheCounters, wall: Callable[[], float]) -> None:
        self.options = options
        self.node_id = options.node_id
        self.keys = l2.keys
        self.l2 = l2
        self.l1 = l1
        self.flights = flights
        self.versions = versions
        self.policies = policies
        self.counters = counters
        self.wall = wall
        self.subscription: Subscription | None = None
        self.pending: dict[tuple[str, str], None] = {}  # invalidations to replay, in order
        self.listeners: list[InvalidationListener] = []
        self._seq = 0
        self._peer_seq: dict[str, int] = {}
        self._fill_waiters: dict[str, asyncio.Event] = {}
        self._ack_waiters: dict[int, AckWaiter] = {}
        self._fill_channel = self.keys.fill_channel.encode()
        self._ack_channel = self.keys.ack_channel.encode()
        self._own_marker = b'"node":' + orjson.dumps(self.node_id) + b","
        l2.on_lost = self._on_lost
        self._deaf()

    # ------------------------------------------------------------ subscription

    def start(self) -> asyncio.Event:
        """Subscribe (in the background); the event is set once resynchronised."""
        assert self.l2.pubsub_client is not None
        self.subscription = Subscription(
            self.l2.pubsub_client, self.keys,
            heartbeat_interval=self.options.heartbeat_interval,
            heartbeat_timeout=self.options.heartbeat_timeout,
            backoff_max=self.options.reconnect_backoff_max,
            on_message=self.on_message,
            on_connected=self.resync,
            on_disconnected=self.on_gap,
        )
        self.subscription.start()
        return self.subscription.subscribed

    async def stop(self) -> None:
        if self.subscription is not None:
            await self.subscription.stop()
            self.subscription = None

    # ------------------------------------------------------------ applying

    def drop_key(self, key: str, origin: str) -> None:
        self.l1.pop(key)
        self.flights.detach(key)
        self.counters.invalidations["key", origin] += 1
        for listener in self.listeners:
            listener("key", key, origin)

    def apply_tag(self, tag: str, version: int, origin: str) -> None:
        if tag == ALL_TAG:
            self.flights.detach_all()
        else:
            self.flights.detach_tag(tag)
        self.versions.apply_tag(tag, version)
        self.counters.invalidations["tag", origin] += 1
        for listener in self.listeners:
            listener("tag", tag, origin)

    def apply_tags_offline(self, tags: list[str]) -> None:
        """Invalidate here at a local version, and queue for replay."""
        version = self.versions.bump_local()
        for tag in tags:
            self.apply_tag(tag, version, "local")
            self.queue("tag", tag)

    def queue(self, op: str, ident: str) -> None:
        """Remember an invalidation Redis did not take, to replay it on reconnect."""
        if self.options.redis_url is not None:
            self.pending[(op, ident)] = None

    def message(self, op: str, ident: str, *, ack: bool = False) -> Message:
        self._seq += 1
        return Message(op, ident, self.node_id, self.wall(), self._seq, ack=ack)

    # ------------------------------------------------------------ gaps

    def flush(self) -> None:
        """Forget everything this node might have missed an invalidation for."""
        self.versions.gap()
        self.l1.clear()
        self.flights.detach_all()

    def _deaf(self) -> None:
        """Not hearing invalidations (yet, or any more): keep what is loaded
        meanwhile only briefly."""
        self.l2.up = False
        if self.options.redis_url is not None:
            self.l1.lifetime_cap = self.options.disconnected_local_expiration

    def on_gap(self, reason: str) -> None:
        was_up = self.l2.up
        self._deaf()
        self.flush()
        if was_up:
            log.warning("backplane gap (%s): L1 flushed, running on L1 + factory", reason)

    def _on_lost(self, reason: str) -> None:
        # A Redis call failed while connected: we may have lost a write or an
        # invalidation, so treat it as a gap and resubscribe.
        self.on_gap(reason)
        if self.subscription is not None:
            self.subscription.force_gap()

    async def resync(self, reason: str) -> None:
        """After (re)subscribing: replay what we could not send, reload the
        invalidation state and policies from Redis, and start L1 afresh."""
        l2 = self.l2
        self.flush()
        for (op, ident) in list(self.pending):
            message = self.message(op, ident).encode_open()
            if op == "key":
                await l2.invalidate_key(ident, message)
            else:
                await l2.invalidate_tags([(ident, message)], self.wall())
            del self.pending[(op, ident)]
        tags, clock, stored = await l2.cluster_state()
        self.versions.reload(tags, clock)
        self._peer_seq.clear()
        self.flush()
        l2.up, self.l1.lifetime_cap = True, None
        if reason != "start":
            self.counters.resyncs[reason] += 1
        self.policies.replace_all(stored)
        for data_type in stored:
            policy = self.policies.get(data_type)
            await l2.ack_policy(data_type, policy.generation if policy else 0)
        await l2.heartbeat()

    # ------------------------------------------------------------ messages

    async def on_message(self, channel: bytes, data: bytes) -> None:
        if channel == self._fill_channel:
            event = self._fill_waiters.get(data.decode())
            if event is not None:
                event.set()
            return
        if channel == self._ack_channel:
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
        self.counters.lag.observe(max(0.0, self.wall() - msg.ts))
        if msg.op in ("key", "tag"):
            last = self._peer_seq.get(msg.node)
            self._peer_seq[msg.node] = msg.seq
            if last is not None and msg.seq > last + 1 and self.subscription is not None:
                # Something from this sender never reached us.
                await self.resync("seq_gap")
            if msg.op == "key":
                self.drop_key(msg.id, "remote")
            else:
                version = msg.ver if msg.ver is not None else self.versions.bump_local()
                self.versions.seen(version)
                self.apply_tag(msg.id, version, "remote")
        elif msg.op == "policy":
            await self._load_policy(msg.id)
        elif msg.op == "probe":
            await self.l2.answer_probe(msg.id, self.wall())
        if msg.ack and self.l2.client is not None:
            reply = orjson.dumps({"node": self.node_id, "to": msg.node, "seq": msg.seq})
            await self.l2.publish(self.keys.ack_channel, reply)

    async def _load_policy(self, data_type: str) -> None:
        policy = self.policies.apply(data_type, await self.l2.policy(data_type))
        await self.l2.ack_policy(data_type, policy.generation if policy is not None else 0)

    # ------------------------------------------------------------ fill notices

    def fill_waiter(self, key: str) -> asyncio.Event:
        """Set when the node holding ``key``'s lease stores it or gives it back."""
        event = self._fill_waiters.get(key)
        if event is None:
            event = self._fill_waiters[key] = asyncio.Event()
        return event

    def forget_fill_waiter(self, key: str) -> None:
        self._fill_waiters.pop(key, None)

    # ------------------------------------------------------------ acks

    def expect_acks(self, seq: int) -> None:
        self._ack_waiters[seq] = (set(), asyncio.Event())

    def forget_acks(self, seq: int) -> None:
        self._ack_waiters.pop(seq, None)

    async def live_nodes(self) -> frozenset[str]:
        if not self.l2.up:
            return frozenset({self.node_id})
        return await self.l2.live_nodes() | {self.node_id}

    async def await_acks(self, seq: int, timeout: float) -> AckResult:
        acked, changed = self._ack_waiters[seq]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            with self.l2.guard() as call:
                live = await self.live_nodes() - {self.node_id}
                while not live <= acked:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    changed.clear()
                    try:
                        await asyncio.wait_for(changed.wait(), remaining)
                    except TimeoutError:
                        break
            if call.failed:
                return AckResult(frozenset(acked), frozenset({UNREACHABLE}))
            return AckResult(frozenset(acked & live), frozenset(live - acked))
        finally:
            self._ack_waiters.pop(seq, None)

    @staticmethod
    def unconfirmed() -> AckResult:
        return AckResult(frozenset(), frozenset({UNREACHABLE}))

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
