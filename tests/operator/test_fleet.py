"""Fleet health measured from real hybridcache replicas on a real Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cache_operator import fleet as fleet_module
from cache_operator.config import Config
from cache_operator.fleet import FleetMonitor
from cache_operator.metrics import Metrics
from cache_operator.publisher import PolicyPublisher
from hybridcache.keys import Keys

from tests.support.waiting import eventually

KEYS = Keys("hc:")


def monitor(redis: Any, **config: Any) -> tuple[FleetMonitor, Metrics]:
    metrics = Metrics()
    cfg = Config(probe_interval=0.5, **config)
    return FleetMonitor(redis, KEYS, cfg, PolicyPublisher(redis, KEYS), metrics), metrics


async def test_probe_measures_each_replica(replicas: Any, redis: Any) -> None:
    await replicas("r-near")
    await replicas("r-far", clock=lambda: time.time() + 0.4)
    # a replica that stopped heartbeating 60 s ago is not live
    seconds, _ = await redis.time()
    await redis.zadd(KEYS.nodes, {"r-gone": seconds - 60})
    mon, metrics = monitor(redis)
    snap = await mon.round()
    assert snap.live == ("r-far", "r-near")
    assert 0.4 <= snap.lags["r-far"] < 1.0
    assert 0.0 <= snap.lags["r-near"] < 0.2
    assert snap.lag_p99 == snap.lags["r-far"]
    assert metrics.registry.get_sample_value(
        "cache_operator_backplane_lag_p99_seconds") == snap.lag_p99
    assert metrics.registry.get_sample_value(
        "cache_operator_backplane_lag_seconds", {"replica": "r-far"}) == snap.lags["r-far"]
    assert metrics.registry.get_sample_value(
        "cache_operator_backplane_lag_seconds", {"replica": "r-gone"}) is None
    # probe hashes expire on their own
    keys = [k async for k in redis.scan_iter(match="hc:probe:*")]
    ttls = [await redis.ttl(k) for k in keys]
    assert ttls and all(0 < ttl <= 300 for ttl in ttls)


async def test_hit_ratio_from_published_counters(replicas: Any, redis: Any) -> None:
    a = await replicas("r-a")
    b = await replicas("r-b")
    mon, metrics = monitor(redis)
    await mon.round()  # the baseline: no traffic yet

    async def value() -> str:
        return "v"

    for node, misses, hits in ((a, 2, 6), (b, 2, 2)):
        for i in range(misses):
            await node.get_or_create(f"stock:{i}", value, tags=[f"product:{i}"])
        for i in range(hits):
            await node.get_or_create(f"stock:{i % misses}", value, tags=[f"product:{i}"])
    # wait until both replicas published their counters (every 0.2 s)
    async def published() -> bool:
        stats = [await redis.hgetall(KEYS.stats(n)) for n in ("r-a", "r-b")]
        return [s.get(b"l1_hit:stock") for s in stats] == [b"6", b"2"]

    await eventually(published, timeout=10, what="both replicas' counters published")
    snap = await mon.round()
    assert snap.hit_ratios["stock"] == pytest.approx(8 / 12)
    assert metrics.registry.get_sample_value(
        "cache_operator_l1_hit_ratio", {"data_type": "stock"}) == pytest.approx(8 / 12)


def test_hit_ratio_window_and_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(fleet_module.time, "monotonic", lambda: now[0])
    mon = FleetMonitor.__new__(FleetMonitor)
    mon._history = fleet_module.deque()
    n = ("node", "price")

    def step(seconds: float, counters: dict[tuple[str, str], tuple[int, int]]) -> Any:
        now[0] += seconds
        return mon._update_ratios(("node",), counters)

    assert step(0, {n: (100, 100)}) == {}  # existing counters are the baseline
    assert step(10, {n: (130, 110)}) == {"price": 0.75}
    assert step(10, {n: (160, 120)}) == {"price": 0.75}  # 60 hits, 20 misses in the window
    # a new replica's counters start from zero within the window
    m = ("other", "price")
    assert step(10, {n: (160, 120), m: (20, 0)}) == {"price": 80 / 100}
    # the node restarted: its counters went down, they count from zero
    assert step(10, {n: (5, 5), m: (20, 0)}) == {"price": 25 / 30}
    # after the window has passed with no traffic, there is no ratio
    assert step(70, {n: (5, 5), m: (20, 0)}) == {}
    assert step(70, {n: (5, 5), m: (20, 0)}) == {}


async def test_round_survives_redis_outage(redis_server: Any, redis: Any) -> None:
    mon, _ = monitor(redis)
    redis_server.stop()
    snap = await mon.round()
    assert not snap.redis_ok and snap.error
