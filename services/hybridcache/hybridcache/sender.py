"""The publishing side of the backplane: this node's invalidations, one
Redis call in flight at a time, coalesced into batches while one is.

Why one call at a time: receivers detect lost messages by a jump in the
sender's ``seq``, so messages must reach Redis in ``seq`` order; concurrent
calls on a connection pool overtake each other, and every overtaking looked
like a gap (a needless L1 flush on every replica). Why batches: while a call
is in flight, the invalidations that arrive meanwhile wait for it anyway, and
sending them as one script call and one message costs Redis one PUBLISH
fan-out and every receiver one decode instead of one per invalidation.

An idle sender adds no latency: an invalidation that finds nothing in flight
goes out at once, in the single-message format (what wire revision 1 nodes
read exactly). Only invalidations that had to wait are batched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .redis_layer import BatchGroup, RedisLayer
from .wire import Message, encode_batch_open

log = logging.getLogger("hybridcache")

# Groups per batch: bounds one script's run time in Redis (others wait for
# it) and how far a batch's versions may run ahead of what a receiver has seen.
MAX_BATCH = 256


class _Pending:
    __slots__ = ("ack", "future", "group")

    def __init__(self, group: BatchGroup, ack: bool,
                 future: asyncio.Future[tuple[int, int]]) -> None:
        self.group = group
        self.ack = ack
        self.future = future


class Sender:
    """Sends invalidations for one node; see the module docstring."""

    def __init__(self, l2: RedisLayer, node_id: str, next_seq: Callable[[], int],
                 wall: Callable[[], float], expect_acks: Callable[[int], None],
                 forget_acks: Callable[[int], None]) -> None:
        self.l2 = l2
        self.node_id = node_id
        self._next_seq = next_seq
        self._wall = wall
        self._expect_acks = expect_acks
        self._forget_acks = forget_acks
        self._busy = False
        self._queue: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None
        self.batches = 0  # batch messages sent (for stats and tests)
        self.batched = 0  # invalidations that went out in a batch

    async def close(self) -> None:
        """Stop sending (the cache is closing): callers still queued get a
        CancelledError, as they would if their own call were cancelled."""
        drainer, self._drainer = self._drainer, None
        if drainer is not None and not drainer.done():
            drainer.cancel()
            try:
                await drainer
            except asyncio.CancelledError:
                pass

    async def key(self, key: str, tail: bytes = b"", ttl: float = 0.0,
                  ack: bool = False) -> tuple[int, int]:
        """Remove ``key`` everywhere (``tail``: store this entry at the new
        version). Returns (version, seq of the message that carried it);
        with ``ack`` the ack waiter for that seq is registered before it is
        published. Raises what the Redis call raised."""
        return await self._submit(BatchGroup(key, (), tail, ttl), ack)

    async def tags(self, tags: list[str], ack: bool = False) -> tuple[int, int]:
        """Invalidate ``tags`` at one version; as ``key``."""
        return await self._submit(BatchGroup(None, tuple(tags)), ack)

    async def _submit(self, group: BatchGroup, ack: bool) -> tuple[int, int]:
        if self._busy:
            future: asyncio.Future[tuple[int, int]] = \
                asyncio.get_running_loop().create_future()
            self._queue.append(_Pending(group, ack, future))
            return await future
        self._busy = True
        try:
            return await self._send_one(group, ack)
        finally:
            self._next()

    def _next(self) -> None:
        """After a call: hand what queued up meanwhile to the drainer."""
        if self._queue:
            if self._drainer is None or self._drainer.done():
                self._drainer = asyncio.get_running_loop().create_task(
                    self._drain(), name="hybridcache-sender")
        else:
            self._busy = False

    async def _send_one(self, group: BatchGroup, ack: bool) -> tuple[int, int]:
        """The single-message format: one message per key or tag."""
        wall = self._wall()
        if group.key is not None:
            seq = self._next_seq()
            if ack:
                self._expect_acks(seq)
            message = Message("key", group.key, self.node_id, wall, seq, ack=ack)
            call = self.l2.invalidate_key(group.key, message.encode_open(),
                                          group.tail, group.ttl)
        else:
            messages = [Message("tag", tag, self.node_id, wall, self._next_seq(), ack=ack)
                        for tag in group.tags]
            seq = messages[-1].seq
            if ack:
                self._expect_acks(seq)
            call = self.l2.invalidate_tags(
                [(tag, m.encode_open()) for tag, m in zip(group.tags, messages, strict=True)])
        try:
            return await call, seq
        except BaseException:
            if ack:
                self._forget_acks(seq)  # nobody will wait for it
            raise

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                batch = [p for p in batch if not p.future.done()]  # callers cancelled
                if not batch:
                    continue
                if len(batch) == 1:
                    await self._settle(batch, self._send_one(batch[0].group, batch[0].ack))
                    continue
                seq = self._next_seq()
                ack = any(p.ack for p in batch)
                if ack:
                    for p in batch:
                        if p.ack:
                            self._expect_acks(seq)
                envelope = encode_batch_open(self.node_id, self._wall(), seq, ack=ack)
                self.batches += 1
                self.batched += len(batch)
                await self._settle(batch, self._send_batch(envelope, batch, seq))
        finally:
            self._busy = False
            if self._queue:  # cancelled with callers still waiting
                for p in self._queue:
                    if not p.future.done():
                        p.future.cancel()
                self._queue = []

    async def _send_batch(self, envelope: bytes, batch: list[_Pending],
                          seq: int) -> list[tuple[int, int]]:
        try:
            versions = await self.l2.invalidate_batch(envelope, [p.group for p in batch])
        except BaseException:
            for p in batch:
                if p.ack:
                    self._forget_acks(seq)
            raise
        return [(v, seq) for v in versions]

    @staticmethod
    async def _settle(batch: list[_Pending], call: Any) -> None:
        """Run ``call`` and give each waiting caller its result (or the error)."""
        try:
            result = await call
        except asyncio.CancelledError:
            for p in batch:
                p.future.cancel()
            raise
        except BaseException as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        results = result if isinstance(result, list) else [result]
        for p, res in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(res)
