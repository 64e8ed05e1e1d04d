"""The rendered NetworkPolicies allow exactly the connections the deployment
needs, and nothing else: every (source, destination port) pair of a matrix
over the release's pods, Prometheus, a client outside the cluster, strangers
in the namespace and elsewhere, the API server, DNS and the internet is
evaluated (tests/chart/netpol.py) and compared with the expected set."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.chart.netpol import KUBE_DNS, Endpoint, allowed, namespaces, release_pod
from tests.chart.render import NAMESPACE, container, env_of, find, one, render, render_set

NAMESPACES = namespaces(NAMESPACE, "monitoring", "kube-system", "elsewhere")
WORKLOADS = ("Deployment", "StatefulSet", "Job")

OUTSIDERS = [
    Endpoint("client", ip="203.0.113.7"),
    Endpoint("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}, "10.244.9.1"),
    Endpoint("stranger", NAMESPACE, {"app": "other"}, "10.244.9.2"),
    Endpoint("stranger-elsewhere", "elsewhere", {"app": "other"}, "10.244.9.3"),
]
# Destinations that are not the release's pods: (endpoint, port, protocol).
SERVICES = [
    (Endpoint("apiserver", ip="172.18.0.2"), 6443, "TCP"),
    (Endpoint("apiserver-service", ip="10.96.0.1"), 443, "TCP"),
    (KUBE_DNS, 53, "UDP"),
    (KUBE_DNS, 53, "TCP"),
    (Endpoint("internet", ip="198.51.100.80"), 443, "TCP"),
    (Endpoint("internet", ip="198.51.100.80"), 80, "TCP"),
    (Endpoint("external-redis", ip="198.51.100.20"), 6379, "TCP"),
    (Endpoint("external-postgresql", ip="198.51.100.21"), 5432, "TCP"),
]


def _pod_template(doc: dict[str, Any]) -> dict[str, Any]:
    return doc if doc["kind"] == "Pod" else doc["spec"]["template"]


def release_pods(docs: list[dict[str, Any]]) -> list[Endpoint]:
    """Every pod the chart would run, with its labels and named ports; plus the
    operator's cleanup hook (added by another template, same labels scheme)."""
    pods: list[Endpoint] = []
    sources = [d for d in docs if d["kind"] in WORKLOADS or d["kind"] == "Pod"]
    for i, doc in enumerate(sources):
        template = _pod_template(doc)
        labels = template["metadata"]["labels"]
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"]
                 for p in c.get("ports", []) if "name" in p}
        pods.append(Endpoint(labels["app.kubernetes.io/component"], NAMESPACE, labels,
                             f"10.244.1.{i + 10}", ports))
    pods.append(release_pod("operator-cleanup", NAMESPACE, "10.244.1.99"))
    return pods


def matrix(docs: list[dict[str, Any]]) -> set[tuple[str, str, int, str]]:
    """Every allowed (source, destination, port, protocol) that involves a pod
    of the release."""
    policies = find(docs, "NetworkPolicy")
    pods = release_pods(docs)
    ours = {p.name for p in pods}
    destinations = [(p, port, "TCP") for p in pods for port in sorted(set(p.ports.values()))]
    destinations += SERVICES
    out: set[tuple[str, str, int, str]] = set()
    for source, (dest, port, proto) in itertools.product([*pods, *OUTSIDERS], destinations):
        if source.name not in ours and dest.name not in ours:
            continue
        if source is dest:
            continue
        if allowed(policies, source, dest, port, NAMESPACES, proto):
            out.add((source.name, dest.name, port, proto))
    return out


def _dns(*names: str) -> set[tuple[str, str, int, str]]:
    return {(n, "dns", 53, proto) for n in names for proto in ("UDP", "TCP")}


def _api(name: str) -> set[tuple[str, str, int, str]]:
    # 0.0.0.0/0 on the API server's ports by default: any address on 443/6443.
    return {(name, "apiserver", 6443, "TCP"), (name, "apiserver-service", 443, "TCP"),
            (name, "internet", 443, "TCP")}


EXPECTED = (
    # Anyone reaches the API; inside the release only the checker and helm's test pod.
    {(s, "catalog", 8000, "TCP") for s in
     ("client", "prometheus", "stranger", "stranger-elsewhere", "checker", "test")}
    # Prometheus, and only Prometheus, scrapes the metrics ports.
    | {("prometheus", "catalog", 9102, "TCP"), ("prometheus", "operator", 9100, "TCP"),
       ("prometheus", "checker", 9109, "TCP")}
    | {("catalog", "redis", 6379, "TCP"), ("operator", "redis", 6379, "TCP")}
    | {("catalog", "postgresql", 5432, "TCP"), ("seed", "postgresql", 5432, "TCP")}
    | _api("operator") | _api("operator-cleanup")
    | _dns("catalog", "operator", "operator-cleanup", "checker", "test", "seed")
)


def test_default_policies_allow_exactly_what_is_needed() -> None:
    got = matrix(render_set("default"))
    assert got - EXPECTED == set(), "allowed but not needed"
    assert EXPECTED - got == set(), "needed but denied"


@pytest.mark.parametrize(("source", "dest", "port"), [
    ("client", "redis", 6379), ("stranger", "redis", 6379), ("checker", "redis", 6379),
    ("seed", "redis", 6379), ("operator", "postgresql", 5432), ("client", "postgresql", 5432),
    ("client", "catalog", 9102), ("stranger", "operator", 9100), ("client", "operator", 8080),
    ("catalog", "apiserver", 6443), ("redis", "internet", 443), ("catalog", "internet", 443),
    ("operator", "catalog", 8000),
])
def test_named_attacks_are_denied(source: str, dest: str, port: int) -> None:
    assert (source, dest, port, "TCP") not in matrix(render_set("default"))


def test_the_api_server_cidr_narrows_the_operators_egress() -> None:
    docs = render(None, "--set", "networkPolicy.apiServer.cidrs={172.18.0.2/32}")
    got = matrix(docs)
    assert ("operator", "apiserver", 6443, "TCP") in got
    assert ("operator", "internet", 443, "TCP") not in got
    assert ("operator", "apiserver-service", 443, "TCP") not in got  # before DNAT: not the API


def test_prometheus_namespace_selector_is_honoured() -> None:
    docs = render_set("kind-values")
    got = matrix(docs)
    assert ("prometheus", "catalog", 9102, "TCP") in got  # it runs in "monitoring"
    moved = render(None, "--set",
                   "networkPolicy.prometheus.namespaceSelector.kubernetes\\.io/metadata\\.name=elsewhere")
    assert ("prometheus", "catalog", 9102, "TCP") not in matrix(moved)


def test_external_services_get_egress_to_their_addresses_only() -> None:
    got = matrix(render_set("external-services-values"))
    assert {("catalog", "external-redis", 6379, "TCP"), ("operator", "external-redis", 6379, "TCP"),
            ("catalog", "external-postgresql", 5432, "TCP"),
            ("seed", "external-postgresql", 5432, "TCP")} <= got
    assert ("checker", "external-redis", 6379, "TCP") not in got
    assert ("operator", "external-postgresql", 5432, "TCP") not in got


def test_every_pod_of_the_release_is_denied_by_default() -> None:
    docs = render_set("default")
    (deny,) = [p for p in find(docs, "NetworkPolicy")
               if p["metadata"]["name"].endswith("-default-deny")]
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    selector = deny["spec"]["podSelector"]["matchLabels"]
    for pod in release_pods(docs):
        assert all(pod.labels.get(k) == v for k, v in selector.items())


def test_the_catalog_serves_metrics_apart_from_the_public_service() -> None:
    docs = render_set("default")
    c = container(one(docs, "Deployment", "-catalog"), "catalog")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert env_of(c)["METRICS_PORT"]["value"] == str(ports["metrics"])
    public = one(docs, "Service", "-catalog")
    assert [p["targetPort"] for p in public["spec"]["ports"]] == ["http"]
    metrics = one(docs, "Service", "-catalog-metrics")
    assert metrics["spec"]["type"] == "ClusterIP"
    sm = one(docs, "ServiceMonitor", "-catalog")
    assert sm["spec"]["endpoints"][0]["port"] == metrics["spec"]["ports"][0]["name"] == "metrics"
    # The monitor selects the metrics Service, not the public one.
    selector = sm["spec"]["selector"]["matchLabels"]
    assert all(metrics["metadata"]["labels"].get(k) == v for k, v in selector.items())
    assert not all(public["metadata"]["labels"].get(k) == v for k, v in selector.items())
