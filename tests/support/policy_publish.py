"""Publishing policies to Redis exactly as the operator does:
``HSET {prefix}policies <dataType> <Policy.to_json()>`` then a backplane
``policy`` message; replicas reload it and acknowledge in
``{prefix}policy-acks:<dataType>``.

The operator's ``python -m cache_operator apply`` is the real tool; this module
is a minimal path for the catalog's tests and for ``make demo`` when the
operator package is not installed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis
from hybridcache.keys import Keys
from hybridcache.policy import Policy
from hybridcache.wire import Message
from redis.cluster import ClusterNode


def _client(redis_url: str, prefix: str, **kw: Any) -> tuple[Any, Keys]:
    """A sync client and the key layout for ``redis_url``: one server, or a
    Redis Cluster (``redis+cluster://`` seeds; the cluster key layout)."""
    if redis_url.startswith("redis+cluster://"):
        seeds = [ClusterNode(host, int(port)) for host, _, port in
                 (hp.partition(":") for hp in redis_url.split("://", 1)[1].split(","))]
        return redis.RedisCluster(startup_nodes=seeds, **kw), Keys(prefix, cluster=True)
    return redis.Redis.from_url(redis_url, **kw), Keys(prefix)


def publish(redis_url: str, prefix: str, policies: Iterable[Policy]) -> None:
    client, keys = _client(redis_url, prefix)
    announce = client.spublish if keys.cluster else client.publish
    try:
        for seq, policy in enumerate(policies, 1):
            client.hset(keys.policies, policy.data_type, policy.to_json())
            message = Message(op="policy", id=policy.data_type, node="catalog-publish",
                              ts=time.time(), seq=seq)
            announce(keys.channel, message.encode())
    finally:
        client.close()


def delete(redis_url: str, prefix: str, data_type: str) -> None:
    """Remove a published policy; replicas fall back to their built-in default."""
    client = redis.Redis.from_url(redis_url)
    keys = Keys(prefix)
    try:
        client.hdel(keys.policies, data_type)
        message = Message(op="policy", id=data_type, node="catalog-publish",
                          ts=time.time(), seq=1)
        client.publish(keys.channel, message.encode())
    finally:
        client.close()


def wait_applied(redis_url: str, prefix: str, data_type: str, generation: int,
                 nodes: Iterable[str], timeout: float = 10.0) -> None:
    """Wait until every node in ``nodes`` acknowledged ``generation`` of a policy."""
    client, keys = _client(redis_url, prefix, decode_responses=True)
    wanted = set(nodes)
    deadline = time.monotonic() + timeout
    try:
        while True:
            acks = client.hgetall(keys.policy_acks(data_type))
            done = {n for n, g in acks.items() if g == str(generation)}
            if wanted <= done:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"policy {data_type} generation {generation} not acknowledged"
                                   f" by {sorted(wanted - done)} within {timeout}s")
            time.sleep(0.02)
    finally:
        client.close()
