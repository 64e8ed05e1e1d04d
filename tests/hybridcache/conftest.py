"""Cluster fixtures: caches that act as replicas of one service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hybridcache import CacheOptions, HybridCache

from tests.support.redis_server import RedisServer

MakeNode = Callable[..., Awaitable[HybridCache]]


@pytest.fixture
async def make_node(redis_server: RedisServer) -> AsyncIterator[MakeNode]:
    """Start a HybridCache replica on the test's private Redis."""
    nodes: list[HybridCache] = []

    async def make(node_id: str, url: str | None = None, **kw: Any) -> HybridCache:
        kw.setdefault("heartbeat_interval", 0.2)
        kw.setdefault("heartbeat_timeout", 1.0)
        kw.setdefault("reconnect_backoff_max", 0.2)
        node = HybridCache(CacheOptions(redis_url=url or redis_server.url, node_id=node_id,
                                        **kw))
        await node.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.close()


class Source:
    """A mutable 'database row' with a counting loader."""

    def __init__(self, value: Any = "v1") -> None:
        self.value = value
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        return self.value
