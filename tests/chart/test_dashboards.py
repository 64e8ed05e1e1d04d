"""Grafana dashboard JSON: a structure Grafana loads (schemaVersion, unique ids,
grid within 24 columns, a Prometheus datasource variable every query uses),
queries built only on the metric names of docs/design.md, and what an on-call engineer
needs: every series selected by namespace and job (two releases in one
Prometheus never mix), data type and policy variables, thresholds, a log axis
for staleness budgets, one unit per panel, resync and policy annotations.

tests/chart/test_live_prometheus.py evaluates the same queries against a real
Prometheus and draws every panel."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.chart.contract import is_contract, metric_names
from tests.chart.render import CHART

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
PANEL_TYPES = {"timeseries", "stat", "table", "gauge", "bargauge", "text", "row"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def plain(expr: str) -> str:
    """Grafana's interval macros as a literal duration and offsets dropped, for
    static PromQL checks (a duration is no series name)."""
    expr = re.sub(r"\boffset\s+(\$__\w+|\d+[smhdwy])", " ", expr)
    return re.sub(r"\$__(rate_interval|interval|range)\b", "1m", expr)


def panel_exprs(d: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every panel query."""
    return [(p["title"], t["expr"]) for p in d["panels"] for t in p.get("targets", [])]


def annotation_exprs(d: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["name"], a["target"]["expr"]) for a in d["annotations"]["list"]
            if a["datasource"].get("type") == "prometheus"]


def all_exprs(d: dict[str, Any]) -> list[str]:
    return [e for _, e in panel_exprs(d) + annotation_exprs(d)]


def variables(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in d["templating"]["list"]}


# Which job each metric family comes from: the catalog's (chosen by $job), the
# operator's and the checker's (same release: $release is $job without "-catalog").
JOBS = {"cache_operator_": 'job="${release}-operator"',
        "catalog_checker": 'job="${release}-checker"'}
# A label matcher block; its strings may hold `${release}`, braces included.
MATCHERS = r'\{(?:[^}"]|"[^"]*")*\}'
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(" + MATCHERS + ")?")


def unscoped(expr: str) -> list[str]:
    """Series selectors in `expr` not filtered to the chosen namespace and job."""
    names = metric_names(plain(expr))
    text = re.sub(r"\[[^\]]*\]", "[]", expr)
    bad = []
    for m in SELECTOR.finditer(text):
        name, matchers = m.group(1), m.group(2) or ""
        if name not in names or text[m.start() - 1: m.start()] in ('"', "$", "{"):
            continue
        job = next((j for prefix, j in JOBS.items() if name.startswith(prefix)), 'job="$job"')
        if 'namespace="$namespace"' not in matchers or job not in matchers:
            bad.append(f"{name}{matchers}")
    return bad


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
        if p["type"] == "row":
            assert g["w"] == 24 and g["h"] == 1 and "targets" not in p, p["title"]
            continue
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
    unknown = {n for expr in all_exprs(load(path))
               for n in metric_names(plain(expr))
               if not is_contract(n)}
    assert not unknown, f"not metrics of docs/design.md: {unknown}"


def test_the_issue_s_panels_exist() -> None:
    exprs = " ".join(t["expr"] for p in DASHBOARDS for panel in load(p)["panels"]
                     for t in panel.get("targets", []))
    for metric in ("hybridcache_requests_total", "hybridcache_factory_calls_total",
                   "hybridcache_stampede_coalesced_total", "hybridcache_invalidations_total",
                   "hybridcache_backplane_lag_seconds_bucket", "hybridcache_backplane_connected",
                   "hybridcache_backplane_resyncs_total", "cache_operator_replicas_in_sync",
                   "catalog_checker_stale_reads_total",
                   "cache_operator_policy_max_staleness_seconds"):
        assert metric in exprs, metric


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_is_scoped_to_one_release(path: Path) -> None:
    """Two releases scraped by one Prometheus: every selector names namespace and job."""
    d = load(path)
    bad = {f"{title}: {sel}" for title, expr in panel_exprs(d) + annotation_exprs(d)
           for sel in unscoped(expr)}
    assert not bad, "\n".join(sorted(bad))


def test_scope_check_can_fail() -> None:
    assert unscoped("sum(rate(hybridcache_requests_total[1m]))")
    assert unscoped('cache_operator_policy_ready{namespace="$namespace", job="$job"}')
    assert not unscoped('sum(hybridcache_l1_bytes{namespace="$namespace", job="$job"})')


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_variables(path: Path) -> None:
    """namespace, job, data type and policy from label_values over the chosen scope."""
    v = variables(load(path))
    assert {"datasource", "namespace", "job", "release", "data_type", "policy"} <= set(v)
    for name in ("namespace", "job", "release", "data_type", "policy"):
        assert v[name]["type"] == "query" and v[name]["query"].startswith("label_values("), name
        assert v[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    for name in ("job", "release", "data_type", "policy"):
        assert 'namespace="$namespace"' in v[name]["query"], name
    assert 'job="$job"' in v["data_type"]["query"] and 'job="$job"' in v["release"]["query"]
    assert v["release"]["hide"] == 2 and v["release"]["regex"] == "/^(.*)-catalog$/"
    for name in ("data_type", "policy"):
        assert v[name]["multi"] and v[name]["includeAll"], name
    if path.stem != "invalidation-backplane":  # no data_type label on backplane series
        assert '$data_type"' in " ".join(all_exprs(load(path)))


def test_policy_variable_is_used_where_policies_are_shown() -> None:
    d = load(CHART / "dashboards" / "staleness.json")
    for title, expr in panel_exprs(d):
        for metric in ("cache_operator_policy_max_staleness_seconds",
                       "cache_operator_replicas_in_sync", "cache_operator_policy_ready",
                       "cache_operator_policy_info"):
            if metric in expr:
                assert re.search(metric + r'\{(?:[^}"]|"[^"]*")*policy=~"\$policy"', expr), (
                    title, metric)


def _panel(title: str) -> dict[str, Any]:
    (panel,) = [p for path in DASHBOARDS for p in load(path)["panels"] if p["title"] == title]
    return panel


def _threshold_values(panel: dict[str, Any]) -> list[float]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [s["value"] for s in steps if s["value"] is not None]


@pytest.mark.parametrize("title, values", [
    ("L1 hit ratio per data type", [0.2, 0.5]),       # the collapse alert's default minimum
    ("L1 hit ratio", [0.2, 0.5]),
    ("5xx ratio per route", [0.01]),
    ("HTTP 5xx ratio", [0.01]),
    ("Probe lag per replica (operator)", [0.5]),      # the default backplane lag budget
    ("Budget used per policy (lag p99 / maxStaleness)", [0.5, 1]),
    ("Checker stale reads/s per data type", [0.0001]),
    ("Stale-read ratio vs objective", [0.001]),       # 1 - the default 99.9 % objective
])
def test_thresholds(title: str, values: list[float]) -> None:
    panel = _panel(title)
    assert _threshold_values(panel) == values
    if panel["type"] == "timeseries":
        assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"


def test_budget_panel_has_a_log_axis() -> None:
    """Budgets from 1 s to 1 h: on a linear axis the short ones are a flat line at 0."""
    panel = _panel("Staleness budget per policy vs measured lag")
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"
    assert panel["fieldConfig"]["defaults"]["custom"]["scaleDistribution"] == {
        "type": "log", "log": 10}


UNIT_OF = {"hybridcache_l1_entries": "short", "hybridcache_l1_bytes": "bytes"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_one_unit_per_axis(path: Path) -> None:
    """No override changes a unit, and entries and bytes never share a panel."""
    for p in load(path)["panels"]:
        if p["type"] == "row":
            continue
        for o in p["fieldConfig"]["overrides"]:
            assert all(prop["id"] != "unit" for prop in o["properties"]), p["title"]
        exprs = " ".join(t["expr"] for t in p["targets"])
        units = {unit for metric, unit in UNIT_OF.items() if metric in exprs}
        assert len(units) <= 1, p["title"]
        if units:
            assert p["fieldConfig"]["defaults"]["unit"] == units.pop(), p["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_resync_and_policy_change_annotations(path: Path) -> None:
    exprs = dict(annotation_exprs(load(path)))
    assert "hybridcache_backplane_resyncs_total" in exprs["Backplane resyncs"]
    assert "cache_operator_policy_info" in exprs["Policy changes"]
    assert "cache_operator_policy_max_staleness_seconds" in exprs["Policy changes"]


def test_red_row_on_the_fleet_overview() -> None:
    panels = load(CHART / "dashboards" / "fleet-overview.json")["panels"]
    (red_row,) = [p for p in panels if p["type"] == "row" and "RED" in p["title"]]
    below = [p for p in panels if p["gridPos"]["y"] == red_row["gridPos"]["y"] + 1]
    exprs = [" ".join(t["expr"] for t in p["targets"]) for p in below]
    assert any("rate(catalog_http_requests_total" in e and "5.." not in e for e in exprs)
    assert any('status=~"5.."' in e for e in exprs)
    latency = " ".join(e for e in exprs if "catalog_http_request_duration_seconds_bucket" in e)
    assert "histogram_quantile(0.5," in latency and "histogram_quantile(0.99," in latency
    assert all("by (route" in e for e in exprs)


def test_no_claim_that_status_carries_fast_figures() -> None:
    """Policy status keeps slow summaries only; the hit ratio is a metric."""
    for path in DASHBOARDS:
        assert "status.l1HitRatio" not in path.read_text()
