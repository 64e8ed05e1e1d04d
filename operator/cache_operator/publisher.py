"""Publishing compiled policies to Redis and on the backplane (redis.asyncio).

The wire contract (docs/design.md, "The backplane" and "Redis keys";
``hybridcache.keys``, ``.wire``, ``.policy``):

- publish: ``HSET {prefix}policies <dataType> <Policy.to_json()>`` then
  ``PUBLISH {prefix}backplane <Message(op="policy", id=dataType)>``, in one
  MULTI/EXEC so no replica can see the message before the hash holds the policy
  (on Redis Cluster: one script, the message by ``SPUBLISH``);
- delete: ``HDEL`` and the same ``policy`` message; receivers re-read the field,
  find it gone and return the data type to their defaults.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from hybridcache.keys import Keys
from hybridcache.policy import Policy
from hybridcache.redis_clients import AnyRedis, is_cluster
from hybridcache.wire import Message

from .config import NODE_NAME

# Delete a policy only if it is still the one this source published (a policy
# re-published since by another custom resource or by `apply` is left alone).
_UNPUBLISH = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
if ARGV[2] ~= '' then
  local ok, body = pcall(cjson.decode, raw)
  if not ok or type(body) ~= 'table' or body['source'] ~= ARGV[2] then return -1 end
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 1
"""
# Redis Cluster: the policies hash and the backplane channel share the state
# slot (Keys cluster layout), so one script stores and announces, as
# MULTI/EXEC does on one server; the message goes out by sharded pub/sub.
_PUBLISH_CLUSTER = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SPUBLISH', KEYS[2], ARGV[3])
return 1
"""


class Sequencer:
    """``seq`` for this sender: strictly increasing within the process and, being
    seeded from the wall clock in microseconds, across restarts too."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, time.time_ns() // 1000)
        return self._last


class PolicyPublisher:
    """The operator's (and the ``apply`` command's) view of the shared Redis."""

    def __init__(self, redis: AnyRedis, keys: Keys, *, node: str = NODE_NAME,
                 sequencer: Sequencer | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.node = node
        self.seq = sequencer or Sequencer()
        self.cluster = is_cluster(redis)
        self._unpublish = redis.register_script(
            _UNPUBLISH.replace("'PUBLISH'", "'SPUBLISH'") if self.cluster else _UNPUBLISH)
        self._publish_cluster = redis.register_script(_PUBLISH_CLUSTER)

    def message(self, op: str, ident: str) -> bytes:
        msg = Message(op=op, id=ident, node=self.node, ts=time.time(), seq=self.seq.next())
        return bytes(msg.encode())

    async def publish(self, policy: Policy) -> None:
        if self.cluster:
            await self._publish_cluster(
                keys=[self.keys.policies, self.keys.channel],
                args=[policy.data_type, policy.to_json(),
                      self.message("policy", policy.data_type)])
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.policies, policy.data_type, policy.to_json())
            pipe.publish(self.keys.channel, self.message("policy", policy.data_type))
            await pipe.execute()

    async def unpublish(self, data_type: str, *, source: str | None = None) -> int:
        """Return the data type to the service's defaults. With ``source``, only if
        the stored policy came from that source. 1: removed, 0: nothing stored,
        -1: stored by another source (left alone)."""
        result = await self._unpublish(
            keys=[self.keys.policies, self.keys.channel],
            args=[data_type, source or "", self.message("policy", data_type)],
        )
        return int(result)

    async def stored(self, data_type: str) -> Policy | None:
        """The policy currently in Redis for a data type (None: none, or unreadable)."""
        raw = await self.redis.hget(self.keys.policies, data_type)
        if raw is None:
            return None
        try:
            return Policy.from_wire(raw)
        except ValueError:
            return None

    async def stored_raw(self, data_type: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.keys.policies, data_type)
        if raw is None:
            return None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    async def acks(self, data_type: str) -> dict[str, int]:
        """node id -> generation of this data type's policy that node has applied."""
        raw = await self.redis.hgetall(self.keys.policy_acks(data_type))
        out: dict[str, int] = {}
        for node, gen in raw.items():
            try:
                out[decoded(node)] = int(gen)
            except (TypeError, ValueError):
                continue
        return out


def decoded(value: bytes | str) -> str:
    """A hash field or set member as text: the client returns bytes (it is made
    without ``decode_responses``, so policy JSON stays bytes for orjson)."""
    return value.decode() if isinstance(value, bytes) else value
