"""The subscription side of the backplane: one pub/sub connection per node.

Pub/sub keeps nothing for a subscriber that is away, so this loop never trusts
that it heard everything: every (re)subscribe, every silence longer than
``heartbeat_timeout`` and every jump in a sender's ``seq`` is a gap, after
which the cache flushes L1 and reloads invalidation state from Redis
(``on_connected``) before anything is served from L1 again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .keys import Keys

log = logging.getLogger("hybridcache.backplane")

Handler = Callable[[bytes, bytes], Awaitable[None]]


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


class Subscription:
    def __init__(
        self,
        client: aioredis.Redis,
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
        self._channels = (keys.channel, keys.ack_channel, keys.fill_channel, *extra_channels)
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
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hybridcache-backplane")

    async def stop(self) -> None:
        # The flag as well as cancel(): redis-py's get_message can swallow a
        # cancellation that lands inside its read timeout, and the listen
        # loop would then go on forever.
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

    async def _run(self) -> None:
        backoff = 0.05
        reason = "start"
        while not self._stopping:
            pubsub = self._client.pubsub()
            cancelled = False
            forced = False
            self._reset.clear()
            try:
                await pubsub.subscribe(*self._channels)
                # Subscribed first, then resync: whatever is invalidated from
                # here on is heard, whatever came before is in Redis's state.
                await self._on_connected(reason)
                self.subscribed.set()
                backoff = 0.05
                await self._listen(pubsub)
            except asyncio.CancelledError:
                cancelled = True
                raise
            except GapError as exc:
                reason = str(exc)
                forced = self._reset.is_set()
            except (RedisError, OSError) as exc:
                reason = "disconnected"
                log.warning("backplane connection lost: %s", exc)
            except Exception:
                reason = "error"
                log.exception("backplane listener failed")
            finally:
                self.subscribed.clear()
                if not cancelled:
                    self._on_disconnected(reason)
                await _close_quietly(pubsub)
            if not forced:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max)

    async def _listen(self, pubsub: Any) -> None:
        last_heard = time.monotonic()
        last_ping = last_heard
        confirmations = 0
        while True:
            if self._stopping:
                raise asyncio.CancelledError
            if self._reset.is_set():
                raise GapError(self._reset_reason)
            message = await pubsub.get_message(timeout=min(self._interval, 0.25))
            now = time.monotonic()
            if message is not None:
                last_heard = now
                kind = message["type"]
                if kind == "message":
                    await self._on_message(message["channel"], message["data"])
                elif kind == "subscribe":
                    confirmations += 1
                    if confirmations > len(self._channels):
                        # The client reconnected and resubscribed on its own:
                        # whatever was published in between is lost to us.
                        raise GapError("resubscribed")
                continue
            if now - last_heard > self._timeout:
                raise GapError("silence")
            if now - last_ping >= self._interval:
                await pubsub.ping()
                last_ping = now


async def _close_quietly(pubsub: Any) -> None:
    try:
        await asyncio.wait_for(pubsub.aclose(), 1.0)
    except Exception:
        pass
