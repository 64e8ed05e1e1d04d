"""The catalog's own Prometheus metrics (the cache's `hybridcache_*` metrics
are registered by the library on the same default registry).

Kept few and cheap: the hot read path adds one dict increment and one latency
observation (a bisect and three list updates) per request; both become metric
families only when scraped.

HTTP metrics (RED: rate, errors, duration):

- ``catalog_http_requests_total{method,route,status}``: responses by route
  *template* (``/products/{id}``), so the label set is bounded by the route
  table; a path that matches no route is counted as ``route="unmatched"``.
- ``catalog_http_request_duration_seconds{method,route}``: handler time of
  matched routes (unmatched paths answer 404 before any handler runs).
- ``catalog_http_responses_total``: the same counts under the name dashboards
  used before the RED metrics; kept for one release so existing dashboards
  and recording rules keep working, then removed (docs/deployment.md).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

DB_QUERIES = Counter(
    "catalog_db_queries_total",
    "Database round trips made by this replica, by the data type they load or write.",
    ["data_type", "kind"],
)


UNMATCHED = "unmatched"
# Seconds; the hot path answers in well under a millisecond from L1.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0)


class ResponseCounts:
    """Responses counted in a plain dict keyed ``(route, method, status)`` on
    the request path, turned into ``catalog_http_requests_total`` (and the
    older ``catalog_http_responses_total``) only when scraped: a prometheus
    Counter takes a lock per increment, and the hot path cannot afford it."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        items = list(self.counts.items())
        red = CounterMetricFamily("catalog_http_requests",
                                  "HTTP requests answered, by method, route template and status.",
                                  labels=["method", "route", "status"])
        legacy = CounterMetricFamily("catalog_http_responses",
                                     "Deprecated: catalog_http_requests_total under its old name.",
                                     labels=["route", "method", "status"])
        for (route, method, status), value in items:
            red.add_metric([method, route, str(status)], value)
            legacy.add_metric([route, method, str(status)], value)
        yield red
        yield legacy


class Latency:
    """One route's duration histogram as three plain lists (per-bucket counts,
    not cumulative; cumulated at scrape time)."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds


class RequestDurations:
    """``catalog_http_request_duration_seconds{method,route}``, lock-free for
    the same reason as ``ResponseCounts``; one ``Latency`` per route, created
    when the route table is built, so the label set is the route table."""

    def __init__(self) -> None:
        self.by_route: dict[tuple[str, str], Latency] = {}

    def for_route(self, method: str, route: str) -> Latency:
        return self.by_route.setdefault((method, route), Latency())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily("catalog_http_request_duration_seconds",
                                       "Time spent answering a request, by method and"
                                       " route template.", labels=["method", "route"])
        bounds = [*(repr(b) for b in DURATION_BUCKETS), "+Inf"]
        for (method, route), latency in list(self.by_route.items()):
            running, cumulative = 0, []
            for bound, n in zip(bounds, list(latency.buckets), strict=True):
                running += n
                cumulative.append((bound, running))
            family.add_metric([method, route], cumulative, latency.total)
        yield family


HTTP_RESPONSES = ResponseCounts()
REGISTRY.register(HTTP_RESPONSES)
HTTP_DURATIONS = RequestDurations()
REGISTRY.register(HTTP_DURATIONS)
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
TAGS_PER_WRITE = Histogram(
    "catalog_invalidation_tags_per_write",
    "Tags one write invalidated (its policy's invalidates, plus changed lists), by data type:"
    " a policy that flushes too much shows here.",
    ["data_type"],
    buckets=(0, 1, 2, 3, 4, 6, 8, 16, 32, 64),
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
