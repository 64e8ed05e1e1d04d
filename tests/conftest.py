"""Fixtures every suite may use. Each suite's own conftest adds its own."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.redis_server import RedisServer  # noqa: E402


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
