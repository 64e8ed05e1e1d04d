"""The chart renders, lints and validates for every values set, and renders
what a platform engineer expects (security, probes, spread, network policy)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.chart.netpol import selects
from tests.chart.render import (
    CHART,
    VALUE_SETS,
    container,
    env_of,
    find,
    one,
    pod_spec,
    render,
    render_set,
    run_helm,
)

# The Kubernetes minors kind v0.33.0 publishes node images for.
KIND_KUBERNETES = ["1.34.0", "1.35.0", "1.36.0", "1.37.0"]
NON_CORE_GROUPS = ("caching.hybridcache.io/", "monitoring.coreos.com/", "cert-manager.io/")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_helm_lint_strict(name: str) -> None:
    values = VALUE_SETS[name]
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    done = run_helm(*args)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("version", KIND_KUBERNETES)
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_manifests_valid_for_kind_kubernetes(name: str, version: str) -> None:
    """kubernetes-validate --strict (unknown fields rejected) for each kind version."""
    errors = []
    for doc in render_set(name):
        if doc["apiVersion"].startswith(NON_CORE_GROUPS):
            continue  # checked against their own schemas below
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            errors.append(f"{where}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)


def test_every_kind_is_checked_somewhere() -> None:
    """A resource type nobody validates would slip through: list them all."""
    kinds = {(d["apiVersion"], d["kind"]) for n in VALUE_SETS for d in render_set(n)}
    unchecked = {k for k in kinds if k[0].startswith(NON_CORE_GROUPS)} - {
        ("caching.hybridcache.io/v1alpha1", "CacheInvalidationPolicy"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("cert-manager.io/v1", "Certificate"),  # tests/chart/test_redis_sentinel.py
    }
    assert not unchecked


def _security(ctx: dict[str, Any], where: str) -> list[str]:
    problems = []
    if ctx.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation must be false")
    if ctx.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: readOnlyRootFilesystem must be true")
    if ctx.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append(f"{where}: capabilities.drop must be [ALL]")
    return problems


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_pod_security(name: str) -> None:
    problems = []
    for doc in render_set(name):
        if doc["kind"] not in (*WORKLOAD_KINDS, "Pod"):
            continue
        spec = doc["spec"] if doc["kind"] == "Pod" else pod_spec(doc)
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        psc = spec.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or psc.get("runAsUser", 0) == 0:
            problems.append(f"{where}: pod must run as a non-root uid")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile RuntimeDefault missing")
        for c in spec["containers"] + spec.get("initContainers", []):
            problems += _security(c.get("securityContext", {}), f"{where}/{c['name']}")
            if not c.get("resources", {}).get("limits"):
                problems.append(f"{where}/{c['name']}: no resource limits")
    assert not problems, "\n".join(problems)


def test_catalog_deployment_defaults() -> None:
    docs = render_set("default")
    dep = one(docs, "Deployment", "-catalog")
    assert dep["spec"]["replicas"] == 3
    c = container(dep, "catalog")
    assert c["command"] == [
        "python", "-m", "catalog", "serve", "--host", "0.0.0.0", "--port", "8000"]
    node = env_of(c)["NODE_NAME"]
    assert node["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    spread = pod_spec(dep)["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    pdb = one(docs, "PodDisruptionBudget", "-catalog")
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    assert not find(docs, "HorizontalPodAutoscaler")


def test_five_replicas_with_hpa() -> None:
    docs = render_set("five-replicas-values")
    dep = one(docs, "Deployment", "-catalog")
    # With the HPA on, the Deployment leaves replicas to it (no fight on upgrade).
    assert "replicas" not in dep["spec"]
    hpa = one(docs, "HorizontalPodAutoscaler", "-catalog")
    assert hpa["spec"]["minReplicas"] == 5
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert not find(docs, "Role", "-operator") and find(docs, "ClusterRole", "-operator")
    op = container(one(docs, "Deployment", "-operator"), "operator")
    assert env_of(op)["WATCH_NAMESPACE"]["value"] == ""


def test_secrets_are_not_in_pod_specs() -> None:
    """Passwords come from Secrets: each component's whole URL (built and
    percent-encoded when the Secret is rendered), never a value in the pod spec."""
    docs = render_set("default")
    for suffix, name in [("-catalog", "catalog"), ("-operator", "operator")]:
        env = env_of(container(one(docs, "Deployment", suffix), name))
        assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "t-hybrid-catalog-redis", "key": f"{name}-url"}
        assert "REDIS_PASSWORD" not in env
    for obj, name in [(one(docs, "Deployment", "-catalog"), "catalog"),
                      (one(docs, "Job", "-seed"), "seed")]:
        env = env_of(container(obj, name))
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "t-hybrid-catalog-postgresql", "key": "database-url"}
    secret_names = {d["metadata"]["name"] for d in find(docs, "Secret")}
    assert {"t-hybrid-catalog-redis", "t-hybrid-catalog-postgresql"} <= secret_names
    for d in docs:
        for c in (pod_spec(d)["containers"] if d["kind"] in ("Deployment", "StatefulSet", "Job")
                  else []):
            assert all("value" not in e or "PASSWORD" not in e["name"] for e in c.get("env", []))


def test_existing_secrets_compose_urls_from_passwords() -> None:
    """With Secrets you manage the chart cannot encode: $(VAR) expansion from
    the per-user password keys (documented: they must be URL-safe)."""
    docs = render(None, "--set", "redis.existingSecret=my-redis",
                  "--set", "postgresql.existingSecret=my-pg")
    env = env_of(container(one(docs, "Deployment", "-catalog"), "catalog"))
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "my-redis", "key": "catalog-password"}
    assert env["REDIS_URL"]["value"] == "redis://catalog:$(REDIS_PASSWORD)@t-hybrid-catalog-redis:6379/0"
    assert env["DATABASE_URL"]["value"].startswith("postgresql+asyncpg://catalog:$(POSTGRES_PASSWORD)@")
    names = list(env)
    assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")
    op = env_of(container(one(docs, "Deployment", "-operator"), "operator"))
    assert op["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "operator-password"
    assert not [d for d in find(docs, "Secret")
                if d["metadata"]["name"].endswith(("-redis", "-postgresql"))]


def test_external_services() -> None:
    docs = render_set("external-services-values")
    assert not find(docs, "StatefulSet")
    # Nothing in-cluster to protect; egress to them is opened by address
    # (test_network_policies.py).
    assert not [n for n in find(docs, "NetworkPolicy")
                if n["metadata"]["name"].endswith(("-redis", "-postgresql"))]
    env = env_of(container(one(docs, "Deployment", "-catalog"), "catalog"))
    db_ref = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert db_ref == {"name": "catalog-database", "key": "url"}
    redis_ref = env["REDIS_URL"]["valueFrom"]["secretKeyRef"]
    (secret,) = [s for s in find(docs, "Secret") if s["metadata"]["name"] == redis_ref["name"]]
    assert redis_ref["key"] in secret["data"]


def test_external_redis_without_url_is_a_clear_error() -> None:
    done = run_helm("template", "t", str(CHART), "--set", "redis.enabled=false")
    assert done.returncode != 0
    assert "redis.external.url or redis.external.existingSecret" in done.stderr


def test_schema_rejects_bad_values() -> None:
    done = run_helm("template", "t", str(CHART), "--set", "catalog.replicas=0")
    assert done.returncode != 0 and "/catalog/replicas" in done.stderr


def test_monitoring_off() -> None:
    docs = render_set("monitoring-off-values")
    assert not [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert not [m for m in find(docs, "ConfigMap")
                if "grafana_dashboard" in m["metadata"]["labels"]]


def test_dashboards_are_sidecar_configmaps() -> None:
    docs = render_set("default")
    maps = [d for d in find(docs, "ConfigMap")
            if d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    files = {p.name: p.read_text() for p in (CHART / "dashboards").glob("*.json")}
    assert len(files) == 3
    assert {k: v.rstrip("\n") for m in maps for k, v in m["data"].items()} == {
        k: v.rstrip("\n") for k, v in files.items()}


def test_service_monitors_select_the_services() -> None:
    docs = render_set("default")
    services = find(docs, "Service")
    for sm in find(docs, "ServiceMonitor"):
        spec = sm["spec"]
        assert set(spec) <= {"selector", "namespaceSelector", "endpoints"}
        matched = [s for s in services if selects(spec["selector"], s["metadata"]["labels"])]
        assert len(matched) == 1, sm["metadata"]["name"]
        port_names = {p["name"] for p in matched[0]["spec"]["ports"]}
        for ep in spec["endpoints"]:
            assert set(ep) <= {"port", "path", "interval"}
            assert ep["port"] in port_names and ep["path"] == "/metrics"
