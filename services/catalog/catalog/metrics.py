"""The catalog's own Prometheus metrics (the cache's `hybridcache_*` metrics
are registered by the library on the same default registry).

Kept few and cheap: the hot read path adds one counter increment per request.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

DB_QUERIES = Counter(
    "catalog_db_queries_total",
    "Database round trips made by this replica, by the data type they load or write.",
    ["data_type", "kind"],
)


class ResponseCounts:
    """``catalog_http_responses_total{route,method,status}``, counted in a plain
    dict on the request path and turned into a metric only when scraped (a
    prometheus Counter takes a lock per increment)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("catalog_http_responses",
                                     "HTTP responses by route template, method and status code.",
                                     labels=["route", "method", "status"])
        for (route, method, status), value in list(self.counts.items()):
            family.add_metric([route, method, str(status)], value)
        yield family


HTTP_RESPONSES = ResponseCounts()
REGISTRY.register(HTTP_RESPONSES)
INVALIDATIONS = Counter(
    "catalog_invalidations_total",
    "Tag invalidations issued by writes, by data type and consistency.",
    ["data_type", "consistency"],
)
ACK_MISSING = Counter(
    "catalog_invalidation_unconfirmed_total",
    "Acknowledged invalidations that some live replica did not confirm in time.",
    ["data_type"],
)
ACK_WAIT = Histogram(
    "catalog_invalidation_ack_wait_seconds",
    "Time an acknowledged write waited for every live replica to confirm.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
OUTBOX_PUBLISHED = Counter(
    "catalog_outbox_published_total",
    "Outbox rows (committed changes to cached tables) this replica's relay invalidated.",
)
OUTBOX_AGE = Histogram(
    "catalog_outbox_age_seconds",
    "From a change's commit (the database's clock) to its invalidation by the relay.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RELAY_ACTIVE = Gauge(
    "catalog_outbox_relay_active",
    "1 while this replica holds the outbox relay role (one per database).",
)
