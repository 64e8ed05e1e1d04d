"""What the operator decides, as pure functions of what it observed.

The kopf handlers (:mod:`cache_operator.handlers`) gather the inputs (the
resource, the index of policies by data type, what Redis holds, the fleet's
health, the catalog workload) and carry out the result (publish, patch
status, post events). Every decision in between lives here, so it is tested
without kopf, an API server or Redis, and each rule is written once: the
duplicate-data-type verdict serves create, update, resume and the timer alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from hybridcache.policy import Policy

from .redaction import redact
from .status import APPLIED, READY, with_condition
from .validation import PolicyError, compile_spec
from .workload import Workload

# One condition change: (type, ok, reason, message).
ConditionUpdate = tuple[str, bool, str, str]


def policy_ref(namespace: str | None, name: str) -> str:
    """``namespace/name``: a policy's ``source`` in Redis and its metrics label."""
    return f"{namespace}/{name}"


def owner_of(index: Mapping[Any, Iterable[Any]], namespace: str | None,
             data_type: str) -> str | None:
    """The resource that governs a data type in a namespace: the oldest one
    (then the first by name) among those that name it. ``index`` maps
    ``(namespace, dataType)`` to ``(creationTimestamp, name)`` entries."""
    entries = [tuple(e) for e in index.get((namespace, data_type), [])]
    if not entries:
        return None
    return str(min(entries)[1])


@dataclass(frozen=True, slots=True)
class Invalid:
    """The spec is not a valid policy: nothing is published."""

    error: PolicyError

    @property
    def reason(self) -> str:
        return self.error.reason

    @property
    def message(self) -> str:
        return f"{self.error}; the last valid generation (if any) stays applied"


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Another resource in the namespace governs the data type: not published."""

    policy: Policy
    owner: str
    namespace: str | None

    reason = "DuplicateDataType"

    @property
    def message(self) -> str:
        return (f"spec.dataType: {self.policy.data_type!r} is already governed by "
                f"{policy_ref(self.namespace, self.owner)}; this policy is not applied")


@dataclass(frozen=True, slots=True)
class Governs:
    """A valid policy this resource governs: publish it."""

    policy: Policy


Verdict = Invalid | Duplicate | Governs


def judge(spec: Mapping[str, Any], *, namespace: str | None, name: str, generation: int,
          index: Mapping[Any, Iterable[Any]]) -> Verdict:
    """Whether a resource's spec is to be published, and if not, why."""
    try:
        policy = compile_spec(dict(spec), generation=generation,
                              source=policy_ref(namespace, name))
    except PolicyError as exc:
        return Invalid(exc)
    owner = owner_of(index, namespace, policy.data_type)
    if owner is not None and owner != name:
        return Duplicate(policy, owner, namespace)
    return Governs(policy)


def rejected(verdict: Invalid | Duplicate) -> tuple[ConditionUpdate, ...]:
    """Applied and Ready for a policy that is not published."""
    return ((APPLIED, False, verdict.reason, verdict.message),
            (READY, False, verdict.reason, verdict.message))


def published(generation: int, where: str) -> ConditionUpdate:
    return (APPLIED, True, "Published", f"generation {generation} published to {where}")


def redis_unavailable(error: BaseException) -> ConditionUpdate:
    return (APPLIED, False, "RedisUnavailable", f"cannot reach Redis: {redact(str(error))}")


class Republish(Enum):
    """What the timer does about the policy Redis holds for a data type."""

    NOTHING = "nothing"  # Redis holds this generation
    WAIT = "wait"  # Redis holds a newer generation of this resource; the watch lags
    PUBLISH = "publish"  # Redis lost it, another source overwrote it, or it became ours


def republish(stored: Policy | None, policy: Policy, observed_generation: Any) -> Republish:
    """Compare what Redis holds with the policy this resource governs. Only a
    generation reconcile already handled is re-published (reconcile owns the
    first publication, its events and its retries)."""
    if stored is not None and stored.source == policy.source \
            and stored.generation > policy.generation:
        return Republish.WAIT
    if stored != policy and observed_generation == policy.generation:
        return Republish.PUBLISH
    return Republish.NOTHING


@dataclass(frozen=True, slots=True)
class Health:
    """What one policy's readiness is judged from."""

    live: int  # replicas with a recent heartbeat in Redis
    in_sync: int  # live replicas that acknowledged the current generation
    workload: Workload | None = None  # None: no workload configured
    workload_error: str | None = None  # configured, but not readable

    @property
    def expected(self) -> int:
        """How many replicas should run the policy: the workload's desired
        replicas (or more live ones, e.g. during a rolling update's surge);
        without a workload, the live ones."""
        if self.workload is None:
            return self.live
        return max(self.workload.desired, self.live)


def ready(health: Health, generation: int) -> tuple[bool, str, str]:
    """(ok, reason, message) of the Ready condition. Messages hold only
    slow-moving figures, so an unchanged fleet never rewrites status."""
    n, expected = health.in_sync, health.expected
    if health.workload_error is not None:
        return False, "WorkloadUnavailable", health.workload_error
    if expected == 0:
        return True, "NoLiveReplicas", f"generation {generation} published; no live replicas"
    if n >= expected:
        return True, "InSync", f"all {expected} replicas applied generation {generation}"
    workload = health.workload
    if workload is not None and health.live < workload.desired:
        return False, "ReplicasMissing", (
            f"{n}/{expected} replicas applied generation {generation}; {workload.ref} wants "
            f"{workload.desired}, {workload.ready} ready, {health.live} live in Redis")
    return False, "WaitingForReplicas", (
        f"{n}/{expected} replicas applied generation {generation}")


def health_fields(health: Health) -> dict[str, Any]:
    """The replica counts in status (slow-moving: they change when the fleet does)."""
    return {
        "appliedReplicas": health.in_sync,
        "totalReplicas": health.expected,
        "replicasInSync": f"{health.in_sync}/{health.expected}",
    }


def status_patch(status: Mapping[str, Any] | None, generation: int,
                 *updates: ConditionUpdate,
                 fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The part of ``status`` that changes: the conditions list (when any
    condition differs) and those of ``fields`` that differ. An empty result
    means nothing to write: status is written only when it changes."""
    status = status or {}
    current = list(status.get("conditions") or [])
    conditions = current
    for ctype, ok, reason, message in updates:
        conditions = with_condition(conditions, ctype, ok, reason, message, generation)
    out = {k: v for k, v in (fields or {}).items() if status.get(k) != v}
    if conditions != current:
        out["conditions"] = conditions
    return out


LEGACY_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


def without_legacy_finalizer(finalizers: Iterable[str] | None) -> list[str] | None:
    """The finalizers without kopf's default one, which earlier versions of the
    operator set and this one no longer removes (it uses its own); None when
    there is nothing to drop. Resources handled by an earlier version would
    otherwise stay in Terminating forever."""
    current = list(finalizers or [])
    if LEGACY_FINALIZER not in current:
        return None
    return [f for f in current if f != LEGACY_FINALIZER]
