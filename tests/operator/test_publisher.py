"""PolicyPublisher: the Redis side of publishing, on a real Redis."""

from __future__ import annotations

import time
from typing import Any

from cache_operator.publisher import PolicyPublisher, Sequencer
from hybridcache.keys import Keys
from hybridcache.policy import Policy
from hybridcache.wire import decode_message

KEYS = Keys("hc:")
PRICE = Policy("price", "active", 600.0, 30.0, ("product:{id}",), generation=3,
               source="shop/price")


async def _messages(pubsub: Any) -> list[Any]:
    out = []
    while (msg := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3)):
        out.append(decode_message(msg["data"]))
    return out


async def test_publish_and_unpublish(redis: Any) -> None:
    publisher = PolicyPublisher(redis, KEYS)
    pubsub = redis.pubsub()
    await pubsub.subscribe(KEYS.channel)
    await pubsub.get_message(timeout=1)

    await publisher.publish(PRICE)
    assert await publisher.stored("price") == PRICE
    assert (await publisher.stored_raw("price"))["source"] == "shop/price"
    # another source: left alone, nothing published
    assert await publisher.unpublish("price", source="other/price") == -1
    assert await publisher.stored("price") == PRICE
    # the owner: removed and announced
    assert await publisher.unpublish("price", source="shop/price") == 1
    assert await publisher.stored("price") is None
    # nothing stored: nothing to announce
    assert await publisher.unpublish("price") == 0
    messages = await _messages(pubsub)
    assert [(m.op, m.id, m.node) for m in messages] == [("policy", "price", "cache-operator")] * 2
    assert messages[0].seq < messages[1].seq
    await pubsub.aclose()


async def test_acks_and_unreadable_policies(redis: Any) -> None:
    publisher = PolicyPublisher(redis, KEYS)
    await redis.hset(KEYS.policy_acks("price"), mapping={"a": "3", "b": "2", "c": "x"})
    assert await publisher.acks("price") == {"a": 3, "b": 2}
    await redis.hset(KEYS.policies, "stock", b"{not json")
    assert await publisher.stored("stock") is None and await publisher.stored_raw("stock") is None


def test_sequence_increases_across_restarts() -> None:
    first = Sequencer()
    a = [first.next() for _ in range(3)]
    time.sleep(0.01)
    second = Sequencer()  # a restarted operator (which takes far longer than 10 ms)
    b = second.next()
    assert a == sorted(a) and len(set(a)) == 3 and b > a[-1]
