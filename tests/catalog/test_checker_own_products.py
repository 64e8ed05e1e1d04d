"""The checker on products of its own (what the chart runs): it creates them,
checks only them, deletes them at exit, and leaves every other record alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.support.catalog_cluster import Cluster

from .conftest import WRITE_TOKEN

pytestmark = pytest.mark.slow


def test_checker_creates_checks_and_deletes_its_own_products(cluster: Cluster) -> None:
    with httpx.Client(timeout=5) as client:
        url = cluster.urls[0]
        before = client.get(f"{url}/products", params={"limit": 100}).json()["items"]
        category_before = client.get(f"{url}/categories/1").json()
        result = subprocess.run(
            [sys.executable, "-m", "catalog_checker", "--duration", "2", "--seed", "3",
             "--own-products", "3", "--readers", "2", "--writers", "1",
             "--read-pause", "0.01", "--write-pause", "0.05",
             *[a for u in cluster.urls for a in ("--url", u)]],
            capture_output=True, text=True, timeout=60,
            env=dict(os.environ, CATALOG_WRITE_TOKEN=WRITE_TOKEN))
        assert result.returncode == 0, result.stdout + result.stderr
        summary = json.loads(result.stdout)
        types = summary["data_types"]
        assert types["price"]["writes"] > 0 and types["price"]["reads"] > 0
        assert types["category"]["reads"] == 0 and types["category"]["writes"] == 0
        after = client.get(f"{url}/products", params={"limit": 100}).json()["items"]
        assert after == before  # nobody else's products changed
        assert client.get(f"{url}/categories/1").json() == category_before
        owned = summary["products"]
        assert len(owned) == 3 and not set(owned) & {p["id"] for p in before}
        for pid in owned:  # made for the run, deleted after it
            assert client.get(f"{url}/products/{pid}").status_code == 404


def test_a_refused_setup_is_one_readable_line(cluster: Cluster) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "catalog_checker", "--duration", "1", "--own-products", "1",
         "--url", cluster.urls[0]], capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "CATALOG_WRITE_TOKEN"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "-> 401" in result.stderr and "CATALOG_WRITE_TOKEN" in result.stderr


def test_own_products_rejects_nonsense() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "catalog_checker", "--url", "http://127.0.0.1:1",
         "--own-products", "-4"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "not between 0 and 1000" in result.stderr
