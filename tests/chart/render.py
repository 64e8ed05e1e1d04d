"""Render the chart with the real helm binary, once per values set.

Why a module and not fixtures only: the wiring, rules and live tests all need
the same rendered manifests, and `helm template` costs ~0.3 s a call.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "hybrid-catalog"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
# Values sets every static test runs over: the defaults and each ci/ file.
VALUE_SETS: dict[str, Path | None] = {"default": None} | {p.stem: p for p in CI_VALUES}
RELEASE = "t"
NAMESPACE = "hc-test"
# What a cluster with the Prometheus Operator serves: the chart renders its
# ServiceMonitors and PrometheusRule only when this API is there.
MONITORING_API = ("--api-versions", "monitoring.coreos.com/v1")


def helm_binary() -> str:
    """The helm `make test` installs (.venv/bin), else one on PATH; fail clearly if none."""
    local = ROOT / ".venv" / "bin" / "helm"
    if local.exists():
        return str(local)
    found = shutil.which("helm")
    if not found:
        pytest.fail("helm not found: run `make helm-bin` (pinned helm v4 into .venv/bin)")
    return found


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)


@functools.cache
def _template(values: Path | None, extra: tuple[str, ...]) -> str:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds"]
    if values is not None:
        args += ["-f", str(values)]
    args += list(extra)
    done = run_helm(*args)
    if done.returncode != 0:
        pytest.fail(f"helm template failed ({values}): {done.stderr}")
    return done.stdout


def template_text(values: Path | None = None, *extra: str, monitoring_api: bool = True) -> str:
    """`helm template` output as text (for byte-for-byte comparisons)."""
    return _template(values, (*(MONITORING_API if monitoring_api else ()), *extra))


def render(values: Path | None = None, *extra: str,
           monitoring_api: bool = True) -> list[dict[str, Any]]:
    """Every rendered object (CRDs included), as dicts; by default as on a
    cluster that serves the Prometheus Operator's API."""
    text = template_text(values, *extra, monitoring_api=monitoring_api)
    return [d for d in yaml.safe_load_all(text) if d]


def render_set(name: str, *extra: str, monitoring_api: bool = True) -> list[dict[str, Any]]:
    return render(VALUE_SETS[name], *extra, monitoring_api=monitoring_api)


def find(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str) -> dict[str, Any]:
    found = find(docs, kind, name_suffix)
    names = [d["metadata"]["name"] for d in found]
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {names}"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in pod_spec(obj)["containers"] if c["name"] == name]
    return c


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def rules_text(values: Path | None = None) -> str:
    """The PrometheusRule's spec as a plain Prometheus rules file."""
    rule = one(render(values), "PrometheusRule", "-monitoring")
    return yaml.safe_dump(rule["spec"], sort_keys=False)
