"""The L2 representation of an entry: ``b"<version> <header json>\\n<payload>"``.

The version comes first, as plain digits, so a Redis script can write an entry
at a version it allocates itself (see scripts.INVALIDATE_KEY). The header holds
the tags and, for fail-safe entries, the wall time at which the value stops
being fresh (Redis keeps it longer so it can still be served as a fallback).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class StoredEntry:
    version: int
    tags: tuple[str, ...]
    fresh_until: float  # wall time; 0 = as long as Redis keeps it
    payload: bytes


def encode_tail(tags: tuple[str, ...], fresh_until: float, payload: bytes) -> bytes:
    """Everything after the version digits."""
    return b" " + orjson.dumps([list(tags), fresh_until]) + b"\n" + payload


def encode(version: int, tags: tuple[str, ...], fresh_until: float, payload: bytes) -> bytes:
    return str(version).encode() + encode_tail(tags, fresh_until, payload)


def decode(raw: bytes) -> StoredEntry:
    """Raise ValueError for anything that is not an entry written by this library."""
    try:
        space = raw.index(b" ")
        newline = raw.index(b"\n", space)
        tags, fresh_until = orjson.loads(raw[space + 1:newline])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError("tags are not a list of strings")
        return StoredEntry(int(raw[:space]), tuple(tags), float(fresh_until), raw[newline + 1:])
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not a hybridcache entry: {exc}") from None
