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

import redis
from hybridcache.keys import Keys
from hybridcache.policy import Policy
from hybridcache.wire import Message


def publish(redis_url: str, prefix: str, policies: Iterable[Policy]) -> None:
    client = redis.Redis.from_url(redis_url)
    keys = Keys(prefix)
    try:
        for seq, policy in enumerate(policies, 1):
            client.hset(keys.policies, policy.data_type, policy.to_json())
            message = Message(op="policy", id=policy.data_type, node="catalog-publish",
                              ts=time.time(), seq=seq)
            client.publish(keys.channel, message.encode())
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
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    wanted = set(nodes)
    deadline = time.monotonic() + timeout
    try:
        while True:
            acks = client.hgetall(Keys(prefix).policy_acks(data_type))
            done = {n for n, g in acks.items() if g == str(generation)}
            if wanted <= done:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"policy {data_type} generation {generation} not acknowledged"
                                   f" by {sorted(wanted - done)} within {timeout}s")
            time.sleep(0.02)
    finally:
        client.close()
