"""A Redis connection pool that makes a burst of callers wait for a free
connection instead of failing ("Too many connections") or opening one socket
per concurrent miss.

redis-py's own BlockingConnectionPool does this with a condition variable and
a timeout per checkout, which costs more than an L2 round trip's worth of
Python on every command; an uncontended semaphore costs next to nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool


class BoundedConnectionPool(ConnectionPool):
    """At most ``max_connections`` connections in use; others wait their turn."""

    def __init__(self, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self._slots = asyncio.Semaphore(max_connections)

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        await self._slots.acquire()
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call,no-any-return]
        except BaseException:
            self._slots.release()
            raise

    async def release(self, connection: AbstractConnection) -> None:
        try:
            await super().release(connection)
        finally:
            self._slots.release()
