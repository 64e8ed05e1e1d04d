"""The uninstall hook (templates/operator-cleanup-hook.yaml): a pre-delete Job
running ``cache_operator cleanup`` with the operator's image and the chart's
restricted security context, and RBAC that is exactly what the command calls
(the list in operator/README.md). helm lint, kubernetes-validate and the pod
security checks of test_chart_static cover it with every values set."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.chart.render import (
    CHART,
    NAMESPACE,
    ROOT,
    container,
    find,
    one,
    pod_spec,
    render,
    render_set,
    run_helm,
)

HOOK = "-operator-cleanup"
ANNOTATIONS = {"helm.sh/hook": "pre-delete",
               "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded"}


def hook_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hook's own objects (its pod's NetworkPolicy is an ordinary release
    object: it must exist before the hook runs)."""
    return [d for d in docs if d["metadata"]["name"].endswith(HOOK)
            and "helm.sh/hook" in (d["metadata"].get("annotations") or {})]


def documented_cleanup_rules() -> list[dict[str, Any]]:
    """The cleanup command's rules in operator/README.md (the block with delete)."""
    text = (ROOT / "operator" / "README.md").read_text()
    for block in re.findall(r"```ya?ml\n(.*?)```", text, re.S):
        data = yaml.safe_load(block)
        rules = data.get("rules") if isinstance(data, dict) else None
        if isinstance(rules, list) and any("delete" in r.get("verbs", []) for r in rules):
            return rules
    raise AssertionError("operator/README.md documents no RBAC block for cleanup")


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


def test_the_hook_is_a_pre_delete_job_with_the_operator_image() -> None:
    docs = render_set("default")
    hook = hook_objects(docs)
    assert sorted(d["kind"] for d in hook) == ["Job", "Role", "RoleBinding", "ServiceAccount"]
    for obj in hook:
        annotations = obj["metadata"]["annotations"]
        assert {k: annotations[k] for k in ANNOTATIONS} == ANNOTATIONS, obj["kind"]
        # RBAC exists before the Job runs
        assert int(annotations["helm.sh/hook-weight"]) < 0 or obj["kind"] == "Job"
    job = one(docs, "Job", HOOK)
    spec = pod_spec(job)
    c = container(job, "cleanup")
    operator = one(docs, "Deployment", "-operator")
    assert c["image"] == container(operator, "operator")["image"]
    assert c["command"] == ["python", "-m", "cache_operator", "cleanup", "--timeout", "60",
                            "--namespace", NAMESPACE]
    assert spec["restartPolicy"] == "Never"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert spec["securityContext"] == values["podSecurityContext"]
    assert c["securityContext"] == values["containerSecurityContext"]
    assert job["spec"]["activeDeadlineSeconds"] > 60  # room for the command's own timeout
    assert spec["serviceAccountName"] == one(docs, "ServiceAccount", HOOK)["metadata"]["name"]


def test_its_rbac_is_exactly_what_the_command_calls() -> None:
    docs = render_set("default")
    role = one(docs, "Role", HOOK)
    assert grants(role["rules"]) == grants(documented_cleanup_rules()) == {
        ("caching.hybridcache.io", "cacheinvalidationpolicies", "list"),
        ("caching.hybridcache.io", "cacheinvalidationpolicies", "delete"),
        ("caching.hybridcache.io", "cacheinvalidationpolicies", "patch"),
        ("", "events", "create"),
    }
    binding = one(docs, "RoleBinding", HOOK)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": NAMESPACE,
                                    "name": role["metadata"]["name"]}]


def test_it_covers_every_watched_namespace() -> None:
    docs = render(None, "--set", "operator.watchNamespaces={shop,team-b}")
    assert sorted(r["metadata"]["namespace"] for r in find(docs, "Role", HOOK)) == [
        "shop", "team-b"]
    assert container(one(docs, "Job", HOOK), "cleanup")["command"][-4:] == [
        "--namespace", "shop", "--namespace", "team-b"]
    clusterwide = render(None, "--set", "operator.watchNamespaces={*}")
    assert [r["metadata"]["namespace"] for r in find(clusterwide, "Role", HOOK)] == [NAMESPACE]


def test_it_can_be_turned_off_and_is_absent_without_the_operator() -> None:
    assert not hook_objects(render(None, "--set", "operator.cleanupOnUninstall=false"))
    assert not hook_objects(render(None, "--set", "operator.enabled=false"))
    done = run_helm("template", "t", str(CHART), "--set", "operator.cleanupOnUninstall=maybe")
    assert done.returncode != 0 and "cleanupOnUninstall" in done.stderr
