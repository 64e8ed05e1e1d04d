"""Live policies published by the operator, as this node has applied them.

A stored policy this node cannot use (not JSON, wrong types, out of bounds:
see :meth:`Policy.from_wire`) is never applied: the node keeps the last good
policy of that data type, logs why, and counts it in
``hybridcache_policy_rejected_total{data_type,reason}``. A bad policy in Redis
therefore costs at most the change it meant to make, never reads or writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import Counter

from .policy import Policy, PolicyRejected

log = logging.getLogger("hybridcache.policies")

PolicyListener = Callable[[str, Policy | None], None]

# Rare events (an operator or a person wrote a bad policy): a plain
# prometheus_client Counter, shared by every cache in the process.
POLICY_REJECTED = Counter(
    "hybridcache_policy_rejected",
    "Stored or published policies this replica refused (it kept the previous one)",
    ["data_type", "reason"])


class PolicyRegistry:
    """The policies in force on this node. ``get`` returns None for a data type
    with no published policy: the service then uses its own built-in default."""

    def __init__(self) -> None:
        self._policies: dict[str, Policy] = {}
        self._listeners: list[PolicyListener] = []

    def get(self, data_type: str) -> Policy | None:
        return self._policies.get(data_type)

    def all(self) -> dict[str, Policy]:
        return dict(self._policies)

    def add_listener(self, listener: PolicyListener) -> None:
        """``listener(data_type, policy_or_None)`` runs after each applied change."""
        self._listeners.append(listener)

    def apply(self, data_type: str, raw: bytes | None) -> Policy | None:
        """Apply the stored form of one policy (None: deleted). A policy this
        node cannot use is refused, keeping the previous one in force."""
        if raw is None:
            if self._policies.pop(data_type, None) is None:
                return None
            self._notify(data_type, None)
            return None
        try:
            policy = Policy.from_wire(raw, data_type=data_type)
        except PolicyRejected as exc:
            POLICY_REJECTED.labels(data_type[:64], exc.reason).inc()
            kept = self._policies.get(data_type)
            log.error("refused the stored policy for %r (%s): %s; keeping %s", data_type,
                      exc.reason, exc.detail,
                      f"generation {kept.generation}" if kept else "the built-in default")
            return kept
        if self._policies.get(data_type) != policy:
            self._policies[data_type] = policy
            self._notify(data_type, policy)
        return policy

    def replace_all(self, stored: dict[str, bytes]) -> None:
        for data_type in set(self._policies) - set(stored):
            self.apply(data_type, None)
        for data_type, raw in stored.items():
            self.apply(data_type, raw)

    def _notify(self, data_type: str, policy: Policy | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(data_type, policy)
            except Exception:
                log.exception("policy listener failed for %r", data_type)
