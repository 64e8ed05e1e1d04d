"""METRICS_PORT: /metrics on a port of its own and no longer on the public
one (so a NetworkPolicy can open it to Prometheus alone); without it, the
public port serves /metrics as before. Real replica processes."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from catalog.config import Settings

from tests.support.catalog_cluster import Cluster, http_json
from tests.support.redis_server import free_port


def _text(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def test_metrics_move_to_their_own_port(sqlite_url: str, tmp_path: Path) -> None:
    metrics_port = free_port()
    with Cluster(1, database_url=sqlite_url, redis_url=None, workdir=tmp_path,
                 extra_env={"METRICS_PORT": str(metrics_port)}) as cluster:
        public = cluster.urls[0]
        assert http_json(public + "/products/1")[0] == 200
        status, _, body = http_json(public + "/metrics")
        assert status == 404 and body["error"] == "not_found"
        status, text = _text(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        # The same registry: the public port's request was counted.
        assert 'catalog_http_requests_total{' in text and 'route="/products/{id}"' in text


def test_without_metrics_port_the_public_port_serves_them(sqlite_url: str,
                                                         tmp_path: Path) -> None:
    with Cluster(1, database_url=sqlite_url, redis_url=None, workdir=tmp_path) as cluster:
        status, text = _text(cluster.urls[0] + "/metrics")
        assert status == 200 and "catalog_http_requests_total" in text


@pytest.mark.parametrize("raw", ["0", "-1", "70000", "http"])
def test_a_bad_metrics_port_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="METRICS_PORT"):
        Settings.from_env({"METRICS_PORT": raw})
