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
from collections.abc import Awaitable, Callable

import orjson

from .backplane import UNKNOWN_MEMBERS, UNREACHABLE, AckResult, Subscription
from .flights import Flights
from .keys import ALL_TAG
from .local_store import LocalStore
from .options import CacheOptions
from .policies import PolicyRegistry
from .redis_layer import L2_ERRORS, RedisLayer
from .sender import Sender
from .stats import CacheCounters
from .versions import Versions
from .wire import Message, MessageError, decode_message

log = logging.getLogger("hybridcache")


class AckWaiter:
    """The nodes that confirmed one message, woken on each; shared by every
    caller whose invalidation went out in that message (a batch)."""

    __slots__ = ("acked", "changed", "users")

    def __init__(self) -> None:
        self.acked: set[str] = set()
        self.changed = asyncio.Event()
        self.users = 0


# Told of every invalidation applied here: (op "key" or "tag", key or tag, origin).
InvalidationListener = Callable[[str, str, str], None]
# How much longer than a silent member's lease an acknowledged write waits
# before taking the lease as run out: timer latency on that member and clock
# rate differences, never clock offsets (both ends are measured by Redis).
LEASE_MARGIN = 0.5


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
        self._channel = self.keys.channel.encode()
        # "{prefix}fill" (revision 1 senders) and "{prefix}fill:<key>".
        self._fill_channel = self.keys.fill_channel.encode()
        self._fill_prefix = self._fill_channel + b":"
        self._ack_channels = (self.keys.ack_channel.encode(),
                              self.keys.ack_channel_for(self.node_id).encode())
        self._hb_channel = self.keys.heartbeat_channel(self.node_id).encode()
        self.sender = Sender(l2, self.node_id, self._next_seq, wall, self.expect_acks,
                             self.forget_acks)
        self._own_marker = b'"node":' + orjson.dumps(self.node_id) + b","
        self.in_flight = 0  # own invalidations sent whose version is not known yet
        self.now = options.monotonic
        # The backplane lease: send times (loop clock) of heartbeats whose
        # echo has not come back yet, by token, and the timer that ends it.
        self._beats: dict[int, float] = {}
        self._beat_token = 0
        # The members as this node's heartbeats last saw them, and as they
        # were in the epoch before (members Redis may have forgotten since).
        # Names only: a heartbeat returns the members only when the set
        # changed, so the last heartbeat times it once had grow stale.
        self._members_epoch = b""
        self._members_seen = b""
        self._members: frozenset[str] = frozenset()
        self._old_members: frozenset[str] | None = None
        self._lease_timer: asyncio.TimerHandle | None = None
        l2.on_lost = self._on_lost
        l2.floor = lambda: versions.cluster
        self._deaf()

    # ------------------------------------------------------------ subscription

    def start(self) -> asyncio.Event:
        """Subscribe (in the background); the event is set once resynchronised."""
        assert self.l2.pubsub_client is not None
        self.subscription = Subscription(
            self.l2.pubsub_client, self.keys,
            extra_channels=(self._hb_channel.decode(), self._ack_channels[1].decode()),
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
        self._end_lease_timer()
        await self.sender.close()
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
        self.versions.apply_tag(tag, version, self.now())
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

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def message(self, op: str, ident: str, *, ack: bool = False) -> Message:
        return Message(op, ident, self.node_id, self.wall(), self._next_seq(), ack=ack)

    # ------------------------------------------------------------ gaps

    def flush(self) -> None:
        """Forget everything this node might have missed an invalidation for."""
        self.versions.gap()
        self.l1.clear()
        self.flights.detach_all()

    def _deaf(self) -> None:
        """Not provably hearing invalidations (yet, or any more): nothing
        loaded meanwhile enters L1 (callers flush it), so L1 serves nothing
        until the lease is back after a resync."""
        self._end_lease_timer()
        self.l2.up = False
        if self.options.redis_url is not None:
            self.l1.deaf = True

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
            self.subscription.force_gap(reason)

    def request_resync(self, reason: str) -> None:
        """Something heard cannot be trusted (a planted version): treat it as
        a gap, so Redis's state replaces whatever this node believed."""
        self._on_lost(reason)

    async def resync(self, reason: str) -> None:
        """After (re)subscribing: replay what we could not send, reload the
        invalidation state and policies from Redis, and start L1 afresh."""
        l2 = self.l2
        self.flush()
        for (op, ident) in list(self.pending):
            # Through the sender: this node's messages reach Redis in seq order.
            if op == "key":
                await self.sender.key(ident)
            else:
                await self.sender.tags([ident])
            del self.pending[(op, ident)]
        started = asyncio.get_running_loop().time()
        epoch, clock, tags = await l2.snapshot()
        stored = await l2.stored_policies()
        planted = self.versions.reload(tags, clock)
        if planted:
            self.counters.rejected["state_version"] += planted
            log.warning("ignored %d tag records above the cluster clock in redis", planted)
        l2.trust_epoch(epoch)
        self._peer_seq.clear()
        self.flush()
        l2.up, self.l1.deaf = True, False
        # Subscribed before the snapshot: everything published since is heard.
        self._renew_lease(started)
        if reason != "start":
            self.counters.resyncs[reason] += 1
        # Policies Redis no longer has are kept (Redis lost them, or was
        # replaced): only an explicit deletion returns a type to its default.
        for data_type, raw in stored.items():
            policy = self.policies.apply(data_type, raw)
            await l2.ack_policy(data_type, policy.generation if policy else 0)
        await self.heartbeat()

    # ------------------------------------------------------------ lease

    async def heartbeat(self) -> None:
        """Heartbeat (membership, and the echo that renews the lease); also
        measures this node's clock offset from Redis's."""
        loop = asyncio.get_running_loop()
        sent, wall_sent = loop.time(), self.wall()
        self._beat_token = token = self._beat_token + 1
        self._beats[token] = sent
        while len(self._beats) > 16:  # echoes lost in a gap
            del self._beats[next(iter(self._beats))]
        hb = await self.l2.heartbeat(token=token, seen=self._members_seen)
        self.counters.skew = (wall_sent + self.wall()) / 2 - hb.time
        if hb.epoch != self._members_epoch:
            if self._members_epoch:
                self._old_members = self._members
            self._members_epoch = hb.epoch
        if hb.members is not None:
            self._members = frozenset(hb.members)
        self._members_seen = hb.seen

    def _on_echo(self, data: bytes) -> None:
        """Our heartbeat came back through our subscription: everything
        published before it was delivered to us, so L1 may be served until
        L after that heartbeat was sent."""
        sent = self._beats.pop(int(data), None)
        if sent is not None and self.l2.up:
            self._renew_lease(sent)

    def _renew_lease(self, since: float) -> None:
        self._end_lease_timer()
        loop = asyncio.get_running_loop()
        self._lease_timer = loop.call_at(since + self.options.backplane_lease,
                                         self._lease_expired)

    def _end_lease_timer(self) -> None:
        if self._lease_timer is not None:
            self._lease_timer.cancel()
            self._lease_timer = None

    def _lease_expired(self) -> None:
        self._lease_timer = None
        if self.l2.up:
            log.warning("backplane lease ran out (no heartbeat echo within %.1fs)",
                        self.options.backplane_lease)
            self._on_lost("lease")

    # ------------------------------------------------------------ messages

    def on_message(self, channel: bytes, data: bytes) -> Awaitable[None] | None:
        """Handle one message, synchronously where it can be (an
        invalidation is applied right here); work that must await (a resync,
        a policy load, a probe answer) is returned for the subscription to
        await before the next message. Garbage on any channel is dropped and
        counted, never allowed to stop the listener; a Redis failure while
        answering goes through the one failure path."""
        try:
            work = self._dispatch(channel, data)
        except Exception as exc:
            self.counters.rejected["malformed"] += 1
            log.warning("ignoring a malformed message on %r: %r", channel[:64], exc)
            return None
        return None if work is None else self._guarded(work, channel)

    async def _guarded(self, work: Awaitable[None], channel: bytes) -> None:
        try:
            await work
        except L2_ERRORS as exc:
            self.l2.failed(exc)
        except Exception as exc:
            self.counters.rejected["malformed"] += 1
            log.warning("ignoring a malformed message on %r: %r", channel[:64], exc)

    def _dispatch(self, channel: bytes, data: bytes) -> Awaitable[None] | None:
        if channel != self._channel:
            self._side_channel(channel, data)
            return None
        if self._own_marker in data:
            return None  # our own message (we wrote it, compactly): skip decoding it
        try:
            msg = decode_message(data)
        except MessageError as exc:
            self.counters.rejected["malformed"] += 1
            log.warning("ignoring backplane message: %s", exc)
            return None
        if msg.node == self.node_id:
            return None
        if msg.rt is not None:
            # Both ends on Redis's clock: this node's offset is measured.
            self.counters.lag.observe(max(0.0, self.wall() - self.counters.skew - msg.rt))
        if msg.batch is not None:
            if not self._plausible_batch(msg):
                return None
        elif msg.op in ("key", "tag"):
            if msg.ver is not None and not self.versions.plausible(msg.ver, self.in_flight):
                self._refuse(msg, msg.ver)
                return None
        elif msg.op == "policy":
            return self._load_policy(msg.id)
        elif msg.op == "probe":
            return self.l2.answer_probe(msg.id, self.wall())
        else:
            return None
        last = self._peer_seq.get(msg.node)
        self._peer_seq[msg.node] = msg.seq
        if last is not None and msg.seq > last + 1 and self.subscription is not None:
            # Something from this sender never reached us.
            return self._after_gap(msg)
        self._apply(msg)
        return None

    def _side_channel(self, channel: bytes, data: bytes) -> None:
        if channel == self._hb_channel:
            self._on_echo(data)
        elif channel in self._ack_channels:
            self._on_ack(data)
        elif channel.startswith(self._fill_prefix) or channel == self._fill_channel:
            event = self._fill_waiters.get(data.decode())
            if event is not None:
                event.set()

    def _refuse(self, msg: Message, version: int) -> None:
        self.counters.rejected["message_version"] += 1
        log.warning("refused a %s message for %r at version %d, above the cluster"
                    " clock %d: resyncing", msg.op, msg.id[:64], version,
                    self.versions.clock)
        self.request_resync("planted")

    def _plausible_batch(self, msg: Message) -> bool:
        """An honest batch's versions grow by one per group, in order, from at
        most one above what this node has seen (plus its own in flight)."""
        assert msg.batch is not None
        bound = self.versions.clock + len(msg.batch) + self.in_flight
        previous = 0
        for _, _, version in msg.batch:
            if version > bound or version < previous:
                self._refuse(msg, version)
                return False
            previous = version
        return True

    async def _after_gap(self, msg: Message) -> None:
        await self.resync("seq_gap")
        self._apply(msg)

    def _apply(self, msg: Message) -> None:
        """Apply an invalidation message (one key or tag, or a batch) and
        answer it if its sender waits for acks."""
        epoch_start = self.l2.epoch_start
        versions = self.versions
        if msg.batch is not None:
            self._apply_batch(msg.batch, epoch_start)
        else:
            # A version from before this epoch (a sender on an older key
            # layout, or one that has not noticed the new epoch) orders
            # nothing here: applied like an unversioned message.
            version = msg.ver
            if version is None or version < epoch_start:
                version = versions.bump_local()
            else:
                versions.seen(version)  # a cluster version (a local one is not)
            if msg.op == "key":
                self.drop_key(msg.id, "remote")
            else:
                self.apply_tag(msg.id, version, "remote")
        if msg.ack and self.l2.client is not None:
            channel = (self.keys.ack_channel_for(msg.node) if msg.w >= 2
                       else self.keys.ack_channel)
            reply = orjson.dumps({"node": self.node_id, "to": msg.node, "seq": msg.seq})
            self.l2.background.spawn(self._send_ack(channel, reply))

    def _apply_batch(self, items: tuple[tuple[str, str, int], ...], epoch_start: int) -> None:
        """A batch in one pass: what drop_key and apply_tag do per item,
        with the lookups hoisted and the counters bumped once."""
        versions, flights, pop = self.versions, self.flights, self.l1.pop
        listeners = self.listeners
        now = self.now()
        top = keys = 0
        for op, ident, version in items:
            if version < epoch_start:
                version = versions.bump_local()
            elif version > top:
                top = version
            if op == "k":
                pop(ident)
                flights.detach(ident)
                keys += 1
                for listener in listeners:
                    listener("key", ident, "remote")
            else:
                if ident == ALL_TAG:
                    flights.detach_all()
                elif flights.loads:
                    flights.detach_tag(ident)
                versions.apply_tag(ident, version, now)
                for listener in listeners:
                    listener("tag", ident, "remote")
        versions.seen(top)
        invalidations = self.counters.invalidations
        if keys:
            invalidations["key", "remote"] += keys
        if len(items) > keys:
            invalidations["tag", "remote"] += len(items) - keys

    async def _send_ack(self, channel: str, reply: bytes) -> None:
        with self.l2.guard():
            await self.l2.publish(channel, reply)

    async def _load_policy(self, data_type: str) -> None:
        raw = await self.l2.policy(data_type)
        known = self.policies.get(data_type) is not None
        policy = self.policies.apply(data_type, raw)
        # A message naming a type that has no policy, here or in Redis, is
        # junk (or a deletion already applied): it leaves no key behind.
        if raw is not None or known:
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

    async def watch_fill(self, key: str) -> bool:
        """Subscribe to ``key``'s fill notices (until ``unwatch_fill``); True
        once Redis confirmed, so a notice published from then on is heard."""
        if self.subscription is None:
            return False
        return await self.subscription.watch(self.keys.fill_channel_for(key),
                                             self.options.socket_timeout)

    def unwatch_fill(self, key: str) -> None:
        if self.subscription is not None:
            self.subscription.unwatch(self.keys.fill_channel_for(key))

    # ------------------------------------------------------------ acks

    def expect_acks(self, seq: int) -> None:
        waiter = self._ack_waiters.get(seq)
        if waiter is None:
            waiter = self._ack_waiters[seq] = AckWaiter()
        waiter.users += 1

    def forget_acks(self, seq: int) -> None:
        waiter = self._ack_waiters.get(seq)
        if waiter is not None:
            waiter.users -= 1
            if waiter.users <= 0:
                del self._ack_waiters[seq]

    async def live_nodes(self) -> frozenset[str]:
        if not self.l2.up:
            return frozenset({self.node_id})
        members = (await self.l2.heartbeat(beat=False)).members
        return frozenset(members or ()) | {self.node_id}

    async def await_acks(self, seq: int, timeout: float) -> AckResult:
        """Wait until every member confirmed, or its backplane lease provably
        ran out (its last heartbeat, in Redis's time, plus the lease and a
        margin: it has flushed L1 by then), or ``timeout``."""
        waiter = self._ack_waiters[seq]
        acked, changed = waiter.acked, waiter.changed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        lease = self.options.backplane_lease + LEASE_MARGIN
        try:
            with self.l2.guard() as call:
                hb = await self.l2.heartbeat(beat=False)  # no `seen`: always the members
                asked = loop.time()
                # When, on this node's loop clock, each member's lease ends.
                ends = {node: asked + (last + lease - hb.time)
                        for node, last in (hb.members or {}).items() if node != self.node_id}
                # A young epoch: Redis lost its state (the membership with it)
                # moments ago. A node it forgot may still serve from L1 until
                # its lease, renewed before the epoch began (its last
                # heartbeat came before the loss), runs out: by the epoch's
                # first L + margin. The members this node saw before are
                # waited for by name until then; if it saw none, that long.
                unknown_end = 0.0
                if hb.replaced:
                    old = self._old_members if self._members_epoch == hb.epoch else None
                    forgotten_end = asked + (int(hb.epoch) / 1e6 + lease - hb.time)
                    if old is None:
                        unknown_end = forgotten_end
                    else:
                        for node in old:
                            if node not in ends and node != self.node_id:
                                ends[node] = forgotten_end
                while True:
                    now = loop.time()
                    waiting = [end for node, end in ends.items()
                               if node not in acked and end > now]
                    if unknown_end > now:
                        waiting.append(unknown_end)
                    remaining = min(deadline, max(waiting, default=now)) - now
                    if not waiting or remaining <= 0:
                        break
                    changed.clear()
                    try:
                        await asyncio.wait_for(changed.wait(), remaining)
                    except TimeoutError:
                        pass
            if call.failed:
                return AckResult(frozenset(acked), frozenset({UNREACHABLE}))
            now = loop.time()
            members = frozenset(ends)
            expired = frozenset(n for n in members - acked if ends[n] <= now)
            missing = members - acked - expired
            if unknown_end > now:
                missing |= {UNKNOWN_MEMBERS}
            return AckResult(frozenset(acked & members), missing, expired)
        finally:
            self.forget_acks(seq)

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
            waiter.acked.add(str(body["node"]))
            waiter.changed.set()
