"""Three catalog replicas on ``redis+sentinel://`` under the consistency
checker while the Redis master is killed with SIGKILL: the sentinels promote
the replica, the catalog replicas follow, and the checker sees no read stale
beyond budget, no read older than a write every replica acknowledged (its
acknowledged-write probe), and no 5xx (reads fall back to L1 and the
database during the switch).
Real processes throughout: redis-servers, sentinels, uvicorn replicas."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hybridcache.policy import Policy

from tests.support import policy_publish as publish
from tests.support.catalog_cluster import Cluster, seed_database
from tests.support.checker_run import checker_during, wait_every_replica_on_redis
from tests.support.redis_sentinel import Sentinels

from .conftest import WRITE_TOKEN

pytestmark = pytest.mark.slow


def test_checker_through_a_master_failover(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
    seed_database(db, 20)
    with Sentinels() as sentinels, Cluster(
            3, database_url=db, redis_url=sentinels.url(), workdir=tmp_path / "replicas",
            extra_env={"ACK_TIMEOUT": "1.5", "CATALOG_WRITE_TOKEN": WRITE_TOKEN}) as cluster:
        # Price writes wait for every replica's acknowledgement: the checker
        # holds them to "no stale read after the write returned".
        price = Policy("price", "active", 600.0, 30.0, ("product:{id}",), "acknowledged",
                       1.0, generation=3)
        publish.publish(sentinels.master.url, cluster.key_prefix, [price])
        publish.wait_applied(sentinels.master.url, cluster.key_prefix, "price", 3,
                             [r.name for r in cluster.replicas])
        with checker_during(cluster, WRITE_TOKEN, seconds=8) as run:
            killed = time.monotonic()
            new_master = sentinels.kill_master()
            sentinels.wait_failover(new_master)
            wait_every_replica_on_redis(cluster)
            back = time.monotonic() - killed
    summary = run.summary
    print(f"\ncatalog on sentinel: every replica ready on the new master {back:.2f}s"
          f" after kill -9; checker: {summary['data_types']};"
          f" acknowledged-write probe: {summary['ack_probe']}")
    # Includes the acknowledged-write probe: price writes every replica
    # acknowledged, read back from every replica at once.
    run.assert_clean()
