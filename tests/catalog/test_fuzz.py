"""HTTP fuzzing from the service's own OpenAPI description (schemathesis):
whatever is generated -- valid or not -- a real replica answers without a 5xx,
and every error is a JSON ``{"error", "detail"}`` body."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from catalog.openapi import openapi_document
from hypothesis import HealthCheck, settings

from tests.support.catalog_cluster import Cluster, seed_database
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow
schema = schemathesis.openapi.from_dict(openapi_document())
# Writes need the replica's token: without it every write would stop at 401
# and the fuzzing would never reach the handlers.
TOKEN = secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite+aiosqlite:///{workdir / 'catalog.db'}"
    seed_database(url, 30)
    with RedisServer() as redis, Cluster(1, database_url=url, redis_url=redis.url,
                                         workdir=workdir, key_prefix=f"f{secrets.token_hex(3)}:",
                                         extra_env={"CATALOG_WRITE_TOKEN": TOKEN}) as cluster:
        yield cluster.urls[0]


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, replica: str) -> None:
    response = case.call(base_url=replica, timeout=10,
                         headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code < 500, (case.method, case.formatted_path, case.body,
                                        response.text)
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "detail"}, body
