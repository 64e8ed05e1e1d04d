"""The operator's decisions (cache_operator.reconciler): plain function calls,
no kopf, no API server, no Redis."""

from __future__ import annotations

from typing import Any

from cache_operator.reconciler import (
    LEGACY_FINALIZER,
    Duplicate,
    Governs,
    Health,
    Invalid,
    Republish,
    health_fields,
    judge,
    owner_of,
    published,
    ready,
    rejected,
    republish,
    status_patch,
    without_legacy_finalizer,
)
from cache_operator.status import with_condition
from cache_operator.workload import Workload
from hybridcache.policy import Policy

SPEC = {"dataType": "price", "strategy": "active", "tags": ["product:{id}"]}
CATALOG = Workload(ref="deployment/catalog", desired=3, ready=3)


def index(*entries: tuple[str, str, str]) -> dict[Any, list[tuple[str, str]]]:
    """(dataType, creationTimestamp, name) -> the kopf index's shape in namespace shop."""
    out: dict[Any, list[tuple[str, str]]] = {}
    for data_type, created, name in entries:
        out.setdefault(("shop", data_type), []).append((created, name))
    return out


def test_owner_is_the_oldest_then_the_first_by_name() -> None:
    idx = index(("price", "2026-01-02T00:00:00Z", "a"), ("price", "2026-01-01T00:00:00Z", "z"),
                ("price", "2026-01-01T00:00:00Z", "b"))
    assert owner_of(idx, "shop", "price") == "b"
    assert owner_of(idx, "shop", "stock") is None
    assert owner_of(idx, "other", "price") is None


def test_judge_governs_a_valid_policy_it_owns() -> None:
    verdict = judge(SPEC, namespace="shop", name="price", generation=3,
                    index=index(("price", "t1", "price")))
    assert isinstance(verdict, Governs)
    assert verdict.policy.generation == 3 and verdict.policy.source == "shop/price"
    # not yet in the index (a create before the indexer ran): still governs
    assert isinstance(judge(SPEC, namespace="shop", name="price", generation=1, index={}),
                      Governs)


def test_judge_names_the_owner_of_a_duplicate() -> None:
    verdict = judge(SPEC, namespace="shop", name="price-b", generation=1,
                    index=index(("price", "t1", "price-a"), ("price", "t2", "price-b")))
    assert isinstance(verdict, Duplicate)
    assert verdict.reason == "DuplicateDataType"
    assert verdict.message == ("spec.dataType: 'price' is already governed by shop/price-a; "
                               "this policy is not applied")
    applied, ready_ = rejected(verdict)
    assert applied[:3] == ("Applied", False, "DuplicateDataType")
    assert ready_[:3] == ("Ready", False, "DuplicateDataType")


def test_judge_reports_an_invalid_spec_with_its_field() -> None:
    verdict = judge({**SPEC, "tags": ["product:{id"]}, namespace="shop", name="price",
                    generation=2, index={})
    assert isinstance(verdict, Invalid)
    assert verdict.reason == "InvalidSpec"
    assert verdict.message.startswith("spec.tags[0]: ")
    assert verdict.message.endswith("the last valid generation (if any) stays applied")


def test_republish_only_what_redis_lost_for_a_reconciled_generation() -> None:
    policy = Policy(data_type="price", tags=("p:{id}",), generation=2, source="shop/price")
    assert republish(policy, policy, 2) is Republish.NOTHING
    assert republish(None, policy, 2) is Republish.PUBLISH  # Redis restarted empty
    other = Policy(data_type="price", tags=("p:{id}",), generation=7, source="cli:p.yaml")
    assert republish(other, policy, 2) is Republish.PUBLISH  # overwritten by `apply`
    newer = Policy(data_type="price", tags=("p:{id}",), generation=3, source="shop/price")
    assert republish(newer, policy, 2) is Republish.WAIT  # our watch lags behind
    assert republish(None, policy, 1) is Republish.NOTHING  # reconcile's job, not the timer's


def test_ready_counts_against_the_workload() -> None:
    # a killed replica: 2 live and in sync, the Deployment wants 3
    killed = Health(live=2, in_sync=2, workload=Workload("deployment/catalog", 3, 2))
    ok, reason, message = ready(killed, 4)
    assert (ok, reason) == (False, "ReplicasMissing")
    assert message == ("2/3 replicas applied generation 4; deployment/catalog wants 3, "
                       "2 ready, 2 live in Redis")
    assert health_fields(killed) == {"appliedReplicas": 2, "totalReplicas": 3,
                                     "replicasInSync": "2/3"}
    assert ready(Health(3, 3, CATALOG), 4) == (True, "InSync",
                                                "all 3 replicas applied generation 4")
    assert ready(Health(3, 1, CATALOG), 4)[:2] == (False, "WaitingForReplicas")
    # a surge during a rolling update: every live replica counts
    assert health_fields(Health(4, 4, CATALOG))["replicasInSync"] == "4/4"
    assert ready(Health(4, 3, CATALOG), 4)[:2] == (False, "WaitingForReplicas")


def test_ready_without_a_workload_counts_live_replicas() -> None:
    assert ready(Health(2, 2), 1)[:2] == (True, "InSync")
    assert ready(Health(2, 1), 1) == (False, "WaitingForReplicas",
                                      "1/2 replicas applied generation 1")
    assert ready(Health(0, 0), 1)[:2] == (True, "NoLiveReplicas")
    scaled_to_zero = Health(0, 0, Workload("statefulset/catalog", 0, 0))
    assert ready(scaled_to_zero, 1)[:2] == (True, "NoLiveReplicas")
    unreadable = Health(2, 2, workload_error="deployment/catalog not found in namespace shop")
    assert ready(unreadable, 1) == (False, "WorkloadUnavailable",
                                    "deployment/catalog not found in namespace shop")


def test_status_patch_is_empty_when_nothing_changed() -> None:
    health = Health(3, 3, CATALOG)
    ok, reason, message = ready(health, 2)
    updates = (published(2, "hc:policies"), ("Ready", ok, reason, message))
    fields = {"observedGeneration": 2, **health_fields(health)}
    first = status_patch({}, 2, *updates, fields=fields)
    assert first["observedGeneration"] == 2 and first["replicasInSync"] == "3/3"
    assert [c["type"] for c in first["conditions"]] == ["Applied", "Ready"]
    # the same observation again writes nothing (no API call every probe)
    assert status_patch(first, 2, *updates, fields=fields) == {}
    # one replica less: the counts and the Ready condition, nothing else
    fewer = Health(2, 2, Workload("deployment/catalog", 3, 2))
    ok, reason, message = ready(fewer, 2)
    changed = status_patch(first, 2, ("Ready", ok, reason, message), fields=health_fields(fewer))
    assert set(changed) == {"appliedReplicas", "replicasInSync", "conditions"}
    ready_cond = changed["conditions"][1]
    assert (ready_cond["status"], ready_cond["reason"]) == ("False", "ReplicasMissing")
    assert changed["conditions"][0] == first["conditions"][0]


def test_transition_time_moves_only_with_the_status() -> None:
    conds = with_condition([], "Ready", False, "WaitingForReplicas", "1/2", 1, now="t1")
    conds = with_condition(conds, "Ready", False, "ReplicasMissing", "2/3", 1, now="t2")
    assert conds[0]["lastTransitionTime"] == "t1"
    conds = with_condition(conds, "Ready", True, "InSync", "3/3", 1, now="t3")
    assert conds[0]["lastTransitionTime"] == "t3"


def test_legacy_finalizer_is_dropped_once() -> None:
    assert without_legacy_finalizer(None) is None
    assert without_legacy_finalizer(["caching.hybridcache.io/cleanup"]) is None
    assert without_legacy_finalizer([LEGACY_FINALIZER, "caching.hybridcache.io/cleanup"]) == [
        "caching.hybridcache.io/cleanup"]
