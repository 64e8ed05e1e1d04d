"""The operator's Prometheus metrics (names are a contract: DESIGN.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, start_http_server
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
        self.replicas_in_sync = Gauge(
            "cache_operator_replicas_in_sync",
            "Live replicas that acknowledged the policy's current generation",
            ["policy"], registry=self.registry)
        self.policy_info = Gauge(
            "cache_operator_policy_info",
            "1 for each CacheInvalidationPolicy applied (labels describe it)",
            ["policy", "data_type", "strategy"], registry=self.registry)
        self._info: dict[str, tuple[str, str]] = {}
        self._replicas: set[str] = set()
        self._data_types: set[str] = set()

    def set_policy(self, policy: str, data_type: str, strategy: str) -> None:
        old = self._info.get(policy)
        if old is not None and old != (data_type, strategy):
            self.policy_info.remove(policy, *old)
        self._info[policy] = (data_type, strategy)
        self.policy_info.labels(policy, data_type, strategy).set(1)

    def forget_policy(self, policy: str) -> None:
        old = self._info.pop(policy, None)
        if old is not None:
            self.policy_info.remove(policy, *old)
        try:
            self.replicas_in_sync.remove(policy)
        except KeyError:
            pass

    def set_lags(self, lags: dict[str, float]) -> None:
        """Latest lag per live replica; replicas no longer live are dropped."""
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
