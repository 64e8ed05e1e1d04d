"""Three replicas as three real processes sharing one Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow  # three real processes

ROOT = Path(__file__).resolve().parents[2]


def test_500_concurrent_misses_in_each_of_3_processes_run_the_factory_once(
    redis_server: RedisServer,
) -> None:
    nodes = ["p1", "p2", "p3"]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.hybridcache.replica_process", redis_server.url, node,
         "hot:42", "500"], cwd=ROOT, stdout=subprocess.PIPE, text=True) for node in nodes]
    client = redis.Redis.from_url(redis_server.url)
    try:
        for node in nodes:
            assert client.blpop([f"ready:{node}"], timeout=30) is not None, f"{node} never ready"
        for node in nodes:
            client.rpush(f"go:{node}", 1)
        outputs = [orjson.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1])
                   for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert int(client.get("factory-runs") or 0) == 1
    assert all(o["count"] == 500 for o in outputs)
    loaders = {d for o in outputs for d in o["distinct"]}
    assert len(loaders) == 1  # every caller in every process got the one loaded value
