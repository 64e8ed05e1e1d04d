"""Invalidation from the source of truth: the outbox triggers and the relay,
with real processes (3 ``python -m catalog serve`` replicas, a private
redis-server, SQLite and the local PostgreSQL).

Every case first puts the old value in every replica's L1 (30 s) and L2
(10 min), so a replica serving the new value within the wait below can only
have been invalidated: without the outbox these tests fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import plain_sql
from tests.support.catalog_cluster import Cluster, Replica
from tests.support.redis_server import RedisServer, free_port
from tests.support.waiting import eventually

from .helpers import get_ok, served_price

pytestmark = pytest.mark.slow

# Far below every lifetime of the old value (L1 30 s, L2 10 min), far above
# the 1 s budget: a pass means the value was invalidated, not expired.
CONVERGE = 10.0
_ACTIVE = re.compile(r"^catalog_outbox_relay_active (\S+)$", re.M)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


def _warm(client: httpx.Client, cluster: Cluster, product_id: int) -> str:
    """Every replica caches the product; returns the price they all serve."""
    prices = {served_price(client, url, product_id) for url in cluster.urls for _ in range(2)}
    assert len(prices) == 1, prices
    return prices.pop()


async def _everyone_serves(client: httpx.Client, urls: list[str], product_id: int,
                           price: str) -> None:
    for url in urls:
        await eventually(lambda u=url: served_price(client, u, product_id) == price,
                         timeout=CONVERGE, what=f"{url} to serve price {price}")


def _relay_holders(client: httpx.Client, replicas: list[Replica]) -> list[Replica]:
    holders = []
    for replica in replicas:
        found = _ACTIVE.search(client.get(f"{replica.url}/metrics").text)
        if found and float(found.group(1)) == 1.0:
            holders.append(replica)
    return holders


def _set_price_sql(url: str, product_id: int, cents: int) -> None:
    plain_sql.run(url, f"UPDATE prices SET cents = {cents} WHERE product_id = {product_id}")


def _pending(url: str) -> int:
    return int(plain_sql.scalar(url, "SELECT count(*) FROM cache_outbox"))


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def outbox_cluster(database_url: str, cluster_redis: RedisServer,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("outbox-replicas")
    with Cluster(3, database_url=database_url, redis_url=cluster_redis.url, workdir=workdir,
                 key_prefix=f"o{secrets.token_hex(3)}:",
                 # A long grace: an API write's claim is released well within it
                 # even on a loaded machine, so a double publish is a real bug.
                 extra_env={"RELAY_LEASE": "1.5", "RELAY_GRACE": "3"}) as c:
        yield c


def _catalog(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DATABASE_URL=database_url, LOG_LEVEL="WARNING")
    return subprocess.run([sys.executable, "-m", "catalog", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _triggers(url: str) -> int:
    if url.startswith("sqlite"):
        query = ("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
                 " AND name LIKE 'catalog_outbox_%'")
    else:
        query = "SELECT count(*) FROM pg_trigger WHERE tgname = 'catalog_outbox'"
    return int(plain_sql.scalar(url, query))


# ---------------------------------------------------------------- schema

def test_migrate_is_idempotent_and_captures_plain_sql(empty_database: str) -> None:
    url = empty_database
    for _ in range(2):
        done = _catalog(url, "migrate")
        assert done.returncode == 0, done.stderr
    assert _triggers(url) == (15 if url.startswith("sqlite") else 5)
    seeded = _catalog(url, "seed", "--products", "3")  # seed migrates too
    assert seeded.returncode == 0, seeded.stderr
    plain_sql.run(url, "DELETE FROM cache_outbox")

    # One row per changed row, never one per migration run, with the fields
    # the cache's tags depend on, before and after.
    plain_sql.run(url, "UPDATE products SET category_id = 2, name = 'moved' WHERE id = 1")
    plain_sql.run(url, "UPDATE prices SET cents = 999 WHERE product_id = 2")
    plain_sql.run(url, "DELETE FROM stock WHERE product_id = 3")
    rows = plain_sql.run(url, "SELECT data_type, op, old_keys, new_keys FROM cache_outbox"
                              " ORDER BY id")
    got = [(str(dt), str(op), json.loads(old) if old not in (None, "") else None,
            json.loads(new) if new not in (None, "") else None) for dt, op, old, new in rows]
    assert got == [
        ("product", "update", {"id": 1, "category_id": 1}, {"id": 1, "category_id": 2}),
        ("price", "update", {"product_id": 2}, {"product_id": 2}),
        ("stock", "delete", {"product_id": 3}, None),
    ]

    # A rolled-back change leaves nothing behind.
    before = _pending(url)
    plain_sql.script(url, "BEGIN; UPDATE prices SET cents = 1 WHERE product_id = 1; ROLLBACK;")
    assert _pending(url) == before


def test_migrate_without_outbox_removes_the_triggers(empty_database: str) -> None:
    url = empty_database
    assert _catalog(url, "migrate").returncode == 0
    env_off = dict(os.environ, DATABASE_URL=url, LOG_LEVEL="WARNING", CATALOG_OUTBOX="0")
    subprocess.run([sys.executable, "-m", "catalog", "migrate"], env=env_off, check=True,
                   capture_output=True, timeout=120)
    assert _triggers(url) == 0


# ---------------------------------------------------------------- cluster

async def test_plain_sql_change_reaches_every_replica(outbox_cluster: Cluster,
                                                      client: httpx.Client,
                                                      database_url: str) -> None:
    pid = 11
    old = _warm(client, outbox_cluster, pid)
    new_cents = int(float(old) * 100) + 101
    _set_price_sql(database_url, pid, new_cents)
    new = f"{new_cents // 100}.{new_cents % 100:02d}"
    await _everyone_serves(client, outbox_cluster.urls, pid, new)
    # Published rows are deleted.
    await eventually(lambda: _pending(database_url) == 0, what="outbox drained")


async def test_product_moved_with_sql_leaves_the_old_category_list(
        outbox_cluster: Cluster, client: httpx.Client, database_url: str) -> None:
    pid, url = 12, outbox_cluster.urls[1]
    old_category = get_ok(client, f"{url}/products/{pid}").json()["category_id"]
    new_category = old_category % 10 + 1
    listed = f"{url}/categories/{old_category}/products?limit=100"
    assert pid in [p["id"] for p in get_ok(client, listed).json()["items"]]
    plain_sql.run(database_url,
                  f"UPDATE products SET category_id = {new_category} WHERE id = {pid}")
    await eventually(
        lambda: pid not in [p["id"] for p in get_ok(client, listed).json()["items"]],
        timeout=CONVERGE, what="product gone from its old category's list")


def _published(client: httpx.Client, cluster: Cluster) -> float:
    total = 0.0
    for url in cluster.urls:
        found = re.search(r"^catalog_outbox_published_total (\S+)$",
                          client.get(f"{url}/metrics").text, re.M)
        total += float(found.group(1)) if found else 0.0
    return total


async def test_api_write_claims_its_rows_so_the_relay_does_not_repeat_it(
        outbox_cluster: Cluster, client: httpx.Client, database_url: str) -> None:
    await eventually(lambda: _pending(database_url) == 0, what="outbox drained")
    before = _published(client, outbox_cluster)
    writer = outbox_cluster.urls[2]
    for i in range(3):
        response = await asyncio.to_thread(client.put, f"{writer}/products/15/price",
                                           json={"price": f"4{i}.50"})
        assert response.status_code == 200
    # The writer deleted its own rows: nothing left, nothing published twice.
    await eventually(lambda: _pending(database_url) == 0, what="claimed rows released")
    assert _published(client, outbox_cluster) == before
    # A change from outside is published (the counter does move).
    _set_price_sql(database_url, 15, 4321)
    await eventually(lambda: _published(client, outbox_cluster) == before + 1,
                     what="the SQL change published once")


async def test_writer_killed_after_commit_is_still_invalidated(
        outbox_cluster: Cluster, client: httpx.Client, database_url: str,
        cluster_redis: RedisServer, tmp_path: Path) -> None:
    template = outbox_cluster.replicas[0]
    env = dict(template.env, NODE_NAME="crasher", CATALOG_TEST_CRASH_AFTER_COMMIT="prices")
    crasher = Replica("crasher", free_port(), env, tmp_path / "crasher.log")
    crasher.start()
    try:
        crasher.wait_ready()
        pid = 13
        old = _warm(client, outbox_cluster, pid)
        new = f"{float(old) + 3.07:.2f}"
        with pytest.raises(httpx.TransportError):  # it dies before answering
            await asyncio.to_thread(client.put, f"{crasher.url}/products/{pid}/price",
                                    json={"price": new})
        assert crasher.proc is not None and crasher.proc.wait(10) == 137
        cents = plain_sql.scalar(database_url,
                                 f"SELECT cents FROM prices WHERE product_id = {pid}")
        assert int(cents) == round(float(new) * 100)  # committed, never invalidated by it
        await _everyone_serves(client, outbox_cluster.urls, pid, new)
    finally:
        crasher.kill()


async def test_relay_fails_over_when_its_holder_dies(outbox_cluster: Cluster,
                                                     client: httpx.Client,
                                                     database_url: str) -> None:
    replicas = outbox_cluster.replicas
    holders = await eventually(lambda: _relay_holders(client, replicas),
                               what="a relay holder")
    assert len(holders) == 1
    holder = holders[0]
    others = [r for r in replicas if r is not holder]
    holder.kill()
    try:
        successors = await eventually(lambda: _relay_holders(client, others),
                                      what="another replica to take the relay over")
        assert len(successors) == 1
        pid = 14
        old = {served_price(client, r.url, pid) for r in others for _ in range(2)}.pop()
        new_cents = int(float(old) * 100) + 55
        _set_price_sql(database_url, pid, new_cents)
        await _everyone_serves(client, [r.url for r in others], pid,
                               f"{new_cents // 100}.{new_cents % 100:02d}")
    finally:
        holder.start()
        holder.wait_ready()
