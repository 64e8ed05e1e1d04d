"""Fleet health: which replicas are live, how far behind the backplane each one
is, how often L1 serves each data type, and which replicas run a policy.

All of it is read from Redis, where the replicas publish it (docs/design.md,
"Redis keys" and "Metrics"):

- ``{prefix}nodes`` (sorted set): node id -> wall time of its last heartbeat;
  a node is live if that is newer than ``REPLICA_TIMEOUT``.
- probes: the operator publishes ``{"op": "probe", "id": <probe id>, "ts": t}``;
  each node writes its receive time into the hash ``{prefix}probe:<probe id>``.
  Lag of a replica = its receive time - ``t``.
- ``{prefix}stats:<node>`` (hash): cumulative counters ``l1_hit:<dataType>`` and
  ``l1_miss:<dataType>``; the hit ratio is computed over the counters' growth
  since the previous round (a restarted replica's counters count from zero).
- ``{prefix}policy-acks:<dataType>`` (hash): node id -> applied generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hybridcache.keys import Keys
from hybridcache.redis_clients import AnyRedis, is_cluster
from hybridcache.wire import Message
from redis.exceptions import RedisClusterException, RedisError

from .background import BackgroundLoop
from .config import Config
from .metrics import Metrics
from .publisher import PolicyPublisher, decoded
from .redaction import redact

log = logging.getLogger("cache_operator.fleet")

HIT_PREFIX = "l1_hit:"
MISS_PREFIX = "l1_miss:"
LAG_SAMPLES = 60  # per replica, for the p99
HIT_RATIO_WINDOW = 60.0  # seconds of counter growth behind the hit ratio


def p99(values: Iterable[float]) -> float | None:
    """Nearest-rank 99th percentile (None for no values)."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(0.99 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class FleetSnapshot:
    """The result of one round."""

    live: tuple[str, ...] = ()
    lags: dict[str, float] = field(default_factory=dict)  # last probe, per replica
    lag_p99: float | None = None  # over recent probes of the live replicas
    hit_ratios: dict[str, float] = field(default_factory=dict)  # per data type
    redis_ok: bool = True
    error: str | None = None


def in_sync(live: Iterable[str], acks: dict[str, int], generation: int) -> int:
    """How many live replicas have applied ``generation`` (or a later one)."""
    return sum(1 for node in live if acks.get(node, -1) >= generation)


class FleetMonitor(BackgroundLoop):
    """Runs a health round every ``probe_interval`` and keeps the last snapshot."""

    task_name = "cache-operator-fleet"

    def __init__(self, redis: AnyRedis, keys: Keys, config: Config, publisher: PolicyPublisher,
                 metrics: Metrics | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.redis = redis
        self.keys = keys
        self.config = config
        self.publisher = publisher
        self.metrics = metrics
        self.clock = clock
        self.snapshot = FleetSnapshot()
        self._samples: dict[str, deque[float]] = {}
        self._history: deque[tuple[float, dict[tuple[str, str], tuple[int, int]]]] = deque()

    async def live_replicas(self) -> tuple[str, ...]:
        """Nodes whose heartbeat (stamped with Redis's own clock) is recent."""
        seconds, micros = await self.redis.time()
        now = seconds + micros / 1_000_000
        nodes: list[bytes] = await self.redis.zrangebyscore(  # type: ignore[assignment]
            self.keys.nodes, now - self.config.replica_timeout, "+inf")
        return tuple(sorted(decoded(n) for n in nodes))

    async def probe(self, live: tuple[str, ...]) -> dict[str, float]:
        """Publish one probe; wait until every live replica answered (or the wait
        is over). Returns lag per answering replica."""
        probe_id = f"{self.publisher.node}-{self.publisher.seq.next()}"
        key = self.keys.probe(probe_id)
        ttl = max(60, math.ceil(self.config.probe_interval * 6))
        sent = self.clock()
        msg = Message(op="probe", id=probe_id, node=self.publisher.node, ts=sent,
                      seq=self.publisher.seq.next()).encode()
        if is_cluster(self.redis):
            # The probe hash is on any shard, the channel in the state slot:
            # the hash first, then the message (sharded pub/sub).
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, "~sent", repr(sent))
                pipe.expire(key, ttl)
                await pipe.execute()
            await self.redis.spublish(self.keys.channel, msg)
        else:
            async with self.redis.pipeline(transaction=True) as pipe:
                # Pre-create the hash with a TTL so late answers cannot leak a key.
                pipe.hset(key, "~sent", repr(sent))
                pipe.expire(key, ttl)
                pipe.publish(self.keys.channel, msg)
                await pipe.execute()
        deadline = time.monotonic() + self.config.probe_wait
        answers: dict[str, float] = {}
        wanted = set(live)
        while True:
            raw: dict[bytes, bytes] = await self.redis.hgetall(key)  # type: ignore[assignment]
            answers = {}
            for node, value in raw.items():
                name = decoded(node)
                if name == "~sent":
                    continue
                try:
                    answers[name] = float(value)
                except ValueError:
                    continue
            if wanted <= set(answers) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        return {node: max(0.0, received - sent) for node, received in answers.items()}

    async def round(self) -> FleetSnapshot:
        """One health round: live replicas, a probe, the counters."""
        try:
            live = await self.live_replicas()
            lags = await self.probe(live)
            counters = await self._read_counters(live)
        except (RedisError, RedisClusterException, OSError) as exc:
            error = redact(str(exc))
            log.warning("fleet health round failed: %s", error)
            self.snapshot = FleetSnapshot(redis_ok=False, error=error)
            return self.snapshot
        ratios = self._update_ratios(live, counters)
        live_set = set(live)
        for node, lag in lags.items():
            self._samples.setdefault(node, deque(maxlen=LAG_SAMPLES)).append(lag)
        for node in list(self._samples):
            if node not in live_set:
                del self._samples[node]
        lags = {node: lag for node, lag in lags.items() if node in live_set}
        snap = FleetSnapshot(
            live=live, lags=lags,
            lag_p99=p99(v for samples in self._samples.values() for v in samples),
            hit_ratios=ratios,
        )
        self.snapshot = snap
        if self.metrics is not None:
            self.metrics.set_lags(lags, snap.lag_p99)
            self.metrics.set_hit_ratios(ratios)
        return snap

    async def _read_counters(self, live: tuple[str, ...]) -> dict[tuple[str, str], tuple[int, int]]:
        """(node, dataType) -> (l1 hits, l1 misses), cumulative as published."""
        if not live:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for node in live:
                pipe.hgetall(self.keys.stats(node))
            results = await pipe.execute()
        out: dict[tuple[str, str], list[int]] = {}
        for node, stats in zip(live, results, strict=True):
            for raw_field, raw_value in stats.items():
                name = decoded(raw_field)
                if name.startswith(HIT_PREFIX):
                    dt, idx = name[len(HIT_PREFIX):], 0
                elif name.startswith(MISS_PREFIX):
                    dt, idx = name[len(MISS_PREFIX):], 1
                else:
                    continue
                try:
                    value = int(float(raw_value))
                except ValueError:
                    continue
                out.setdefault((node, dt), [0, 0])[idx] = max(0, value)
        return {key: (v[0], v[1]) for key, v in out.items()}

    def _update_ratios(self, live: tuple[str, ...],
                       counters: dict[tuple[str, str], tuple[int, int]]) -> dict[str, float]:
        """Hit ratio per data type over the counters' growth in the last
        ``HIT_RATIO_WINDOW`` seconds. The base of a counter is its value in the
        oldest snapshot of the window; a counter that is not in it appeared
        within the window (it started from zero), and one that went down belongs
        to a restarted replica (it counts from zero). A data type with no traffic
        in the window has no ratio."""
        now = time.monotonic()
        self._history.append((now, counters))
        while len(self._history) > 1 and self._history[1][0] <= now - HIT_RATIO_WINDOW:
            self._history.popleft()
        oldest = self._history[0][1]
        hits: dict[str, int] = {}
        total: dict[str, int] = {}
        for key, (h, m) in counters.items():
            bh, bm = oldest.get(key, (0, 0))
            if h < bh or m < bm:
                bh, bm = 0, 0
            hits[key[1]] = hits.get(key[1], 0) + h - bh
            total[key[1]] = total.get(key[1], 0) + (h - bh) + (m - bm)
        return {dt: hits[dt] / n for dt, n in total.items() if n > 0}

    async def run(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            await self.round()
            elapsed = time.monotonic() - started
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(),
                                       max(0.0, self.config.probe_interval - elapsed))
