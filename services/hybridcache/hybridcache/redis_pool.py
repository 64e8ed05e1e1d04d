"""A Redis connection pool that makes a burst of callers wait for a free
connection instead of failing ("Too many connections") or opening one socket
per concurrent miss.

redis-py's own BlockingConnectionPool does this with a condition variable and
a timeout per checkout, which costs more than an L2 round trip's worth of
Python on every command; an uncontended semaphore costs next to nothing.
The bound is a mixin so the same rule applies to one server's pool and to
Sentinel's (which finds the master before each new connection).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.sentinel import MasterNotFoundError, SentinelConnectionPool


class _Bounded:
    """At most ``max_connections`` connections in use; others wait their turn."""

    _slots: asyncio.Semaphore

    def __init__(self, *args: Any, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, max_connections=max_connections, **kwargs)  # type: ignore[call-arg]
        self._slots = asyncio.Semaphore(max_connections)

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        await self._slots.acquire()
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[misc,no-any-return]
        except BaseException:
            self._slots.release()
            raise

    async def release(self, connection: AbstractConnection) -> None:
        try:
            await super().release(connection)  # type: ignore[misc]
        finally:
            self._slots.release()


class BoundedConnectionPool(_Bounded, ConnectionPool):
    """One server's pool, bounded."""


class OwningSentinelPool(SentinelConnectionPool):
    """redis-py's Sentinel pool (the master is looked up before every new
    connection, so a failover is followed), which may also own the Sentinel
    manager that made it: closing the client then closes the connections to
    the sentinels too, as a one-server client closes everything it opened."""

    def __init__(self, service_name: str, sentinel_manager: Any, *,
                 owns_manager: bool = False, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._owns_manager = owns_manager

    async def aclose(self) -> None:
        await super().aclose()
        if self._owns_manager:
            await self.sentinel_manager.aclose()

    async def release(self, connection: AbstractConnection) -> None:
        """A connection to a server that is no longer the master is closed,
        not pooled: redis-py looks the master up only when it opens a
        connection, and a master demoted alive (a manual failover, a healed
        partition) answers reads, and even writes until the sentinels
        reconfigure it, for seconds."""
        master = self.master_address
        if master is not None and (getattr(connection, "host", None),
                                   getattr(connection, "port", None)) != master:
            await connection.disconnect()
        await super().release(connection)

    async def follow_master(self) -> None:
        """Ask the sentinels who the master is now; idle connections to any
        other server are closed (redis-py's get_master_address does that
        when the answer changed), busy ones when they come back. No
        sentinel answering is no reason to drop a working master: kept."""
        try:
            await self.get_master_address()  # type: ignore[no-untyped-call]
        except MasterNotFoundError:
            pass


class BoundedSentinelPool(_Bounded, OwningSentinelPool):
    """The master's pool through Sentinel, bounded."""
