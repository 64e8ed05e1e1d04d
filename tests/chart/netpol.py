"""A small evaluator of Kubernetes NetworkPolicy objects (networking.k8s.io/v1
semantics): may a connection from one endpoint to another's port happen?

A pod is isolated for a direction once any policy of its namespace selects it
with that policy type; then a connection must match a rule of one of those
policies, on both ends (egress at the source, ingress at the destination).
Endpoints outside any policy's reach (a client on the internet, the API
server) are never isolated themselves.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    """A pod (labels, namespace) or an address outside the cluster's pods."""

    name: str
    namespace: str | None = None            # None: not a pod
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = "10.244.1.10"
    ports: dict[str, int] = field(default_factory=dict)  # named container ports


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector; {} or None selects everything."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_ns: str, other: Endpoint,
                  namespaces: dict[str, dict[str, str]]) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        if address not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(address in ipaddress.ip_network(e) for e in block.get("except", []))
    if other.namespace is None:
        return False  # pod/namespace selectors only ever match pods
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespaces.get(other.namespace, {})):
            return False
    elif other.namespace != policy_ns:
        return False
    return selects(peer.get("podSelector"), other.labels)


def _port_matches(rule_ports: list[dict[str, Any]] | None, port: int, protocol: str,
                  dest: Endpoint) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        want = p.get("port")
        if want is None:
            return True
        if isinstance(want, str):
            want = dest.ports.get(want)
            if want is None:
                continue
        if want <= port <= p.get("endPort", want):
            return True
    return False


def _direction_allows(policies: list[dict[str, Any]], kind: str, subject: Endpoint,
                      other: Endpoint, port: int, protocol: str, dest: Endpoint,
                      namespaces: dict[str, dict[str, str]]) -> bool:
    """Whether ``subject`` (a pod, or not) lets this connection through in one direction."""
    if subject.namespace is None:
        return True
    key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    mine = [p for p in policies
            if p["metadata"]["namespace"] == subject.namespace
            and kind in p["spec"].get("policyTypes", ["Ingress"])
            and selects(p["spec"]["podSelector"], subject.labels)]
    if not mine:
        return True  # not isolated in this direction
    for policy in mine:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if peers and not any(_peer_matches(peer, policy["metadata"]["namespace"], other,
                                               namespaces) for peer in peers):
                continue
            if _port_matches(rule.get("ports"), port, protocol, dest):
                return True
    return False


def allowed(policies: list[dict[str, Any]], source: Endpoint, dest: Endpoint, port: int,
            namespaces: dict[str, dict[str, str]], protocol: str = "TCP") -> bool:
    return (_direction_allows(policies, "Egress", source, dest, port, protocol, dest, namespaces)
            and _direction_allows(policies, "Ingress", dest, source, port, protocol, dest,
                                  namespaces))


# ---------------------------------------------------------------- the chart's endpoints

RELEASE_LABELS = {"app.kubernetes.io/name": "hybrid-catalog", "app.kubernetes.io/instance": "t"}
KUBE_DNS = Endpoint("dns", "kube-system", {"k8s-app": "kube-dns"}, "10.244.0.5")


def namespaces(*names: str) -> dict[str, dict[str, str]]:
    """Each namespace's labels as Kubernetes sets them (what a
    namespaceSelector matches)."""
    return {name: {"kubernetes.io/metadata.name": name} for name in names}


def release_pod(component: str, namespace: str, ip: str,
                ports: dict[str, int] | None = None) -> Endpoint:
    """A pod of the test release (instance ``t``) with the chart's labels."""
    labels = {**RELEASE_LABELS, "app.kubernetes.io/component": component}
    return Endpoint(component, namespace, labels, ip, ports or {})
