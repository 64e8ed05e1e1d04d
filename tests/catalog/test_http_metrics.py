"""RED metrics: requests by method, route template and status, and their
duration, with a label set bounded by the route table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from catalog.app import create_app
from catalog.config import Settings
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=sqlite_url, node_name="red-node")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def samples(client: TestClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name``, keyed by its sorted labels."""
    out = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def count(client: TestClient, method: str, route: str, status: str) -> float:
    key = (("method", method), ("route", route), ("status", status))
    return samples(client, "catalog_http_requests_total").get(key, 0.0)


def test_requests_are_counted_by_route_template_and_status(client: TestClient) -> None:
    before_ok = count(client, "GET", "/products/{id}", "200")
    before_missing = count(client, "GET", "/products/{id}", "404")
    for pid in (1, 2, 3):
        assert client.get(f"/products/{pid}").status_code == 200
    assert client.get("/products/999999").status_code == 404
    assert count(client, "GET", "/products/{id}", "200") == before_ok + 3
    assert count(client, "GET", "/products/{id}", "404") == before_missing + 1
    assert client.put("/products/1/price", json={"price": "3.00"}).status_code == 200
    assert count(client, "PUT", "/products/{id}/price", "200") >= 1


def test_unknown_paths_collapse_to_one_label(client: TestClient) -> None:
    before = count(client, "GET", "unmatched", "404")
    for n in range(20):
        assert client.get(f"/no/such/path/{n}").status_code == 404
    after = samples(client, "catalog_http_requests_total")
    assert after[(("method", "GET"), ("route", "unmatched"), ("status", "404"))] == before + 20
    assert not [k for k in after if any("/no/such" in v for _, v in k)]


def test_durations_per_route_template(client: TestClient) -> None:
    key = (("method", "GET"), ("route", "/products/{id}"))
    before = samples(client, "catalog_http_request_duration_seconds_count").get(key, 0.0)
    for _ in range(5):
        client.get("/products/1")
    client.get("/products/999999")  # a 404 from an exception handler is timed too
    counts = samples(client, "catalog_http_request_duration_seconds_count")
    assert counts[key] == before + 6
    buckets = samples(client, "catalog_http_request_duration_seconds_bucket")
    inf = buckets[(("le", "+Inf"), *key)]
    assert inf == counts[key]
    ordered = sorted((float(dict(k)["le"]), v) for k, v in buckets.items()
                     if dict(k)["route"] == "/products/{id}" and dict(k)["method"] == "GET")
    assert [v for _, v in ordered] == sorted(v for _, v in ordered)  # cumulative
    assert samples(client, "catalog_http_request_duration_seconds_sum")[key] > 0
    routes = {dict(k)["route"] for k in counts}
    assert "unmatched" not in routes and routes <= {
        "/products", "/products/{id}", "/products/{id}/price", "/products/{id}/stock",
        "/categories", "/categories/{id}", "/categories/{id}/products", "/countries",
        "/countries/{code}", "/policies", "/healthz", "/readyz", "/metrics", "/openapi.json"}


def test_old_name_still_served(client: TestClient) -> None:
    client.get("/products/1")
    old = samples(client, "catalog_http_responses_total")
    new = samples(client, "catalog_http_requests_total")
    assert old and {k: v for k, v in old.items() if dict(k)["route"] != "/metrics"} == {
        k: v for k, v in new.items() if dict(k)["route"] != "/metrics"}
