"""Which tags a write invalidates: the one place that decides it.

Called by the API's writes (through ``CachedCatalog.invalidate``) and by any
other path that learns of a committed change (e.g. a database outbox relay),
so both invalidate the same things.

- ``ttl`` data types: nothing (their entries only expire).
- ``active``: the policy's ``invalidates`` templates rendered with the record
  before and after the write (by default the entity's own tag,
  ``product:{id}``): never the broad tags entries also carry (``products``),
  which exist for an explicit flush (``python -m catalog flush``).
- a write that changes the membership of a cached list (``lists``) also
  invalidates the list tags of exactly the lists it changes: a created or
  deleted product its category's list and the all-products list; a product
  moved to another category the old and the new category's lists (the
  all-products list is ordered by id, so a move does not change it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from hybridcache.policy import Policy

from .lists import scope_tag

Change = Literal["update", "create", "delete"]
CHANGES: tuple[Change, ...] = ("update", "create", "delete")
Record = Mapping[str, Any]


def tags_for_write(policy: Policy, change: Change, before: Record | None,
                   after: Record | None) -> list[str]:
    """The tags to invalidate after a committed ``change`` of one record of
    ``policy.data_type``. ``before`` is None for a create, ``after`` for a delete."""
    if change not in CHANGES:
        raise ValueError(f"change must be one of {', '.join(CHANGES)}, got {change!r}")
    if policy.strategy != "active":
        return []
    records = [r for r in (before, after) if r is not None]
    if not records:
        raise ValueError("a write needs the record before or after it")
    tags = policy.render_invalidations(records)
    for tag in _membership_tags(policy.data_type, change, before, after):
        if tag not in tags:
            tags.append(tag)
    return tags


def _membership_tags(data_type: str, change: Change, before: Record | None,
                     after: Record | None) -> list[str]:
    """List tags of the cached lists whose membership the write changes."""
    if data_type != "product":  # the only data type with cached lists
        return []
    old = before.get("category_id") if before is not None else None
    new = after.get("category_id") if after is not None else None
    if change == "update":
        return [] if old == new else [scope_tag(c) for c in (old, new) if c is not None]
    category = new if change == "create" else old
    out = [scope_tag(None)]
    if category is not None:
        out.append(scope_tag(category))
    return out
