"""The operator's Prometheus metrics (names are a contract: docs/design.md,
"Metrics")."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector


class Metrics:
    """One set of gauges on its own registry (tests can make several)."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 process: bool = False) -> None:
        self.registry = registry or CollectorRegistry()
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self.l1_hit_ratio = Gauge(
            "cache_operator_l1_hit_ratio",
            "L1 hit ratio per data type over the last minute, all live replicas",
            ["data_type"], registry=self.registry)
        self.backplane_lag = Gauge(
            "cache_operator_backplane_lag_seconds",
            "Backplane lag of the last probe per replica (receive time - send time)",
            ["replica"], registry=self.registry)
        self.backplane_lag_p99 = Gauge(
            "cache_operator_backplane_lag_p99_seconds",
            "99th percentile of backplane lag over the last 60 probes of each live replica",
            registry=self.registry)
        self.replicas_in_sync = Gauge(
            "cache_operator_replicas_in_sync",
            "Live replicas that acknowledged the policy's current generation",
            ["policy"], registry=self.registry)
        self.policy_info = Gauge(
            "cache_operator_policy_info",
            "1 for each CacheInvalidationPolicy applied (labels describe it)",
            ["policy", "data_type", "strategy"], registry=self.registry)
        self.max_staleness = Gauge(
            "cache_operator_policy_max_staleness_seconds",
            "The policy's staleness budget (spec.maxStaleness), for alerts on stale reads",
            ["policy", "data_type"], registry=self.registry)
        self.policy_ready = Gauge(
            "cache_operator_policy_ready",
            "1 when the policy's Ready condition is True, else 0",
            ["policy"], registry=self.registry)
        self.expected_replicas = Gauge(
            "cache_operator_expected_replicas",
            "Replicas that should run the policy (the catalog workload's desired"
            " replicas, or the live ones when no workload is configured)",
            ["policy"], registry=self.registry)
        self.republished = Counter(
            "cache_operator_republish",
            "Policies published again because Redis no longer held them, by what noticed:"
            " epoch (Redis started a new invalidation epoch: it lost its state) or timer"
            " (the per-policy health round)",
            ["reason"], registry=self.registry)
        for reason in ("epoch", "timer"):
            self.republished.labels(reason)
        self._info: dict[str, tuple[str, str]] = {}
        self._staleness: dict[str, str] = {}
        self._replicas: set[str] = set()
        self._data_types: set[str] = set()

    def set_policy(self, policy: str, data_type: str, strategy: str) -> None:
        old = self._info.get(policy)
        if old is not None and old != (data_type, strategy):
            self.policy_info.remove(policy, *old)
        self._info[policy] = (data_type, strategy)
        self.policy_info.labels(policy, data_type, strategy).set(1)

    def set_staleness(self, policy: str, data_type: str, seconds: float) -> None:
        old = self._staleness.get(policy)
        if old is not None and old != data_type:
            self.max_staleness.remove(policy, old)
        self._staleness[policy] = data_type
        self.max_staleness.labels(policy, data_type).set(seconds)

    def set_readiness(self, policy: str, *, ready: bool, expected: int, in_sync: int) -> None:
        self.policy_ready.labels(policy).set(1 if ready else 0)
        self.expected_replicas.labels(policy).set(expected)
        self.replicas_in_sync.labels(policy).set(in_sync)

    def forget_policy(self, policy: str) -> None:
        """Drop every series of a policy (deleted, or a duplicate that does not apply)."""
        old = self._info.pop(policy, None)
        if old is not None:
            self.policy_info.remove(policy, *old)
        data_type = self._staleness.pop(policy, None)
        if data_type is not None:
            self.max_staleness.remove(policy, data_type)
        for gauge in (self.replicas_in_sync, self.policy_ready, self.expected_replicas):
            with contextlib.suppress(KeyError):
                gauge.remove(policy)

    def set_lags(self, lags: dict[str, float], p99: float | None = None) -> None:
        """Latest lag per live replica (replicas no longer live are dropped) and
        the p99 over recent probes (NaN when there is none: no live replica)."""
        self.backplane_lag_p99.set(float("nan") if p99 is None else p99)
        for gone in self._replicas - set(lags):
            self.backplane_lag.remove(gone)
        for replica, lag in lags.items():
            self.backplane_lag.labels(replica).set(lag)
        self._replicas = set(lags)

    def set_hit_ratios(self, ratios: dict[str, float]) -> None:
        for gone in self._data_types - set(ratios):
            self.l1_hit_ratio.remove(gone)
        for data_type, ratio in ratios.items():
            self.l1_hit_ratio.labels(data_type).set(ratio)
        self._data_types = set(ratios)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on a background thread (off the event loop)."""
        start_http_server(port, addr=addr, registry=self.registry)
