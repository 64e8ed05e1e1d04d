"""Grafana dashboard JSON: a structure Grafana loads (schemaVersion, unique ids,
grid within 24 columns, a Prometheus datasource variable every query uses) and
queries built only on DESIGN.md's metric names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.chart.contract import is_contract, metric_names
from tests.chart.render import CHART

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
PANEL_TYPES = {"timeseries", "stat", "table", "gauge", "bargauge", "text", "row"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_three_dashboards_with_unique_uids() -> None:
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(DASHBOARDS) == 3 and len(set(uids)) == 3


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_structure(path: Path) -> None:
    d = load(path)
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert d["title"].startswith("Hybrid catalog / ")
    assert "id" not in d or d["id"] is None  # provisioning assigns ids
    (ds_var,) = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
    assert ds_var["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert p["type"] in PANEL_TYPES, p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panels_never_overlap(path: Path) -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in load(path)["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[x, y]}"
                cells[x, y] = p["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_queries_use_only_contract_metrics(path: Path) -> None:
    unknown = {n for p in load(path)["panels"] for t in p["targets"]
               for n in metric_names(t["expr"].replace("$__rate_interval", "1m"))
               if not is_contract(n)}
    assert not unknown, f"not DESIGN.md metrics: {unknown}"


def test_the_issue_s_panels_exist() -> None:
    exprs = " ".join(t["expr"] for p in DASHBOARDS for panel in load(p)["panels"]
                     for t in panel["targets"])
    for metric in ("hybridcache_requests_total", "hybridcache_factory_calls_total",
                   "hybridcache_stampede_coalesced_total", "hybridcache_invalidations_total",
                   "hybridcache_backplane_lag_seconds_bucket", "hybridcache_backplane_connected",
                   "hybridcache_backplane_resyncs_total", "cache_operator_replicas_in_sync",
                   "catalog_checker_stale_reads_total",
                   "cache_operator_policy_max_staleness_seconds"):
        assert metric in exprs, metric
