"""Fixtures every suite may use. Each suite's own conftest adds its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for one test: free to stop, restart or kill."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    """A private redis-server shared by one test module (flushed per test by users)."""
    with RedisServer() as server:
        yield server
