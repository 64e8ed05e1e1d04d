"""The pieces agree with each other: images the Makefile builds vs. the chart,
env the chart sets vs. what the code reads, ports vs. probes and monitors,
the Dockerfile vs. the chart's commands, RBAC vs. the operator's API calls."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chart.render import (
    CHART,
    ROOT,
    container,
    env_of,
    find,
    one,
    pod_spec,
    render_set,
)

DOCKERFILE = ROOT / "Dockerfile"
CRD_FILE = CHART / "crds" / "cacheinvalidationpolicies.yaml"
# Helper variables the chart defines only to compose URLs, or for Python itself.
HELPER_ENV = {"REDIS_PASSWORD", "POSTGRES_PASSWORD", "PYTHONDONTWRITEBYTECODE"}


def expand(env: dict[str, dict[str, Any]], fake_secrets: dict[str, str]) -> dict[str, str]:
    """The environment the container would see, with Kubernetes' $(VAR) expansion."""
    out: dict[str, str] = {}
    for name, e in env.items():
        if "value" in e:
            out[name] = re.sub(r"\$\((\w+)\)",
                               lambda m: out.get(m.group(1), m.group(0)), e["value"])
        elif "secretKeyRef" in e.get("valueFrom", {}):
            out[name] = fake_secrets[e["valueFrom"]["secretKeyRef"]["key"]]
        elif "fieldRef" in e.get("valueFrom", {}):
            out[name] = "pod-0"
    return out


SECRETS = {"redis-password": "pw", "postgres-password": "pgpw", "write-token": "tok",
           "catalog-url": "redis://catalog:cpw@t-hybrid-catalog-redis:6379/0",
           "operator-url": "redis://operator:opw@t-hybrid-catalog-redis:6379/0",
           "database-url": "postgresql+asyncpg://catalog:pgpw@t-hybrid-catalog-postgresql:5432/catalog",
           "redis-url": "redis://:x@r:6379/0", "url": "postgresql+asyncpg://u:p@db:5432/c"}


def test_images_built_by_make_are_the_chart_images() -> None:
    out = subprocess.run(["make", "-s", "--no-print-directory", "kind-print-images"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    docs = render_set("default")
    chart = [container(one(docs, "Deployment", "-catalog"), "catalog")["image"],
             container(one(docs, "Deployment", "-operator"), "operator")["image"],
             container(one(docs, "Deployment", "-checker"), "checker")["image"]]
    # Same repositories; make's tag is appVersion + a content hash (kind-up
    # passes it with --set), the chart's default tag is appVersion.
    assert [i.rsplit(":", 1)[0] for i in out] == [i.rsplit(":", 1)[0] for i in chart]
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert all(img.endswith(":" + chart_yaml["appVersion"]) for img in chart)
    assert all(re.fullmatch(re.escape(chart_yaml["appVersion"]) + r"-[0-9a-f]{12}",
                            img.rsplit(":", 1)[1]) for img in out)
    seed = one(docs, "Job", "-seed")
    assert container(seed, "seed")["image"] == chart[0]


def test_catalog_env_is_what_the_catalog_reads() -> None:
    from catalog.config import Settings

    source = (ROOT / "services/catalog/catalog/config.py").read_text()
    for name in ["default", "external-services-values"]:
        c = container(one(render_set(name), "Deployment", "-catalog"), "catalog")
        env = env_of(c)
        for var in set(env) - HELPER_ENV:
            assert f'"{var}"' in source, f"chart sets {var}, catalog/config.py never reads it"
        settings = Settings.from_env(expand(env, SECRETS))
        assert settings.node_name == "pod-0"
        assert settings.key_prefix == "hc:"
        assert settings.redis_url and settings.redis_url.startswith("redis://")
        assert settings.database_url.startswith("postgresql+asyncpg://")
        if name == "default":
            assert settings.redis_url == SECRETS["catalog-url"]
            assert settings.database_url == (
                "postgresql+asyncpg://catalog:pgpw@t-hybrid-catalog-postgresql:5432/catalog")


def test_operator_env_and_ports_are_what_the_operator_reads() -> None:
    from cache_operator.config import Config

    source = (ROOT / "operator/cache_operator/config.py").read_text()
    dep = one(render_set("default"), "Deployment", "-operator")
    c = container(dep, "operator")
    env = env_of(c)
    for var in set(env) - HELPER_ENV:
        assert f'"{var}"' in source, f"chart sets {var}, cache_operator/config.py never reads it"
    config = Config.from_env(expand(env, SECRETS))
    assert config.namespaces == ("hc-test",)
    assert config.redis_url == SECRETS["operator-url"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert config.metrics_port == ports["metrics"]
    assert config.liveness_endpoint is not None
    live = re.match(r"http://[^:/]+:(\d+)(/\S*)", config.liveness_endpoint)
    assert live, config.liveness_endpoint
    probe = c["livenessProbe"]["httpGet"]
    assert (int(live.group(1)), live.group(2)) == (ports[probe["port"]], probe["path"])
    assert c["command"] == ["python", "-m", "cache_operator", "run"]


def test_catalog_ports_probes_service_and_monitor_agree() -> None:
    docs = render_set("default")
    dep = one(docs, "Deployment", "-catalog")
    c = container(dep, "catalog")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "metrics": 9102}
    assert c["command"][-2:] == ["--port", "8000"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] == "http"
    svc = one(docs, "Service", "-catalog")
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    metrics = one(docs, "Service", "-catalog-metrics")
    assert metrics["spec"]["ports"][0]["targetPort"] == "metrics"
    sm = one(docs, "ServiceMonitor", "-catalog")
    assert sm["spec"]["endpoints"][0]["port"] == metrics["spec"]["ports"][0]["name"]
    op_svc = one(docs, "Service", "-operator-metrics")
    op_container = container(one(docs, "Deployment", "-operator"), "operator")
    op_ports = {p["name"] for p in op_container["ports"]}
    assert op_svc["spec"]["ports"][0]["targetPort"] in op_ports
    assert one(docs, "ServiceMonitor", "-operator")["spec"]["endpoints"][0]["port"] == "metrics"


def _stages(text: str) -> dict[str, list[str]]:
    """Dockerfile stage name -> its instruction lines (continuations joined)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    stages: dict[str, list[str]] = {}
    current = None
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            current = m.group(2) or m.group(1)
            stages[current] = [line]
        elif current:
            stages[current].append(line)
    return stages


def test_dockerfile_images() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    pinned = r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?"
    assert base and re.fullmatch(pinned, base.group(1)), "unpinned base image"
    stages = _stages(text)
    docs = render_set("default")
    uid = pod_spec(one(docs, "Deployment", "-catalog"))["securityContext"]["runAsUser"]
    expected = {
        "catalog": (container(one(docs, "Deployment", "-catalog"), "catalog")["command"],
                    "CATALOG_PORT']}/readyz"),
        "operator": (container(one(docs, "Deployment", "-operator"), "operator")["command"],
                     "8080/healthz"),
    }
    for target, (command, health) in expected.items():
        lines = stages[target]
        assert f"USER {uid}:{uid}" in lines, f"{target}: must run as the chart's runAsUser {uid}"
        cmd = [ln for ln in lines if ln.startswith("CMD")][-1]
        assert yaml.safe_load(cmd[3:]) == command
        assert any(ln.startswith("HEALTHCHECK") and health in ln for ln in lines)
        body = " ".join(lines)
        # No compilers or package managers' build deps in the runtime image.
        for tool in ("gcc", "build-essential", "apt-get install", "pip wheel"):
            assert tool not in body, f"{target}: {tool} in the final stage"
        assert "pip uninstall --yes pip setuptools wheel" in body
    assert "ENV CATALOG_PORT=8000" in stages["catalog"], "the HEALTHCHECK's port is serve's"


def test_policies_are_valid_for_the_crd_and_the_operator(tmp_path: Path) -> None:
    docs = render_set("default")
    policies = find(docs, "CacheInvalidationPolicy")
    assert sorted(p["spec"]["dataType"] for p in policies) == [
        "category", "country", "price", "product", "stock"]
    by_type = {p["spec"]["dataType"]: p["spec"] for p in policies}
    assert by_type["price"]["strategy"] == by_type["stock"]["strategy"] == "active"
    assert by_type["product"]["tags"] == ["product:{id}", "category:{category_id}", "products"]
    # a write invalidates the entity's own tag, never the broad ones
    assert by_type["product"]["invalidates"] == ["product:{id}"]
    assert (by_type["category"]["strategy"], by_type["category"]["expiration"]) == ("ttl", "10m")
    assert (by_type["country"]["strategy"], by_type["country"]["expiration"]) == ("ttl", "1h")
    crd = yaml.safe_load(CRD_FILE.read_text())
    (crd_rendered,) = find(docs, "CustomResourceDefinition")
    assert crd_rendered == crd
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = version["schema"]["openAPIV3Schema"]
    for p in policies:
        jsonschema.validate({"apiVersion": p["apiVersion"], "kind": p["kind"],
                             "metadata": p["metadata"], "spec": p["spec"]}, schema)
    # The operator's own validation (schema, CEL mirror, duplicates) on the same documents.
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump_all(policies))
    done = subprocess.run([sys.executable, "-m", "cache_operator", "validate", "-f", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _readme_rules() -> list[dict[str, Any]] | None:
    """The RBAC rules operator/README.md documents (a yaml block with apiGroups)."""
    readme = ROOT / "operator" / "README.md"
    if not readme.exists():
        return None
    for block in re.findall(r"```ya?ml\n(.*?)```", readme.read_text(), re.S):
        data = yaml.safe_load(block)
        if isinstance(data, dict) and "rules" in data:
            data = data["rules"]
        if isinstance(data, list) and data and isinstance(data[0], dict) and "apiGroups" in data[0]:
            return data
    return None


def _normalise(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


def test_operator_rbac_matches_its_documented_api_calls() -> None:
    documented = _readme_rules()
    if documented is None:
        pytest.skip("operator/README.md has no RBAC rules block yet (yaml list with apiGroups)")
    for name in ["default", "five-replicas-values"]:
        docs = render_set(name)
        # the operator's own; the uninstall hook's Role is checked in test_cleanup_hook
        roles = find(docs, "Role", "-operator") + find(docs, "ClusterRole", "-operator")
        assert roles
        for role in roles:
            assert _normalise(role["rules"]) == _normalise(documented), role["metadata"]["name"]
