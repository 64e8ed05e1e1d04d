"""Building the ``status`` of a CacheInvalidationPolicy (pure functions)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from .fleet import FleetSnapshot, in_sync

APPLIED = "Applied"
READY = "Ready"


def now_iso() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_condition(status: Mapping[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    for cond in (status or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == ctype:
            return dict(cond)
    return None


def with_condition(
    conditions: Iterable[Mapping[str, Any]], ctype: str, ok: bool, reason: str,
    message: str, generation: int, *, now: str | None = None,
) -> list[dict[str, Any]]:
    """The conditions list with ``ctype`` set; lastTransitionTime changes only when
    the condition's status does."""
    value = "True" if ok else "False"
    out: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for cond in conditions:
        if isinstance(cond, Mapping) and cond.get("type") == ctype:
            previous = dict(cond)
        elif isinstance(cond, Mapping):
            out.append(dict(cond))
    changed = previous is None or previous.get("status") != value
    out.append({
        "type": ctype,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": (now or now_iso()) if changed or previous is None
        else previous.get("lastTransitionTime") or now or now_iso(),
    })
    order = {APPLIED: 0, READY: 1}
    out.sort(key=lambda c: order.get(str(c.get("type")), 2))
    return out


def health_fields(snapshot: FleetSnapshot, live: Iterable[str], acks: dict[str, int],
                  data_type: str, generation: int) -> dict[str, Any]:
    """Fleet-health part of the status for one policy."""
    live = tuple(live)
    n = in_sync(live, acks, generation)
    ratio = snapshot.hit_ratios.get(data_type)
    lag = snapshot.lag_p99
    return {
        "appliedReplicas": n,
        "totalReplicas": len(live),
        "replicasInSync": f"{n}/{len(live)}",
        "l1HitRatio": None if ratio is None else round(ratio, 4),
        "backplaneLagP99Seconds": None if lag is None else round(lag, 6),
    }


def ready_condition(fields: Mapping[str, Any], generation: int) -> tuple[bool, str, str]:
    """(ok, reason, message) of the Ready condition from health fields."""
    n, total = fields["appliedReplicas"], fields["totalReplicas"]
    if total == 0:
        return True, "NoLiveReplicas", f"generation {generation} published; no live replicas"
    if n >= total:
        return True, "InSync", f"all {total} live replicas applied generation {generation}"
    return False, "WaitingForReplicas", f"{n}/{total} live replicas applied generation {generation}"


def changed_fields(current: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """Only the fields of ``wanted`` whose value differs from ``current``."""
    current = current or {}
    return {k: v for k, v in wanted.items() if current.get(k) != v}
