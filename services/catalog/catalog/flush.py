"""``python -m catalog flush``: invalidate everything of a data type on every
replica, on purpose.

An ordinary write never does this (``write_scope``): it invalidates what it
changed. Flushing is for an operator who knows the cache is wrong as a whole
(data changed behind the service's back, a bulk import): it removes the data
type's *broad* tags -- the templates of its policy's ``tags`` without
placeholders, e.g. ``products``, which every product entry and every product
list block carries -- or the tags given with ``--tag``. Tag removal is O(1)
per tag (a version is recorded; no entry is scanned).
"""

from __future__ import annotations

import asyncio
import logging

from hybridcache import CacheOptions, HybridCache
from hybridcache.policy import Policy, template_fields

from .config import Settings
from .policies import DEFAULT_POLICIES, effective

log = logging.getLogger("catalog.flush")
CONNECT_TIMEOUT = 5.0


class FlushError(RuntimeError):
    """Nothing was flushed; the message says why."""


def broad_tags(policy: Policy) -> list[str]:
    """The tags that cover every entry of ``policy``'s data type: its tag
    templates that need no record field."""
    return [t for t in policy.tags if not template_fields(t)]


def tags_to_flush(policy: Policy, extra: list[str]) -> list[str]:
    if extra:
        return list(dict.fromkeys(extra))
    if policy.strategy != "active":
        raise FlushError(f"{policy.data_type} has strategy {policy.strategy}: its entries "
                         "carry no tags and expire on their own; name tags with --tag")
    tags = broad_tags(policy)
    if not tags:
        raise FlushError(f"the {policy.data_type} policy has no tag without placeholders "
                         f"(tags: {list(policy.tags)}); name the tags to flush with --tag")
    return tags


async def flush(settings: Settings, data_type: str, extra: list[str]) -> list[str]:
    """Remove the data type's broad tags (or ``extra``) on every replica; the tags removed."""
    if data_type not in DEFAULT_POLICIES:
        raise FlushError(f"unknown data type {data_type!r}; one of "
                         f"{', '.join(DEFAULT_POLICIES)}")
    if settings.redis_url is None:
        raise FlushError("REDIS_URL is not set: without Redis each replica's L1 is its own "
                         "and there is no cluster to flush")
    cache = HybridCache(CacheOptions(redis_url=settings.redis_url,
                                     key_prefix=settings.key_prefix,
                                     node_id=f"{settings.node_name}-flush"))
    await cache.start(connect_timeout=CONNECT_TIMEOUT)
    try:
        if not cache.connected:
            raise FlushError("Redis unreachable: nothing flushed")
        tags = tags_to_flush(effective(cache.policies, data_type), extra)
        await cache.remove_by_tags(tags)
        return tags
    finally:
        await cache.close()


def run(settings: Settings, data_type: str, extra: list[str]) -> int:
    try:
        tags = asyncio.run(flush(settings, data_type, extra))
    except (FlushError, ValueError) as exc:
        log.error("flush %s: %s", data_type, exc)
        return 1
    log.info("flushed %s on every replica: removed tags %s", data_type, ", ".join(tags))
    return 0
