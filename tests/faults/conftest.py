"""Fixtures of the fault suite: one PostgreSQL database per run (its name
contains ``faults``), seeded once and shared by the groups, each of which
starts its own replicas and redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.catalog.conftest import PgDatabase, _pg_reachable
from tests.support.catalog_cluster import Cluster, seed_database
from tests.support.redis_server import RedisServer

SEED_PRODUCTS = 200


@pytest.fixture(scope="session")
def faults_database() -> Iterator[str]:
    reason = _pg_reachable()
    if reason is not None:
        pytest.skip(reason)
    with PgDatabase("catalog_faults") as db:
        seed_database(db.url, SEED_PRODUCTS)
        yield db.url


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """A group's own redis-server (the network group overrides it: its Redis
    starts after the namespace)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def healthy(cluster: Cluster) -> Cluster:
    """The group's ``cluster``, every replica connected to Redis (the previous
    fault healed)."""
    for replica in cluster.replicas:
        replica.check_alive()
        replica.wait_ready(timeout=20.0)
    return cluster
