"""The chart survives upgrades: renders are reproducible (no pod restarts from
a re-rolled random password), monitoring objects appear only where the
Prometheus Operator's API exists, catalog pods start and stop gracefully,
`helm test` reads a product, and NOTES.txt names only things that exist."""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.render import (
    CHART,
    MONITORING_API,
    NAMESPACE,
    RELEASE,
    ROOT,
    VALUE_SETS,
    container,
    one,
    pod_spec,
    render,
    render_set,
    run_helm,
)

GIVEN_PASSWORDS = ("--set", "redis.password=r3dis", "--set", "postgresql.password=pg-pw",
                   "--set", "redis.users.catalog.password=cat-pw",
                   "--set", "redis.users.operator.password=op-pw",
                   "--set", "postgresql.adminPassword=pg-admin",
                   "--set", "catalog.writeToken.value=wr1te")
WORKLOADS = ("Deployment", "StatefulSet")


def _fresh_template(*extra: str) -> str:
    """An uncached `helm template` (each call runs helm: the point is two runs)."""
    done = run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                    *MONITORING_API, *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _checksums(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {f"{d['kind']}/{d['metadata']['name']}": ann["checksum/secrets"]
            for d in docs if d["kind"] in WORKLOADS
            for ann in [d["spec"]["template"]["metadata"].get("annotations", {})]
            if "checksum/secrets" in ann}


def _write_token_checksum(docs: list[dict[str, Any]], name: str) -> str | None:
    (d,) = [d for d in docs if d["kind"] in WORKLOADS and d["metadata"]["name"] == name]
    value: str | None = d["spec"]["template"]["metadata"].get("annotations", {}).get(
        "checksum/write-token")
    return value


def test_two_renders_are_identical_with_given_passwords() -> None:
    assert _fresh_template(*GIVEN_PASSWORDS) == _fresh_template(*GIVEN_PASSWORDS)


def test_generated_passwords_touch_nothing_but_their_secret() -> None:
    """Without a cluster `lookup` finds no Secret, so each render generates a
    password; everything except that Secret's data (pod templates and their
    checksums above all) must still be identical between two renders."""
    first, second = (list(yaml.safe_load_all(_fresh_template())) for _ in range(2))
    generated = {"t-hybrid-catalog-redis", "t-hybrid-catalog-postgresql",
                 "t-hybrid-catalog-write-token"}
    for docs in (first, second):
        for d in docs:
            if d and d["kind"] == "Secret" and d["metadata"]["name"] in generated:
                d["data"] = "<generated>"
    assert first == second
    assert len(_checksums(first)) == 4


def test_checksums_follow_only_their_own_inputs() -> None:
    before = _checksums(render(None, *GIVEN_PASSWORDS))
    after = _checksums(render(None, *GIVEN_PASSWORDS, "--set", "redis.password=rotated"))
    changed = {k for k in before if before[k] != after[k]}
    token = render(None, *GIVEN_PASSWORDS, "--set", "catalog.writeToken.value=other")
    rolled = {f"{d['kind']}/{d['metadata']['name']}" for d in token if d["kind"] in WORKLOADS
              and d["spec"]["template"]["metadata"].get("annotations", {}).get(
                  "checksum/write-token") != _write_token_checksum(render(None, *GIVEN_PASSWORDS),
                                                                   d["metadata"]["name"])}
    assert rolled == {"Deployment/t-hybrid-catalog-catalog", "Deployment/t-hybrid-catalog-checker"}
    assert changed == {"Deployment/t-hybrid-catalog-catalog",
                       "Deployment/t-hybrid-catalog-operator",
                       "StatefulSet/t-hybrid-catalog-redis"}


def _monitoring(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs
            if d["apiVersion"].startswith("monitoring.coreos.com/")}


def test_monitoring_objects_need_the_prometheus_operator_api() -> None:
    assert _monitoring(render_set("default")) == {
        ("ServiceMonitor", "t-hybrid-catalog-catalog"),
        ("ServiceMonitor", "t-hybrid-catalog-operator"),
        ("ServiceMonitor", "t-hybrid-catalog-checker"),
        ("PrometheusRule", "t-hybrid-catalog-monitoring"),
    }
    assert _monitoring(render_set("default", monitoring_api=False)) == set()
    # The toggles still switch them off where the API exists.
    assert _monitoring(render_set("monitoring-off-values")) == set()


def test_catalog_starts_and_stops_gracefully() -> None:
    dep = one(render_set("default"), "Deployment", "-catalog")
    c = container(dep, "catalog")
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    budget = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
    assert budget >= 30
    sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < sleep < pod_spec(dep)["terminationGracePeriodSeconds"]
    off = one(render(None, "--set", "catalog.preStopSleepSeconds=0"), "Deployment", "-catalog")
    assert "lifecycle" not in container(off, "catalog")


def _test_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (pod,) = [d for d in docs if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    return pod


def test_helm_test_hook_reads_a_product_through_the_service() -> None:
    docs = render_set("default")
    pod = _test_pod(docs)
    assert pod["kind"] == "Pod" and pod["spec"]["restartPolicy"] == "Never"
    (c,) = pod["spec"]["containers"]
    service = one(docs, "Service", "-catalog")
    url = c["command"][3]
    assert url == (f"http://{service['metadata']['name']}.{NAMESPACE}.svc:"
                   f"{service['spec']['ports'][0]['port']}/products/1")
    assert c["image"] == container(one(docs, "Deployment", "-catalog"), "catalog")["image"]
    assert not [d for d in render(None, "--set", "tests.enabled=false")
                if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]


class _Catalog(http.server.BaseHTTPRequestHandler):
    """Answers like the catalog: product 1 exists, nothing else does."""

    def do_GET(self) -> None:
        if self.path == "/products/1":
            body, status = b'{"id": 1, "name": "x"}', 200
        else:
            body, status = b'{"error": "not found"}', 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Node", "pod-a")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def catalog_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Catalog)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("product", "passes"), [(1, True), (2, False)])
def test_helm_test_script_passes_only_when_the_product_is_served(
        catalog_url: str, product: int, passes: bool) -> None:
    """The hook's own script, run against an HTTP server: exit 0 for a product
    that is served, non-zero for a 404."""
    pod = _test_pod(render(None, "--set", f"tests.productId={product}"))
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"]
    url = re.sub(r"^http://[^/]+", catalog_url, command[3])
    done = subprocess.run([sys.executable, "-c", command[2], url, command[4]],
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode == 0) is passes, done.stderr
    if passes:
        assert "served by pod-a" in done.stdout


@pytest.fixture(scope="module")
def notes_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart that also renders NOTES.txt as a ConfigMap: `helm
    template` skips NOTES and `helm install --dry-run` takes no --api-versions."""
    copy = tmp_path_factory.mktemp("chart") / CHART.name
    shutil.copytree(CHART, copy)
    notes = (copy / "templates" / "NOTES.txt").read_text()
    (copy / "templates" / "_zz_notes.tpl").write_text(
        '{{- define "test.notes" -}}\n' + notes + "\n{{- end -}}\n")
    (copy / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rendered-notes\n"
        'data:\n  notes: {{ include "test.notes" . | toJson }}\n')
    return copy


def _notes(chart: Path, values: list[str],
           monitoring_api: bool) -> tuple[str, list[dict[str, Any]]]:
    done = run_helm("template", RELEASE, str(chart), "--namespace", NAMESPACE, *values,
                    *(MONITORING_API if monitoring_api else ()))
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    (notes,) = [d["data"]["notes"] for d in docs if d["metadata"]["name"] == "rendered-notes"]
    return notes, docs


REFERENCE = re.compile(r"\b(deployment|service|prometheusrule)[/ ]([a-z0-9][a-z0-9.-]+)")
KINDS = {"deployment": "Deployment", "service": "Service", "prometheusrule": "PrometheusRule"}


@pytest.mark.parametrize("monitoring_api", [True, False])
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_notes_point_only_at_things_that_exist(
        notes_chart: Path, name: str, monitoring_api: bool) -> None:
    values = ["-f", str(VALUE_SETS[name])] if VALUE_SETS[name] else []
    notes, docs = _notes(notes_chart, values, monitoring_api)
    objects = {(d["kind"], d["metadata"]["name"]) for d in docs}
    refs = REFERENCE.findall(notes)
    assert ("deployment", "t-hybrid-catalog-catalog") in refs
    for kind, obj in refs:
        assert (KINDS[kind], obj) in objects, f"NOTES names {kind} {obj}, not in the release"
    for path in re.findall(r"(?<![\w/:.])([\w.-]+(?:/[\w.<>-]+)+\.(?:ya?ml|json|py|md))", notes):
        assert (ROOT / path).exists(), f"NOTES names {path}, which does not exist"
    titles = {yaml.safe_load(p.read_text())["title"] for p in (CHART / "dashboards").glob("*.json")}
    for quoted in re.findall(r'"(Hybrid catalog / [^"]+)"', notes):
        assert quoted in titles
    wanted = bool(_monitoring(render_set(name)))
    assert ("does not serve monitoring.coreos.com/v1" in notes) == (wanted and not monitoring_api)
