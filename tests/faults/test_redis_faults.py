"""Redis faults and writer faults under the consistency checker: 3 real
replicas (``python -m catalog serve``) on a fresh PostgreSQL database, one
private redis-server, the checker with its acknowledged-write probe running
while each fault is injected (``harness.run_pass``; what every pass must show
is in its docstring). One cluster serves the whole module: each test is one
fault, healed before its pass ends, and starts from a cluster whose replicas
all report Redis connected again.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hybridcache.keys import Keys

from tests.support import plain_sql
from tests.support.catalog_cluster import Cluster, Replica
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer

from . import harness
from .harness import WRITE_TOKEN, run_pass, stale_after

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
BUDGET = 1.0  # maxStaleness of price under the suite's policies


@pytest.fixture(scope="module")
def cluster(faults_database: str, redis: RedisServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("fault-replicas")
    with Cluster(3, database_url=faults_database, redis_url=redis.url, workdir=workdir,
                 key_prefix=f"f{secrets.token_hex(3)}:",
                 extra_env={"CATALOG_WRITE_TOKEN": WRITE_TOKEN}) as c:
        harness.publish_suite_policies(redis.url, c.key_prefix, [r.name for r in c.replicas])
        yield c


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0, headers={"Authorization": f"Bearer {WRITE_TOKEN}"}) as c:
        yield c


def test_redis_sigkill_and_restart(healthy: Cluster, redis: RedisServer,
                                   faults_database: str) -> None:
    # A long tail: after the restart, acknowledged writes name the members
    # the empty Redis forgot for L + 0.5 s; the probe needs clean ones after.
    run_pass("redis SIGKILL + restart", healthy.urls, faults_database,
             inject=redis.kill, heal=redis.start, window=2.0, tail=3.5).check()


def test_redis_sigstop_five_seconds(healthy: Cluster, redis: RedisServer,
                                    faults_database: str) -> None:
    run_pass("redis SIGSTOP 5 s", healthy.urls, faults_database,
             inject=redis.pause, heal=redis.resume, window=5.0, tail=3.0).check()


def test_client_kill_of_the_subscriptions(healthy: Cluster, redis: RedisServer,
                                          faults_database: str) -> None:
    killed: list[str] = []
    run_pass("CLIENT KILL TYPE pubsub", healthy.urls, faults_database,
             inject=lambda: killed.append(redis.cli("CLIENT", "KILL", "TYPE", "pubsub")),
             heal=lambda: None, window=1.0).check()
    assert int(killed[0]) >= 3  # every replica's subscription was cut


@pytest.mark.parametrize("key", ["state", "marks", "nodes", "tagtimes", "marktimes"])
def test_del_of_an_invalidation_key(healthy: Cluster, redis: RedisServer,
                                    faults_database: str, key: str) -> None:
    name = getattr(Keys(healthy.key_prefix), {"tagtimes": "tag_times",
                                              "marktimes": "mark_times"}.get(key, key))
    deleted: list[str] = []
    run_pass(f"DEL {name}", healthy.urls, faults_database,
             inject=lambda: deleted.append(redis.cli("DEL", name)),
             heal=lambda: None, window=1.0).check()
    if key in ("state", "nodes"):  # always present while replicas run
        assert deleted == ["1"], deleted


def test_flushall(healthy: Cluster, redis: RedisServer, faults_database: str) -> None:
    run_pass("FLUSHALL", healthy.urls, faults_database,
             inject=lambda: redis.cli("FLUSHALL"), heal=lambda: None, window=1.0).check()


def test_eviction_under_a_tiny_maxmemory(healthy: Cluster, redis: RedisServer,
                                         faults_database: str) -> None:
    """``allkeys-lru`` (the unsafe policy: the invalidation state can go
    too) with maxmemory a little above what Redis holds, and other keys
    written meanwhile so that Redis must evict."""

    def inject() -> None:
        used = int(redis.cli("INFO", "memory").split("used_memory:")[1].split()[0])
        redis.cli("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
        redis.cli("CONFIG", "SET", "maxmemory", str(used + 256 * 1024))
        filler = "x" * 20_000
        for i in range(40):  # several times what maxmemory leaves room for
            redis.cli("SET", f"faults-filler:{i}", filler)

    def heal() -> None:
        redis.cli("CONFIG", "SET", "maxmemory", "0")
        redis.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")

    run_pass("eviction under a tiny maxmemory (allkeys-lru)", healthy.urls, faults_database,
             inject=inject, heal=heal, window=1.0).check()
    assert int(redis.cli("INFO", "stats").split("evicted_keys:")[1].split()[0]) > 0


def _warm(client: httpx.Client, urls: list[str], product_id: int) -> str:
    prices = {harness.served(client, url, product_id) for url in urls for _ in range(2)}
    assert len(prices) == 1, prices
    return prices.pop()


def test_price_changed_with_psql(healthy: Cluster, client: httpx.Client,
                                 faults_database: str) -> None:
    """A change that never passed through the API (the outbox relays it),
    on a product the checker does not own, while the checker runs."""
    pid, stale = 20, []

    def inject() -> None:
        old = _warm(client, healthy.urls, pid)
        cents = round(float(old) * 100) + 101
        plain_sql.run(faults_database,
                      f"UPDATE prices SET cents = {cents} WHERE product_id = {pid}")
        changed = time.monotonic()
        stale.extend(stale_after(client, healthy.urls, pid, f"{cents // 100}.{cents % 100:02d}",
                                 changed, BUDGET))

    run_pass("price changed with psql", healthy.urls, faults_database,
             inject=inject, heal=lambda: None, window=0.0).check()
    assert not stale, f"price changed with psql: {stale}"


def test_replica_killed_right_after_its_commit(healthy: Cluster, client: httpx.Client,
                                               faults_database: str, tmp_path: Path) -> None:
    """A fourth replica armed with the test-only crash point
    (``CATALOG_TEST_CRASH_AFTER_COMMIT``) dies after committing a price and
    before invalidating it; the others must still converge on it (the
    outbox), while the checker runs against them."""
    env = dict(healthy.replicas[0].env, NODE_NAME="crasher",
               CATALOG_TEST_CRASH_AFTER_COMMIT="prices")
    crasher = Replica("crasher", free_port(), env, tmp_path / "crasher.log")
    crasher.start()
    pid, stale, new = 21, [], ""
    try:
        crasher.wait_ready()

        def inject() -> None:
            nonlocal new
            old = _warm(client, healthy.urls, pid)
            new = f"{float(old) + 2.03:.2f}"
            with pytest.raises(httpx.TransportError):  # it dies before answering
                client.put(f"{crasher.url}/products/{pid}/price", json={"price": new})
            changed = time.monotonic()
            assert crasher.proc is not None and crasher.proc.wait(10) == 137
            stale.extend(stale_after(client, healthy.urls, pid, new, changed, BUDGET))

        run_pass("replica SIGKILLed right after its commit", healthy.urls, faults_database,
                 inject=inject, heal=lambda: None, window=0.0).check()
    finally:
        crasher.kill()
    cents = plain_sql.scalar(faults_database, f"SELECT cents FROM prices WHERE product_id = {pid}")
    assert int(cents) == round(float(new) * 100)  # committed: not lost
    assert not stale, f"replica SIGKILLed right after its commit: {stale}"


def test_the_checker_fails_a_replica_that_is_never_invalidated(
        healthy: Cluster, faults_database: str, tmp_path: Path) -> None:
    """The suite's own check, last in this module (it leaves stale entries
    behind): a fourth replica on a Redis of its own hears no invalidation
    from the others, and they none from it. The acknowledged-write probe and
    the convergence check must both catch it."""
    with RedisServer() as elsewhere:
        env = dict(healthy.replicas[0].env, NODE_NAME="deaf", REDIS_URL=elsewhere.url)
        deaf = Replica("deaf", free_port(), env, tmp_path / "deaf.log")
        deaf.start()
        try:
            deaf.wait_ready()
            result = run_pass("a replica never invalidated (self-test)",
                              [*healthy.urls, deaf.url], faults_database,
                              inject=lambda: None, heal=lambda: None, window=2.0)
        finally:
            deaf.stop()
    summary = result.summary
    assert summary["ack_probe"]["stale_by_replica"].get(deaf.url, 0) > 0, summary["ack_probe"]
    assert summary["convergence"]["not_converged_count"] > 0, summary["convergence"]
    assert any(deaf.url in item["answers"] for item in summary["convergence"]["not_converged"])
    assert result.violations()
