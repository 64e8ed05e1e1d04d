"""``/metrics`` on a port of its own (METRICS_PORT), apart from the public API.

prometheus-client's own HTTP server, on a daemon thread: it serves the same
default registry the app's counters live in, shares nothing with uvicorn's
event loop, and needs neither the public port's limits nor its routes (only
Prometheus may reach it: the chart's NetworkPolicy says so).
"""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

log = logging.getLogger("catalog.metrics")


def start_metrics_server(host: str, port: int) -> None:
    """Serve the default registry on ``host:port`` until the process exits."""
    start_http_server(port, addr=host)
    log.info("metrics on http://%s:%s/metrics (not on the public port)", host, port)
