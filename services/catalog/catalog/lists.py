"""Product lists in the cache: a bounded, canonical key space and list tags.

``GET /products?category_id=&limit=&offset=`` and ``GET /categories/{id}/products``
are both served from fixed *blocks* of ``BLOCK`` product ids (ordered by id)
of one scope (all products, or one category). A page reads the one or two
blocks that cover ``[offset, offset + limit)`` and slices them, so:

- every (limit, offset) of a scope shares the same few keys,
  ``products:{all|<category_id>}:b{block}``; the two routes share them too;
- an empty block (a category with no products, an offset past the end, an
  unknown category) is not cached (``Adaptive(cache=False)``): only blocks
  that hold products exist in Redis, at most ``ceil(n / BLOCK)`` per scope
  with ``n`` products in it, whatever clients ask for.

Each block carries its scope's list tag (``list:products`` or
``list:category:{id}``): a write that changes a list's membership (a create, a
delete, a category move) invalidates exactly those (see ``write_scope``). A
change to an item shown in a list (rename, price) does not touch the list: a
block holds ids only, and each item is read through its own entries.
"""

from __future__ import annotations

from typing import Final

from .validation import LIMIT_MAX

BLOCK: Final = 100
"""Ids per cached block: at least LIMIT_MAX, so a page spans at most two blocks."""
ALL_TAG: Final = "list:products"

assert LIMIT_MAX <= BLOCK


def scope_tag(category_id: int | None) -> str:
    """The list tag of a scope: ``list:products`` or ``list:category:{id}``."""
    return ALL_TAG if category_id is None else f"list:category:{category_id}"


def block_key(category_id: int | None, block: int) -> str:
    scope = "all" if category_id is None else str(category_id)
    return f"products:{scope}:b{block}"


def blocks(limit: int, offset: int) -> range:
    """The blocks that hold positions ``[offset, offset + limit)``."""
    return range(offset // BLOCK, (offset + limit - 1) // BLOCK + 1)


def page(loaded: list[list[int]], first_block: int, limit: int, offset: int) -> list[int]:
    """The ids of the page, cut from the consecutive blocks starting at ``first_block``."""
    ids = [i for block in loaded for i in block]
    start = offset - first_block * BLOCK
    return ids[start:start + limit]
