"""Noticing that Redis lost its state, so policies come back within seconds.

When Redis forgets (a restart without persistence, FLUSHALL, a failover to a
replica that lacked the last writes), the policies hash goes with everything
else. Replicas keep the policies they applied, but a replica that starts
afterwards would run the service's defaults until someone publishes again;
the per-policy timer would, but only every ``PROBE_INTERVAL``.

The library records such a loss on the wire: its invalidation state lives in
one hash, ``{prefix}state``, whose ``epoch`` field is replaced by a new one
whenever the state was lost (``hybridcache.keys.Keys.state``). Watching that
one field is cheap (one ``HGET`` per ``EPOCH_POLL_INTERVAL``, default 1 s), so
the operator polls it and, whenever it changes (including to "missing": the
hash is gone and no replica has started the next epoch yet), hands over to a
callback that republishes every policy it owns that Redis no longer holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from hybridcache.keys import Keys
from hybridcache.redis_clients import AnyRedis
from redis.exceptions import RedisClusterException, RedisError

from .background import BackgroundLoop
from .redaction import redact

log = logging.getLogger("cache_operator.epoch")

# Sentinel for "not read yet": distinct from None, which means the hash (or
# its epoch field) is missing.
_UNKNOWN = object()


class EpochWatcher(BackgroundLoop):
    """Polls ``HGET {prefix}state epoch``; calls ``on_change`` after each change.

    The first successful read only sets the baseline (the operator's start-up
    reconciliation publishes everything anyway). A Redis error leaves the
    baseline as it was, so the change is seen at the first read that works
    again (a restarted Redis comes back empty: epoch missing)."""

    task_name = "cache-operator-epoch"

    def __init__(self, redis: AnyRedis, keys: Keys,
                 on_change: Callable[[bytes | None, bytes | None], Awaitable[object]], *,
                 interval: float = 1.0) -> None:
        super().__init__()
        self.redis = redis
        self.keys = keys
        self.on_change = on_change
        self.interval = interval
        self._last: object = _UNKNOWN
        self._pending = False  # a change seen whose republication has not succeeded
        self._previous: bytes | None = None

    async def check(self) -> bool:
        """One poll: True if ``on_change`` ran to the end (the epoch changed now,
        or at an earlier poll whose republication failed)."""
        try:
            epoch: bytes | None = await self.redis.hget(  # type: ignore[assignment]
                self.keys.state, "epoch")
        except (RedisError, RedisClusterException) as exc:
            log.debug("epoch poll: cannot reach Redis: %s", redact(str(exc)))
            return False
        last, self._last = self._last, epoch
        if last is not _UNKNOWN and last != epoch:
            self._previous = last if isinstance(last, bytes) else None
            self._pending = True
            log.info("Redis invalidation state changed epoch (%r -> %r): republishing"
                     " policies", self._previous, epoch)
        if not self._pending:
            return False
        try:
            await self.on_change(self._previous, epoch)
        except (RedisError, RedisClusterException) as exc:
            # Still pending: the next poll tries again.
            log.warning("republishing after a new epoch failed: %s", redact(str(exc)))
            return False
        self._pending = False
        return True

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.check()
            except Exception:  # never let one bad round end the watch
                log.exception("epoch poll failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
