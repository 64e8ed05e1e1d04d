"""Live policies published by the operator, as this node has applied them."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .protocol import Policy

log = logging.getLogger("hybridcache.policies")

PolicyListener = Callable[[str, Policy | None], None]


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
        """Apply the stored form of one policy (None: deleted). A malformed
        policy is logged and ignored, keeping the previous one in force."""
        if raw is None:
            if self._policies.pop(data_type, None) is None:
                return None
            self._notify(data_type, None)
            return None
        try:
            policy = Policy.from_json(raw)
        except ValueError as exc:
            log.error("ignoring invalid policy for %r: %s", data_type, exc)
            return self._policies.get(data_type)
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
