"""Noticing that a Redis Cluster shard changed masters.

Replication inside a shard is asynchronous: a replica promoted after its
master died may lack the master's last writes, among them the removal of an
entry (the entry half of a key invalidation). Such an entry would be served
again, stale, by every replica that reads it. A lost write to the state slot
is caught by the epoch (a clock below what replicas already saw starts a new
one); a lost removal on another shard is caught here: whenever redis-py
re-reads the topology (after a MOVED redirection, a connection failure, at
start), this compares the master of every slot with the last one seen, and
reports a change before the command that noticed it returns its reply, so
that reply is already refused (``RedisLayer.entry_floor``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.event import (
    AsyncAfterSlotsCacheRefreshEvent,
    AsyncEventListenerInterface,
    EventDispatcher,
)


class PrimaryWatch(AsyncEventListenerInterface):
    """Calls ``changed`` when a slot's master differs from the last one seen
    (not on the first look: that is only the start)."""

    def __init__(self, client: RedisCluster, dispatcher: EventDispatcher,
                 changed: Callable[[], None]) -> None:
        self._client = client
        self._dispatcher = dispatcher
        self._changed = changed
        self._primaries: dict[int, str] | None = None
        dispatcher.register_listeners({AsyncAfterSlotsCacheRefreshEvent: [self]})

    def primaries(self) -> dict[int, str]:
        """slot -> name (host:port) of its master, as redis-py knows it now."""
        cache = self._client.nodes_manager.slots_cache
        return {slot: nodes[0].name for slot, nodes in cache.items() if nodes}

    async def listen(self, event: Any) -> None:
        now = self.primaries()
        before, self._primaries = self._primaries, now
        if before is not None and before != now:
            self._changed()

    def close(self) -> None:
        self._dispatcher.unregister_listeners({AsyncAfterSlotsCacheRefreshEvent: [self]})
