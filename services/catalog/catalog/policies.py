"""Which policy governs each data type, and what it means for entries.

Built-in defaults (DESIGN.md) apply until the operator publishes a policy for
a data type in Redis; the hybridcache library keeps the published ones live
(``cache.policies``), so the effective policy is looked up on every use and a
new one takes effect without restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from hybridcache.options import EntryOptions
from hybridcache.protocol import Policy, render_tag, template_fields

log = logging.getLogger("catalog.policies")

DATA_TYPES = ("product", "price", "stock", "category", "country")
MAX_TAG_LENGTH = 256  # hybridcache's CacheOptions.maximum_tag_length default

DEFAULT_POLICIES: dict[str, Policy] = {
    "product": Policy("product", "active", 600.0, 30.0,
                      ("product:{id}", "category:{category_id}", "products"),
                      "eventual", 1.0),
    "price": Policy("price", "active", 600.0, 30.0, ("product:{id}",), "eventual", 1.0),
    "stock": Policy("stock", "active", 600.0, 30.0, ("product:{id}",), "eventual", 1.0),
    # ttl data types only expire: a change is served from cache until then, so
    # their staleness budget is their whole lifetime (L2 + an L1 copy of it).
    "category": Policy("category", "ttl", 20.0, 10.0, (), "eventual", 30.0),
    "country": Policy("country", "ttl", 3600.0, 60.0, (), "eventual", 3660.0),
}


class PolicySource(Protocol):
    def get(self, data_type: str) -> Policy | None: ...


def effective(source: PolicySource | None, data_type: str) -> Policy:
    """The published policy for ``data_type`` if any, else the built-in default."""
    published = source.get(data_type) if source is not None else None
    return published if published is not None else DEFAULT_POLICIES[data_type]


def _context(record: dict[str, Any]) -> dict[str, Any]:
    """The record plus camelCase aliases (CRD examples write ``{categoryId}``)."""
    ctx = dict(record)
    for name, value in record.items():
        if "_" in name:
            head, *rest = name.split("_")
            ctx.setdefault(head + "".join(p.capitalize() for p in rest), value)
    return ctx


ReadTags = list[str] | Callable[[Any], list[str]] | None


def read_tags(policy: Policy, key_record: dict[str, Any]) -> ReadTags:
    """The tags a cached read attaches: rendered from the key's fields when
    every template can be; otherwise a function of the loaded record, so that
    templates such as ``category:{category_id}`` are attached too (hybridcache
    calls it with the value once it is loaded)."""
    if not policy.tags:
        return None
    static = render_tags(policy, (key_record,), partial=True)
    ctx = _context(key_record)
    if all(all(f in ctx for f in template_fields(t)) for t in policy.tags):
        return static

    def derived(value: Any) -> list[str]:
        records = (key_record, value) if isinstance(value, dict) else (key_record,)
        return render_tags(policy, records, partial=True)

    return derived


def render_tags(policy: Policy, records: Iterable[dict[str, Any]], *,
                partial: bool = False) -> list[str]:
    """The policy's tag templates rendered with each record, deduplicated.

    With ``partial`` a template whose fields a record lacks is skipped (used
    for read-side tags, where only the key's fields are known); otherwise a
    missing field is logged and skipped too, since a policy naming a field the
    data type does not have must not break writes.
    """
    tags: dict[str, None] = {}
    for record in records:
        ctx = _context(record)
        for template in policy.tags:
            if not all(f in ctx for f in template_fields(template)):
                if not partial:
                    log.warning("policy %s: tag template %r needs fields %s not in the record",
                                policy.data_type, template, template_fields(template))
                continue
            try:
                tag = render_tag(template, ctx)
            except (ValueError, IndexError, AttributeError) as exc:
                log.warning("policy %s: cannot render %r: %s", policy.data_type, template, exc)
                continue
            if not tag or tag != tag.strip() or tag == "*" or len(tag) > MAX_TAG_LENGTH:
                # A field value (e.g. a name with spaces) made an unusable tag.
                log.warning("policy %s: template %r gave an unusable tag %r; skipped",
                            policy.data_type, template, tag[:80])
                continue
            tags[tag] = None
    return list(tags)


def entry_options(policy: Policy) -> EntryOptions:
    return EntryOptions(expiration=policy.expiration, local_expiration=policy.local_expiration,
                        data_type=policy.data_type)
