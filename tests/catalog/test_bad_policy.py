"""A bad policy written straight into Redis (not through the operator, which
would refuse it) never turns into a 500: the replica keeps its last good
policy for that data type, and says why in a metric.

In process (Starlette's TestClient) against a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from catalog.app import create_app
from catalog.config import Settings
from hybridcache.keys import Keys
from hybridcache.policy import Policy
from hybridcache.wire import Message
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from tests.support import policy_publish as publish
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

GOOD = Policy("price", "active", 600.0, 30.0, ("product:{id}",), "eventual", 1.0,
              generation=5, source="test/good")
BAD_POLICIES: list[tuple[str, bytes]] = [
    ("out_of_bounds", orjson.dumps({**GOOD.to_dict(), "generation": 6,
                                    "tags": [f"product:{{id}}:{i}" for i in range(65)]})),
    # what `apply` stored for a 400-digit duration before durations were bounded
    ("malformed", orjson.dumps({**GOOD.to_dict(), "generation": 7, "expiration": None})),
    ("out_of_bounds", orjson.dumps({**GOOD.to_dict(), "generation": 8, "expiration": 1e300})),
    ("not_json", b'{"dataType": "price", "tags": ['),
    ("data_type_mismatch", orjson.dumps({**GOOD.to_dict(), "dataType": "stock"})),
]


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("hybridcache_policy_rejected_total",
                                     {"data_type": "price", "reason": reason}) or 0.0


@pytest.fixture
def node(sqlite_url: str, redis_server: RedisServer) -> Iterator[tuple[TestClient, Settings]]:
    settings = Settings(database_url=sqlite_url, redis_url=redis_server.url,
                        node_name="bad-policy-node")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, settings


@pytest.mark.parametrize(("reason", "raw"), BAD_POLICIES, ids=[r for r, _ in BAD_POLICIES])
def test_a_bad_stored_policy_keeps_the_last_good_one(
        node: tuple[TestClient, Settings], redis_server: RedisServer,
        reason: str, raw: bytes) -> None:
    client, settings = node
    keys = Keys(settings.key_prefix)
    publish.publish(redis_server.url, settings.key_prefix, [GOOD])
    publish.wait_applied(redis_server.url, settings.key_prefix, "price", GOOD.generation,
                         [settings.node_name])

    before = rejected(reason)
    r = redis.Redis.from_url(redis_server.url)
    try:
        r.hset(keys.policies, "price", raw)
        r.publish(keys.channel, Message("policy", "price", "someone", time.time(), 1).encode())
        wait_until(lambda: rejected(reason) == before + 1, what=f"a {reason} rejection counted")
        acked: Any = r.hget(keys.policy_acks("price"), settings.node_name)
        assert acked == str(GOOD.generation).encode()  # still the good generation
    finally:
        r.close()

    assert client.get("/policies").json()["price"] == GOOD.to_dict()
    read = client.get("/products/2")
    assert read.status_code == 200, read.text
    write = client.put("/products/2/price", json={"price": "12.34"})
    assert write.status_code == 200, write.text
    assert write.headers["x-invalidated-tags"] == "product:2"  # GOOD's tags
    assert client.get("/products/2").json()["price"] == "12.34"
