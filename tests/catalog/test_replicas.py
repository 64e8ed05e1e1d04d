"""Multi-replica behaviour with real processes: 3 ``python -m catalog serve``
replicas, one private Redis, one database (SQLite, and PostgreSQL when the
local server is reachable)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hybridcache.policy import Policy

from tests.support import policy_publish as publish
from tests.support.catalog_cluster import Cluster
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

from .conftest import WRITE_TOKEN
from .helpers import get_ok, layers

pytestmark = pytest.mark.slow


AUTH = {"Authorization": f"Bearer {WRITE_TOKEN}"}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """Reads and writes, with the cluster's write token."""
    with httpx.Client(timeout=10.0, headers=AUTH) as c:
        yield c


def _price(client: httpx.Client, url: str, product_id: int) -> str:
    return str(get_ok(client, f"{url}/products/{product_id}").json()["price"])


def _set_policy(cluster: Cluster, redis: RedisServer, policy: Policy) -> None:
    publish.publish(redis.url, cluster.key_prefix, [policy])
    publish.wait_applied(redis.url, cluster.key_prefix, policy.data_type, policy.generation,
                         [r.name for r in cluster.replicas])


def _reset_policy(cluster: Cluster, redis: RedisServer, data_type: str) -> None:
    publish.delete(redis.url, cluster.key_prefix, data_type)
    publish.wait_applied(redis.url, cluster.key_prefix, data_type, 0,
                         [r.name for r in cluster.replicas])


def test_reads_are_cached_on_every_replica(cluster: Cluster, client: httpx.Client) -> None:
    for url in cluster.urls:
        get_ok(client, f"{url}/products/1")
        second = get_ok(client, f"{url}/products/1")
        assert layers(second) == {"product": "l1", "price": "l1", "stock": "l1"}
        assert second.headers["x-node"].startswith("replica-")


def test_write_on_one_replica_is_seen_by_the_others(cluster: Cluster,
                                                     client: httpx.Client) -> None:
    pid = 2
    before = {url: _price(client, url, pid) for url in cluster.urls}
    assert len(set(before.values())) == 1
    new = "777.01"
    writer, *readers = cluster.urls
    response = client.put(f"{writer}/products/{pid}/price", json={"price": new})
    assert response.status_code == 200 and response.json()["price"] == new
    assert response.headers["x-invalidated-tags"] == f"price:{pid}"  # the price entry only
    for url in readers:
        wait_until(lambda u=url: _price(client, u, pid) == new, timeout=5.0,
                   what=f"new price on {url}")


def test_acknowledged_gives_read_your_writes_everywhere(cluster: Cluster, client: httpx.Client,
                                                         cluster_redis: RedisServer) -> None:
    _set_policy(cluster, cluster_redis, Policy(
        "price", "active", 600.0, 30.0, ("product:{id}",), "acknowledged", 1.0, generation=7,
        source="test/acknowledged"))
    try:
        pid = 3
        for i in range(5):
            for url in cluster.urls:  # every replica holds the old price in L1
                _price(client, url, pid)
            new = f"{100 + i}.25"
            writer = cluster.urls[i % 3]
            response = client.put(f"{writer}/products/{pid}/price", json={"price": new})
            assert response.status_code == 200
            assert response.headers["x-invalidation"] == "price=active/acknowledged"
            assert "x-invalidation-missing" not in response.headers
            # No polling: once the write answered, every replica serves the new price.
            assert [_price(client, url, pid) for url in cluster.urls] == [new] * 3
    finally:
        _reset_policy(cluster, cluster_redis, "price")


def test_ttl_data_type_is_not_invalidated_by_writes(cluster: Cluster, client: httpx.Client,
                                                     cluster_redis: RedisServer) -> None:
    # A long lifetime so the entry cannot expire during the test.
    _set_policy(cluster, cluster_redis, Policy(
        "category", "ttl", 3600.0, 3600.0, (), "eventual", 7200.0, generation=3))
    try:
        writer, reader = cluster.urls[0], cluster.urls[1]
        old = get_ok(client, f"{reader}/categories/5").json()["name"]
        response = client.patch(f"{writer}/categories/5", json={"name": old + " (renamed)"})
        assert response.status_code == 200
        assert response.headers["x-invalidation"] == "category=ttl/eventual"
        assert response.json()["name"] == old + " (renamed)"
        assert get_ok(client, f"{reader}/categories/5").json()["name"] == old
    finally:
        _reset_policy(cluster, cluster_redis, "category")


def test_policy_changed_in_redis_is_applied_live(cluster: Cluster, client: httpx.Client,
                                                 cluster_redis: RedisServer) -> None:
    _set_policy(cluster, cluster_redis, Policy(
        "stock", "ttl", 3600.0, 3600.0, (), "eventual", 7200.0, generation=11,
        source="test/stock-ttl"))
    try:
        for url in cluster.urls:
            body = get_ok(client, f"{url}/policies").json()
            assert body["stock"]["strategy"] == "ttl" and body["stock"]["generation"] == 11
        pid, reader = 4, cluster.urls[2]
        # Clear what earlier default-policy entries might hold, then cache under ttl.
        client.put(f"{cluster.urls[0]}/products/{pid}/price", json={"price": "1.00"})
        wait_until(lambda: _price(client, reader, pid) == "1.00", timeout=5.0, what="price reset")
        old_stock = get_ok(client, f"{reader}/products/{pid}").json()["stock"]
        response = client.put(f"{cluster.urls[0]}/products/{pid}/stock",
                              json={"stock": old_stock + 5})
        assert response.headers["x-invalidation"] == "stock=ttl/eventual"
        assert get_ok(client, f"{reader}/products/{pid}").json()["stock"] == old_stock
    finally:
        _reset_policy(cluster, cluster_redis, "stock")
    for url in cluster.urls:
        assert get_ok(client, f"{url}/policies").json()["stock"]["source"] == "default"


def test_concurrent_writers_on_all_replicas_lose_nothing(cluster: Cluster) -> None:
    pid, per_worker, workers = 5, 10, 6

    def work(i: int) -> list[int]:
        url = cluster.urls[i % 3]
        with httpx.Client(timeout=30.0, headers=AUTH) as c:
            return [c.put(f"{url}/products/{pid}/stock", json={"delta": 1}).status_code
                    for _ in range(per_worker)]

    with httpx.Client(timeout=10.0) as c:
        start = get_ok(c, f"{cluster.urls[0]}/products/{pid}").json()["stock"]
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            statuses = [s for chunk in pool.map(work, range(workers)) for s in chunk]
        assert statuses == [200] * (per_worker * workers)
        expected = start + per_worker * workers
        for url in cluster.urls:
            wait_until(lambda u=url: get_ok(c, f"{u}/products/{pid}").json()["stock"] == expected,
                       timeout=5.0, what=f"stock {expected} on {url}")


def test_redis_restart_no_5xx_and_no_stale_reads(cluster: Cluster, client: httpx.Client,
                                                 cluster_redis: RedisServer) -> None:
    pid = 6
    for url in cluster.urls:
        _price(client, url, pid)
    cluster_redis.stop()
    try:
        # Writes and reads keep working on L1 + database while Redis is away.
        response = client.put(f"{cluster.urls[0]}/products/{pid}/price", json={"price": "66.60"})
        assert response.status_code == 200 and response.json()["price"] == "66.60"
        for url in cluster.urls:
            status = client.get(f"{url}/products/{pid}").status_code
            assert status == 200
            ready = client.get(f"{url}/readyz")
            assert ready.status_code == 200
    finally:
        cluster_redis.start()
    for url in cluster.urls:
        wait_until(lambda u=url: client.get(f"{u}/readyz").json()["redis"] == "ok",
                   timeout=15.0, what=f"{url} reconnected to Redis")
    # After the restart no replica may serve the price from before the write.
    for url in cluster.urls:
        wait_until(lambda u=url: _price(client, u, pid) == "66.60", timeout=5.0,
                   what=f"new price on {url}")
    response = client.put(f"{cluster.urls[1]}/products/{pid}/price", json={"price": "66.61"})
    assert response.status_code == 200
    for url in cluster.urls:
        wait_until(lambda u=url: _price(client, u, pid) == "66.61", timeout=5.0,
                   what=f"newer price on {url}")


def test_sigkilled_replica_others_keep_serving(cluster: Cluster, client: httpx.Client,
                                               cluster_redis: RedisServer) -> None:
    victim = cluster.replicas[2]
    victim.kill()
    _set_policy_alive = [r.name for r in cluster.replicas[:2]]
    publish.publish(cluster_redis.url, cluster.key_prefix, [Policy(
        "price", "active", 600.0, 30.0, ("product:{id}",), "acknowledged", 1.0, generation=9)])
    publish.wait_applied(cluster_redis.url, cluster.key_prefix, "price", 9, _set_policy_alive)
    try:
        pid = 7
        for url in cluster.urls[:2]:
            _price(client, url, pid)
        response = client.put(f"{cluster.urls[0]}/products/{pid}/price", json={"price": "70.07"})
        assert response.status_code == 200
        # The dead replica still counts as live until its heartbeat ages out, so the
        # acknowledged write reports it as unconfirmed instead of hanging.
        assert response.headers.get("x-invalidation-missing") == victim.name
        assert _price(client, cluster.urls[1], pid) == "70.07"
        for url in cluster.urls[:2]:
            assert client.get(f"{url}/products?limit=5").status_code == 200
    finally:
        _reset_policy_nodes = [r.name for r in cluster.replicas[:2]]
        publish.delete(cluster_redis.url, cluster.key_prefix, "price")
        publish.wait_applied(cluster_redis.url, cluster.key_prefix, "price", 0,
                             _reset_policy_nodes)
        victim.start()
        victim.wait_ready()
    assert _price(client, victim.url, 7) == "70.07"


def _checker(cluster: Cluster, *args: str) -> tuple[int, dict[str, Any]]:
    """Run ``python -m catalog_checker`` against the cluster: exit code, summary.
    Without its convergence check: the default ``category`` policy is a ttl
    of 30 s budget, which the check would wait out (tests/faults runs it,
    with a short category ttl)."""
    result = subprocess.run(
        [sys.executable, "-m", "catalog_checker", "--no-converge", *args,
         *[a for url in cluster.urls for a in ("--url", url)]],
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, CATALOG_WRITE_TOKEN=WRITE_TOKEN),
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_consistency_checker_finds_no_stale_reads(cluster: Cluster) -> None:
    code, summary = _checker(cluster, "--duration", "4", "--seed", "1", "--products", "150-159")
    assert code == 0 and summary["stale_reads"] == 0, summary
    # list reads and category moves were part of the mix
    membership = summary["data_types"]["membership"]
    assert membership["reads"] > 0 and membership["writes"] > 0, membership


def test_writes_need_the_token_on_every_replica(cluster: Cluster) -> None:
    with httpx.Client(timeout=10.0) as anonymous:
        for url in cluster.urls:
            response = anonymous.put(f"{url}/products/3/price", json={"price": "3.33"})
            assert response.status_code == 401, response.text
            assert response.json()["error"] == "unauthorized"
            assert anonymous.get(f"{url}/products/3").status_code == 200


def test_consistency_checker_without_the_token_fails(cluster: Cluster) -> None:
    """Writes refused for want of the token must not pass as "no stale reads"."""
    env = {k: v for k, v in os.environ.items() if k != "CATALOG_WRITE_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-m", "catalog_checker", "--duration", "1", "--seed", "3",
         "--products", "162-163", "--categories", "7",
         *[a for url in cluster.urls for a in ("--url", url)]],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert json.loads(result.stdout)["unauthorized_writes"] > 0
    assert "write token" in result.stderr


def test_consistency_checker_detects_stale_reads(cluster: Cluster, cluster_redis: RedisServer,
                                                 database_url: str) -> None:
    """The checker's own check: with price cached as ttl (writes invalidate
    nothing) but promising 0.2 s of staleness, it must report stale reads."""
    if not database_url.startswith("sqlite"):
        pytest.skip("checker self-test runs once (SQLite variant)")
    _set_policy(cluster, cluster_redis, Policy(
        "price", "ttl", 600.0, 600.0, (), "eventual", 0.2, generation=21))
    try:
        code, summary = _checker(cluster, "--duration", "3", "--seed", "2",
                                 "--products", "160-161", "--categories", "8")
    finally:
        _reset_policy(cluster, cluster_redis, "price")
    assert code == 1, summary
    assert summary["data_types"]["price"]["stale_reads"] > 0
    assert summary["data_types"]["stock"]["stale_reads"] == 0


def test_consistency_checker_detects_stale_list_membership(
        cluster: Cluster, cluster_redis: RedisServer, database_url: str) -> None:
    """With product cached as ttl (a category move invalidates no list) but
    promising 0.2 s, the checker must find products in lists they left."""
    if not database_url.startswith("sqlite"):
        pytest.skip("checker self-test runs once (SQLite variant)")
    _set_policy(cluster, cluster_redis, Policy(
        "product", "ttl", 600.0, 600.0, (), "eventual", 0.2, generation=22))
    try:
        code, summary = _checker(cluster, "--duration", "4", "--seed", "3",
                                 "--products", "170-174", "--categories", "6-7")
    finally:
        _reset_policy(cluster, cluster_redis, "product")
    assert code == 1, summary
    assert summary["data_types"]["membership"]["stale_reads"] > 0, summary
