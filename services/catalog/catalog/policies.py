"""The catalog's data types and the built-in policy of each.

A built-in default applies until the operator publishes a policy for that data
type; hybridcache keeps the published ones live (``cache.policies``), so the
effective policy is looked up on every use and a new one takes effect without
restart. What a policy means for entries (their options, the tags rendered
from records) is the library's: :class:`hybridcache.policy.Policy`.

The defaults are written as CacheInvalidationPolicy specs and compiled with
the same rules as a published policy (``Policy.from_spec``), so a default can
never be a policy the operator would refuse.
"""

from __future__ import annotations

from typing import Protocol

from hybridcache.policy import Policy

DEFAULT_SPECS: dict[str, dict[str, object]] = {
    "product": {"dataType": "product", "strategy": "active", "expiration": "10m",
                "localExpiration": "30s",
                "tags": ["product:{id}", "category:{category_id}", "products"],
                # A write removes the product's own tag only; "category:{..}" and
                # "products" are for explicit flushes (python -m catalog flush).
                "invalidates": ["product:{id}"]},
    # A price or stock write invalidates only that entry (its own tag): the
    # product's other entries stay cached, so the first read after the change
    # reloads one entry, not three. ``product:{id}`` is carried too, so a
    # product's write or deletion (and a flush of the tag) still removes them.
    "price": {"dataType": "price", "strategy": "active", "expiration": "10m",
              "localExpiration": "30s", "tags": ["price:{id}", "product:{id}"],
              "invalidates": ["price:{id}"]},
    "stock": {"dataType": "stock", "strategy": "active", "expiration": "10m",
              "localExpiration": "30s", "tags": ["stock:{id}", "product:{id}"],
              "invalidates": ["stock:{id}"]},
    # ttl data types only expire: a change is served from cache until then, so
    # their staleness budget is their whole lifetime (L2 + an L1 copy of it).
    "category": {"dataType": "category", "strategy": "ttl", "expiration": "20s",
                 "localExpiration": "10s", "maxStaleness": "30s"},
    "country": {"dataType": "country", "strategy": "ttl", "expiration": "1h",
                "localExpiration": "1m", "maxStaleness": "61m"},
}

DEFAULT_POLICIES: dict[str, Policy] = {
    data_type: Policy.from_spec(spec) for data_type, spec in DEFAULT_SPECS.items()}


class PolicySource(Protocol):
    def get(self, data_type: str) -> Policy | None: ...


def effective(source: PolicySource | None, data_type: str) -> Policy:
    """The published policy for ``data_type`` if any, else the built-in default."""
    published = source.get(data_type) if source is not None else None
    return published if published is not None else DEFAULT_POLICIES[data_type]
