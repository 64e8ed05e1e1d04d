"""Network faults between one replica and Redis, under the consistency
checker (``harness.run_pass``): a partition of 10 s and a slow link (300 ms).

Design: two replicas run in the root namespace on loopback; the third runs
in a network namespace this module creates (``netns.Namespace``), joined to
the root namespace by two veth links. The namespaced replica reaches Redis
only over the *Redis link*, through a forwarder on its root end
(``delay_proxy.DelayProxy``, to Redis on loopback). It serves HTTP (and
reaches PostgreSQL, through another such forwarder) over the other, the
*service link*, which no fault touches, so the checker in the test process
keeps reading and writing through all three replicas while the namespaced
one is cut off from Redis (the Redis link's root end set down) or slowed
down (``tc netem delay 300ms`` on its end of the Redis link; where the
kernel has no ``sch_netem``, the forwarder delays what the replica sends by
300 ms instead, and the fault's name says so). The namespace, both links,
the qdisc and every process are removed at the end, whatever happened
(skipped with the reason where namespaces are not permitted).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.support.catalog_cluster import Cluster, Replica
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

from . import harness, netns
from .delay_proxy import DelayProxy
from .harness import WRITE_TOKEN, run_pass

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
_RELAY_ACTIVE = re.compile(r"^catalog_outbox_relay_active (\S+)$", re.M)


@pytest.fixture(scope="module")
def namespace() -> Iterator[netns.Namespace]:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(reason)
    ns = netns.Namespace().create()
    try:
        yield ns
    finally:
        ns.close()
    assert not ns.exists(), f"namespace {ns.name} left behind"


@pytest.fixture(scope="module")
def redis(namespace: netns.Namespace) -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def redis_forwarder(redis: RedisServer) -> Iterator[DelayProxy]:
    """The namespaced replica's way to Redis: the Redis link's root end."""
    proxy = DelayProxy(netns.REDIS_HOST, "127.0.0.1", redis.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def database_forwarder(namespace: netns.Namespace) -> Iterator[int]:
    """The namespaced replica's way to PostgreSQL (on loopback): a forwarder
    on the service link's root end."""
    proxy = DelayProxy(netns.SERVICE_HOST, "127.0.0.1", 5432).start()
    try:
        yield proxy.port
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def cluster(faults_database: str, redis: RedisServer, namespace: netns.Namespace,
            database_forwarder: int, redis_forwarder: DelayProxy,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("netns-replicas")
    c = Cluster(2, database_url=faults_database, redis_url=redis.url, workdir=workdir,
                key_prefix=f"n{secrets.token_hex(3)}:",
                extra_env={"CATALOG_WRITE_TOKEN": WRITE_TOKEN})
    env = dict(c.replicas[0].env, NODE_NAME="replica-ns",
               REDIS_URL=f"redis://{netns.REDIS_HOST}:{redis_forwarder.port}/0",
               DATABASE_URL=faults_database.replace(
                   "127.0.0.1:5432", f"{netns.SERVICE_HOST}:{database_forwarder}"))
    cut_off = Replica("replica-ns", free_port(), env, workdir / "replica-ns.log",
                      host=netns.SERVICE_NS, wrapper=namespace.exec_prefix())
    # The namespaced replica starts first and takes the outbox relay, so the
    # partition cuts off the relay's holder: the harder case, where it must
    # hand the role over (catalog/relay.py). Left to a start-up race, this
    # pass failed only when that replica happened to win it.
    cut_off.start()
    try:
        cut_off.wait_ready(timeout=30.0)
        wait_until(lambda: holds_relay(cut_off), timeout=20.0,
                   what="the namespaced replica to take the outbox relay")
        c.start()
    except BaseException:
        cut_off.stop()
        raise
    c.replicas.append(cut_off)
    try:
        harness.publish_suite_policies(redis.url, c.key_prefix, [r.name for r in c.replicas])
        yield c
    finally:
        c.stop()


def holds_relay(replica: Replica) -> bool:
    """Whether ``replica`` holds the outbox relay (its metrics say so)."""
    found = _RELAY_ACTIVE.search(httpx.get(f"{replica.url}/metrics", timeout=5.0).text)
    return found is not None and float(found.group(1)) == 1.0


def test_replica_partitioned_from_redis_for_ten_seconds(
        healthy: Cluster, namespace: netns.Namespace, faults_database: str) -> None:
    # The relay's holder is the replica cut off: nobody else may publish the
    # outbox until it hands the role over.
    assert holds_relay(healthy.replicas[-1])
    result = run_pass("one replica partitioned from Redis for 10 s", healthy.urls,
                      faults_database, inject=namespace.cut_redis,
                      heal=namespace.restore_redis, window=10.0)
    result.check()


def test_slow_link_to_redis(healthy: Cluster, namespace: netns.Namespace,
                            redis_forwarder: DelayProxy, faults_database: str) -> None:
    missing = namespace.netem_missing()
    if missing is None:
        fault, slow, heal = ("slow link to Redis (tc netem delay 300ms)",
                             lambda: namespace.slow_redis(300), namespace.clear_qdisc)
    else:
        fault = f"slow link to Redis (300 ms in the forwarder: {missing})"

        def slow() -> None:
            redis_forwarder.set_delay(0.3)

        def heal() -> None:
            redis_forwarder.set_delay(0.0)
    round_trips: list[float] = []

    def inject() -> None:
        slow()
        round_trips.append(namespace.redis_round_trip(redis_forwarder.port))

    try:
        result = run_pass(fault, healthy.urls, faults_database, inject=inject, heal=heal,
                          window=3.0)
    finally:
        heal()
    assert "netem" not in namespace.qdiscs()
    assert round_trips and round_trips[0] >= 0.3, f"{fault}: the link was not slow: {round_trips}"
    result.check()
