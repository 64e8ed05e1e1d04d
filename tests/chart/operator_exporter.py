"""The operator's metrics without Kubernetes, for the live Prometheus test.

`python -m cache_operator run` needs an API server for its kopf handlers; its
fleet measurement does not. This runs the operator's own FleetMonitor, Metrics
and PolicyStore against Redis with the chart's operator environment, and does
what the handlers do for each published policy (policy_info, replicas in sync),
so Prometheus scrapes the same metric families the real operator serves.
Usage: python -m tests.chart.operator_exporter POLICIES_YAML   (env: as the chart's)
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import yaml
from cache_operator.config import Config
from cache_operator.fleet import FleetMonitor, in_sync
from cache_operator.metrics import Metrics
from cache_operator.store import PolicyStore
from hybridcache.protocol import Keys
from redis.asyncio import Redis


async def main(docs: list[dict[str, Any]]) -> None:
    config = Config.from_env()
    metrics = Metrics()
    metrics.serve(config.metrics_port, addr="127.0.0.1")
    redis = Redis.from_url(config.redis_url)
    keys = Keys(config.key_prefix)
    store = PolicyStore(redis, keys)
    fleet = FleetMonitor(redis, keys, config, store, metrics)
    print("ready", flush=True)
    while True:
        snap = await fleet.round()
        for doc in docs:
            name, spec = doc["metadata"]["name"], doc["spec"]
            metrics.set_policy(name, spec["dataType"], spec["strategy"])
            stored = await store.stored(spec["dataType"])
            generation = stored.generation if stored is not None else 0
            acks = await store.acks(spec["dataType"])
            metrics.replicas_in_sync.labels(name).set(in_sync(snap.live, acks, generation))
        await asyncio.sleep(config.probe_interval)


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        policies = [d for d in yaml.safe_load_all(f) if d]
    asyncio.run(main(policies))
