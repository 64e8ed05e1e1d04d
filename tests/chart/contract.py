"""The metric names of docs/design.md: the only ones dashboards and alerts may use."""

from __future__ import annotations

import re

CATALOG_METRICS = {
    "hybridcache_requests_total", "hybridcache_factory_calls_total",
    "hybridcache_stampede_coalesced_total", "hybridcache_invalidations_total",
    "hybridcache_backplane_lag_seconds", "hybridcache_backplane_connected",
    "hybridcache_l1_entries", "hybridcache_l1_bytes", "hybridcache_l2_errors_total",
    # added by the library (missed-message resyncs) and the catalog (consistency checker)
    "hybridcache_backplane_resyncs_total", "catalog_checker_stale_reads_total",
    "catalog_checker_reads_total", "catalog_invalidations_total",
    "catalog_invalidation_unconfirmed_total",
    # RED metrics of the catalog's HTTP API
    "catalog_http_requests_total", "catalog_http_request_duration_seconds",
}
OPERATOR_METRICS = {
    "cache_operator_l1_hit_ratio", "cache_operator_backplane_lag_seconds",
    "cache_operator_replicas_in_sync", "cache_operator_policy_info",
    # per-policy facts the alerts are built on
    "cache_operator_policy_max_staleness_seconds", "cache_operator_policy_ready",
    "cache_operator_expected_replicas", "cache_operator_backplane_lag_p99_seconds",
}
# Recording rules the chart's PrometheusRule defines.
RECORDED = {"hybridcache:backplane_lag_budget_seconds"} | {
    f"{name}:ratio_rate{w}" for name in ("catalog_checker:stale_reads",
                                          "catalog:invalidations_unconfirmed")
    for w in ("5m", "30m", "1h", "6h")}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
PROMQL_WORDS = {
    "sum", "by", "without", "rate", "increase", "histogram_quantile", "max", "min", "count",
    "avg", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "vector",
    "scalar", "bool", "offset", "le", "topk", "bottomk", "abs", "clamp_min", "clamp_max",
    "changes", "resets", "label_replace", "absent",
}


def metric_names(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that name series (not functions, labels, words)."""
    text = re.sub(r'"[^"]*"', '""', expr)            # drop string literals
    text = re.sub(r"\{[^}]*\}", "{}", text)           # drop label matchers
    text = re.sub(r"\[[^\]]*\]", "[]", text)          # drop range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text)) - PROMQL_WORDS
    return {n for n in names if not re.fullmatch(r"e\d*", n)}


def is_contract(name: str) -> bool:
    base = name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in CATALOG_METRICS:
            base = name[: -len(suffix)]
    return base in CATALOG_METRICS | OPERATOR_METRICS | RECORDED
