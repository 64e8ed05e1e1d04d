"""Three catalog replicas on ``redis+cluster://`` (3 masters + 3 replicas)
under the consistency checker while the master of the shard holding the
invalidation state (and a third of the entries) is killed with SIGKILL, and
then slots (the state slot among them) are migrated to other masters: the
cluster promotes the replica, the catalog replicas follow (sharded
subscriptions on the slot's master, resync, older L2 entries refused), and
the checker sees no read stale beyond budget, no read older than a write every
replica acknowledged, and no 5xx.
Real processes throughout: redis-servers in cluster mode, uvicorn replicas."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hybridcache.keys import Keys
from hybridcache.policy import Policy
from redis.crc import key_slot

from tests.support import policy_publish as publish
from tests.support.catalog_cluster import Cluster, seed_database
from tests.support.checker_run import checker_during, wait_every_replica_on_redis
from tests.support.redis_cluster import RedisCluster, migrate_slot

from .conftest import WRITE_TOKEN

pytestmark = pytest.mark.slow


def test_checker_through_a_failover_and_a_migration_of_the_state_slot(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
    seed_database(db, 20)
    with RedisCluster() as redis_cluster, Cluster(
            3, database_url=db, redis_url=redis_cluster.url(), workdir=tmp_path / "replicas",
            extra_env={"ACK_TIMEOUT": "1.5", "CATALOG_WRITE_TOKEN": WRITE_TOKEN}) as cluster:
        price = Policy("price", "active", 600.0, 30.0, ("product:{id}",), "acknowledged",
                       1.0, generation=3)
        publish.publish(redis_cluster.url(), cluster.key_prefix, [price])
        publish.wait_applied(redis_cluster.url(), cluster.key_prefix, "price", 3,
                             [r.name for r in cluster.replicas])
        with checker_during(cluster, WRITE_TOKEN, seconds=10) as run:
            killed = time.monotonic()
            state_slot = key_slot(Keys(cluster.key_prefix, cluster=True).state.encode())
            promoted = redis_cluster.kill_master(state_slot)
            redis_cluster.wait_promoted(promoted)
            wait_every_replica_on_redis(cluster)
            back = time.monotonic() - killed
            # Then resharding under the same load: the state slot (where the
            # subscriptions are) and the slots of two products' entries.
            keys = Keys(cluster.key_prefix, cluster=True)
            for slot in (state_slot, *(key_slot(keys.entry(k).encode())
                                       for k in ("product:11", "product:12"))):
                source = redis_cluster.master_of_slot(slot)
                target = next(m for m in redis_cluster.masters() if m.port != source.port)
                migrate_slot(redis_cluster, slot, target)
    summary = run.summary
    print(f"\ncatalog on redis cluster: every replica ready {back:.2f}s after kill -9 of the"
          f" state shard's master, then the state slot migrated; checker: {summary['data_types']};"
          f" acknowledged-write probe: {summary['ack_probe']}")
    run.assert_clean()
