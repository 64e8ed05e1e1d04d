"""The chart's PrometheusRule: valid for promtool, every alert unit-tested
(firing and quiet), built only on the metric names of docs/design.md, keeping the
`namespace` and `job` labels, each alert with a runbook in docs/runbooks.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.contract import is_contract, metric_names
from tests.chart.render import ROOT, VALUE_SETS, rules_text

HERE = Path(__file__).resolve().parent
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_VALUES = HERE / "values" / "runbook-url.yaml"


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool not found: `make promtool-bin` installs Debian's prometheus package")
    return found


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text())
    return path


def test_promtool_check_rules(rules_file: Path) -> None:
    done = subprocess.run([promtool(), "check", "rules", str(rules_file)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_for_each_alert(rules_file: Path) -> None:
    tests = HERE / "rules_test.yaml"
    shutil.copy(tests, rules_file.parent / tests.name)
    done = subprocess.run([promtool(), "test", "rules", tests.name], cwd=rules_file.parent,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    alerts = {r["alert"] for g in yaml.safe_load(rules_file.read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    spec = yaml.safe_load(tests.read_text())
    cases = [t for case in spec["tests"] for t in case.get("alert_rule_test", [])]
    firing = {t["alertname"] for t in cases if t["exp_alerts"]}
    quiet = {t["alertname"] for t in cases if not t["exp_alerts"]}
    assert alerts == firing, f"alerts without a firing test: {alerts - firing}"
    assert alerts == quiet, f"alerts without a quiet test: {alerts - quiet}"


def _rules(values: Path | None = None) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(rules_text(values))["groups"] for r in g["rules"]]


def test_every_alert_has_a_runbook_section() -> None:
    """runbook_url ends in an anchor GitHub-style renderers give a heading of docs/runbooks.md."""
    headings = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", RUNBOOKS.read_text(), re.M)}
    for rule in _rules():
        if "alert" in rule:
            url = rule["annotations"].get("runbook_url", "")
            base, _, anchor = url.partition("#")
            assert base == "docs/runbooks.md" and anchor == rule["alert"].lower(), rule["alert"]
            assert anchor in headings, f"docs/runbooks.md has no section for {rule['alert']}"


def test_runbook_base_url_is_configurable() -> None:
    urls = {r["annotations"]["runbook_url"] for r in _rules(RUNBOOK_VALUES) if "alert" in r}
    assert urls and all(u.startswith("https://git.example/runbooks.md#") for u in urls)


def test_expressions_keep_namespace_and_job() -> None:
    """Aggregations keep the labels that tell two releases apart."""
    for rule in _rules():
        for grouping in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", rule["expr"]):
            labels = {x.strip() for x in grouping.split(",")}
            assert {"namespace", "job"} <= labels, (rule.get("alert") or rule["record"], grouping)


def test_a_broken_expectation_fails(rules_file: Path) -> None:
    """The unit tests can fail: a budget one tenth as large changes what fires."""
    text = rules_file.read_text().replace("> 0.5", "> 5")
    assert text != rules_file.read_text()
    rules_file.write_text(text)
    shutil.copy(HERE / "rules_test.yaml", rules_file.parent)
    done = subprocess.run([promtool(), "test", "rules", "rules_test.yaml"], cwd=rules_file.parent,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "HybridCacheBackplaneLagHigh" in done.stdout + done.stderr


@pytest.mark.parametrize("name", [n for n in VALUE_SETS if n != "monitoring-off-values"])
def test_rules_use_only_contract_metrics(name: str) -> None:
    groups = yaml.safe_load(rules_text(VALUE_SETS[name]))["groups"]
    exprs = [r["expr"] for g in groups for r in g["rules"]]
    assert exprs
    unknown = {n for e in exprs for n in metric_names(e) if not is_contract(n)}
    assert not unknown, f"not metrics of docs/design.md: {unknown}"
