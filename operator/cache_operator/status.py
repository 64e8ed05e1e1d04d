"""Conditions in the ``status`` of a CacheInvalidationPolicy (pure functions)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

APPLIED = "Applied"
READY = "Ready"
_ORDER = {APPLIED: 0, READY: 1}


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
    the condition's status does, so an unchanged condition compares equal."""
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
    out.sort(key=lambda c: _ORDER.get(str(c.get("type")), 2))
    return out
