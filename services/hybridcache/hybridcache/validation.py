"""Key and tag rules. Checked only where a key or tag enters the cache (a miss,
a set, an invalidation), never on an L1 hit: a key found in L1 was already
checked when it was stored. Policies render their tags through ``check_tag`` too
(:meth:`hybridcache.policy.Policy.render_tags`), so there is one set of tag rules."""

from __future__ import annotations

from collections.abc import Iterable

from .keys import ALL_TAG


def check_key(key: object, max_length: int) -> str:
    if not isinstance(key, str):
        raise ValueError(f"cache key must be a string, got {type(key).__name__} {key!r}")
    if not key or key.isspace():
        raise ValueError(f"cache key must not be empty or whitespace, got {key!r}")
    if len(key) > max_length:
        raise ValueError(
            f"cache key {key[:64]!r}... is {len(key)} characters; the maximum is {max_length}"
        )
    return key


def check_tag(tag: object, max_length: int, *, allow_all: bool = False) -> str:
    if not isinstance(tag, str):
        raise ValueError(f"tag must be a string, got {type(tag).__name__} {tag!r}")
    if not tag or tag.isspace():
        raise ValueError(f"tag must not be empty or whitespace, got {tag!r}")
    if tag != tag.strip():
        raise ValueError(f"tag {tag!r} has surrounding whitespace")
    if tag == ALL_TAG and not allow_all:
        raise ValueError("tag '*' means 'every entry' and cannot be attached to an entry")
    if len(tag) > max_length:
        raise ValueError(
            f"tag {tag[:64]!r}... is {len(tag)} characters; the maximum is {max_length}")
    return tag


def check_tags(tags: Iterable[str] | None, max_length: int, max_count: int) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str):
        raise ValueError(f"tags must be a list of strings, not the string {tags!r}")
    out = tuple(dict.fromkeys(check_tag(t, max_length) for t in tags))
    if len(out) > max_count:
        raise ValueError(f"an entry may carry at most {max_count} tags, got {len(out)}")
    return out
