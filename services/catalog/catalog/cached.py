"""Reads through the hybrid cache and the invalidations that follow writes.

Every read names its data type, so it is cached under that type's effective
policy (lifetimes, tags). Keys: ``product:{id}``, ``price:{id}``,
``stock:{id}``, ``category:{id}``, ``categories``, ``country:all`` and
``products:{category|all}:b{block}`` (a block of product ids, data type
``product``; see ``lists``).

Tags on an entry are the policy's ``tags`` rendered with the fields known
from the key (``id``, ``product_id``, a list's ``category_id``) and, where a
template needs more (a product's ``category_id``), with the loaded record:
hybridcache derives those tags from the value once it is loaded
(``Policy.read_tags``). A list block carries its list tag as well.

A missing record or an empty block is handed to the caller but not cached
(``Adaptive(cache=False)``): what clients can make the cache store is bounded
by the data, not by the ids they ask for.

Writes invalidate what ``write_scope.tags_for_write`` decides (the policy's
``invalidates`` plus the lists whose membership changed), through
:meth:`CachedCatalog.invalidate`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from hybridcache import HybridCache
from hybridcache.options import Adaptive, EntryOptions
from hybridcache.policy import Policy, ReadTags

from . import lists, repo
from .config import Settings
from .db import Database
from .hot import HotProducts
from .metrics import ACK_MISSING, ACK_WAIT, INVALIDATIONS, TAGS_PER_WRITE
from .policies import DEFAULT_POLICIES, effective
from .write_scope import Change, tags_for_write

log = logging.getLogger("catalog.cached")

Record = dict[str, Any]
_TAG_CACHE_MAX = 200_000
_RENDERED_MAX = 100_000
_MISSING: Any = object()
_LAYER_NAMES = ("l1", "l2", "miss", "stale")
_LAYERS = {(a, b, c): f"product={a}, price={b}, stock={c}".encode()
           for a in _LAYER_NAMES for b in _LAYER_NAMES for c in _LAYER_NAMES}


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A policy with its entry options and the read-side tags rendered per key
    (rendering templates costs more than the L1 hit it precedes)."""

    policy: Policy
    options: EntryOptions
    tags: dict[str, ReadTags]


@dataclass(frozen=True, slots=True)
class _View:
    """The three entries ``GET /products/{id}`` reads, ready to look up."""

    product_key: str
    product_tags: ReadTags
    product_options: EntryOptions
    price_key: str
    price_tags: ReadTags
    price_options: EntryOptions
    stock_key: str
    stock_tags: ReadTags
    stock_options: EntryOptions


@dataclass(frozen=True, slots=True)
class Invalidation:
    """What a write did to the cache, reported to the client in headers."""

    data_type: str
    strategy: str
    consistency: str
    tags: tuple[str, ...] = ()
    missing: frozenset[str] = frozenset()
    waited: float = 0.0

    def headers(self) -> dict[str, str]:
        out = {"X-Invalidation": f"{self.data_type}={self.strategy}/{self.consistency}",
               "X-Invalidated-Tags": ", ".join(self.tags) or "-"}
        if self.missing:
            out["X-Invalidation-Missing"] = ", ".join(sorted(self.missing))
        return out


def found_only(load: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """A loader whose "nothing there" (None or an empty list) reaches the
    caller without being cached anywhere: a client asking for a million
    missing ids must not make the cache hold a million keys."""

    async def loader() -> Any:
        value = await load()
        return Adaptive(value, cache=False) if value is None or value == [] else value

    return loader


@lru_cache(maxsize=8192)
def iso(ts: float) -> str:
    """``updated_at`` as served: ISO 8601 in UTC (memoised: the hot path repeats it)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


class CachedCatalog:
    """The catalog's data access, cache first. One per replica."""

    def __init__(self, cache: HybridCache, database: Database, settings: Settings) -> None:
        self.cache = cache
        self.db = database
        self.settings = settings
        self.node_id_bytes = cache.node_id.encode()
        self._published = cache.policies.get
        self._prep: dict[str, _Prepared] = {}
        self._views: dict[int, _View] = {}
        # Finished answers of GET /products/{id}, served before routing (hot.py);
        # also the memo of rendered bodies.
        self.hot = HotProducts(cache.peek, self.node_id_bytes)
        # The library calls this synchronously right after it applies a policy
        # change, so the prepared form can be kept until then (no per-read check).
        cache.policies.add_listener(self._policy_changed)

    def _policy_changed(self, data_type: str, _policy: Policy | None) -> None:
        self._prep.pop(data_type, None)
        self._views.clear()
        self.hot.forget()  # built with the old entry options

    # ------------------------------------------------------------ policy

    def policy(self, data_type: str) -> Policy:
        return effective(self.cache.policies, data_type)

    def _prepared(self, data_type: str) -> _Prepared:
        """What reads of ``data_type`` need from its policy, rebuilt when it changes."""
        prepared = self._prep.get(data_type)
        if prepared is None or len(prepared.tags) > _TAG_CACHE_MAX:
            policy = self._published(data_type) or DEFAULT_POLICIES[data_type]
            prepared = self._prep[data_type] = _Prepared(policy, policy.entry_options(), {})
        return prepared

    async def _read(self, data_type: str, key: str, key_record: Record,
                    loader: Any) -> tuple[Any, str]:
        prepared = self._prepared(data_type)
        by_key = prepared.tags
        try:
            tags = by_key[key]
        except KeyError:
            policy = prepared.policy
            tags = by_key[key] = policy.read_tags(key_record)
        found = await self.cache.lookup(key, found_only(loader), tags=tags,
                                        options=prepared.options)
        return found.value, found.layer

    # ------------------------------------------------------------ reads

    async def product(self, product_id: int) -> tuple[Record | None, str]:
        return await self._read("product", f"product:{product_id}", {"id": product_id},
                                lambda: repo.get_product(self.db, product_id))

    async def price(self, product_id: int) -> tuple[Record | None, str]:
        return await self._read("price", f"price:{product_id}",
                                {"id": product_id, "product_id": product_id},
                                lambda: repo.get_price(self.db, product_id))

    async def stock(self, product_id: int) -> tuple[Record | None, str]:
        return await self._read("stock", f"stock:{product_id}",
                                {"id": product_id, "product_id": product_id},
                                lambda: repo.get_stock(self.db, product_id))

    async def full_product(self, product_id: int) -> tuple[Record | None, str]:
        """``GET /products/{id}``: product, price and stock, each cached on its
        own; returns the composed record and the ``X-Cache`` header value."""
        product, p_layer = await self.product(product_id)
        if product is None:
            return None, f"product={p_layer}"
        price, pr_layer = await self.price(product_id)
        stock, s_layer = await self.stock(product_id)
        if price is None or stock is None:
            # Deleted between the reads; the product entry goes at the next read.
            return None, f"product={p_layer}, price={pr_layer}, stock={s_layer}"
        updated = max(product["updated_at"], price["updated_at"], stock["updated_at"])
        body = {"id": product_id, "name": product["name"],
                "description": product["description"], "category_id": product["category_id"],
                "price": price["price"], "stock": stock["stock"], "updated_at": iso(updated)}
        return body, f"product={p_layer}, price={pr_layer}, stock={s_layer}"

    def _product_view(self, product_id: int) -> _View:
        """Keys, tags and options of a product's three entries (cached per id;
        dropped with the policies they were derived from)."""
        view = self._views.get(product_id)
        if view is None:
            if len(self._views) >= _RENDERED_MAX:
                self._views.clear()
            record = {"id": product_id, "product_id": product_id}
            parts = []
            for data_type in ("product", "price", "stock"):
                prep = self._prepared(data_type)
                tags = prep.policy.read_tags(record)
                parts.append((f"{data_type}:{product_id}", tags, prep.options))
            view = self._views[product_id] = _View(*parts[0], *parts[1], *parts[2])
        return view

    async def product_json(self, product_id: int) -> tuple[bytes | None, bytes]:
        """``full_product`` rendered to JSON bytes: the hot read path.

        Keys, tags and options come precomputed per product (``_View``), and the
        body is memoised (``hot``) on the identity of the three cached values: while L1
        hands back the same objects the composed body cannot have changed.
        """
        db, lookup, peek = self.db, self.cache.lookup, self.cache.peek
        v = self._views.get(product_id) or self._product_view(product_id)
        # L1 first without awaiting (the common case); lookup() on a miss.
        p = (peek(v.product_key, v.product_options)
             or await lookup(v.product_key, found_only(lambda: repo.get_product(db, product_id)),
                             tags=v.product_tags, options=v.product_options))
        if p.value is None:
            return None, f"product={p.layer}".encode()
        r = (peek(v.price_key, v.price_options)
             or await lookup(v.price_key, found_only(lambda: repo.get_price(db, product_id)),
                             tags=v.price_tags, options=v.price_options))
        s = (peek(v.stock_key, v.stock_options)
             or await lookup(v.stock_key, found_only(lambda: repo.get_stock(db, product_id)),
                             tags=v.stock_tags, options=v.stock_options))
        layers = _LAYERS.get((p.layer, r.layer, s.layer))
        if layers is None:
            layers = f"product={p.layer}, price={r.layer}, stock={s.layer}".encode()
        product, price, stock = p.value, r.value, s.value
        if price is None or stock is None:  # deleted between the reads
            return None, layers
        body = self.hot.body_for(product_id, product, price, stock)
        if body is None:
            body = self._render(product_id, product, price, stock)
            self.hot.remember(product_id, (v.product_key, v.product_options, v.price_key,
                                           v.price_options, v.stock_key, v.stock_options),
                              (product, price, stock), body)
        return body, layers

    def _render(self, product_id: int, product: Record, price: Record, stock: Record) -> bytes:
        updated = max(product["updated_at"], price["updated_at"], stock["updated_at"])
        return orjson.dumps({
            "id": product_id, "name": product["name"], "description": product["description"],
            "category_id": product["category_id"], "price": price["price"],
            "stock": stock["stock"], "updated_at": iso(updated)})

    async def product_ids(self, category_id: int | None, limit: int,
                          offset: int) -> list[int]:
        """A page of product ids, cut from cached blocks (``lists``)."""
        wanted = lists.blocks(limit, offset)
        loaded = []
        for block in wanted:
            ids = await self._block(category_id, block)
            loaded.append(ids)
            if len(ids) < lists.BLOCK:
                break  # the end of the list
        return lists.page(loaded, wanted.start, limit, offset)

    async def _block(self, category_id: int | None, block: int) -> list[int]:
        prepared = self._prepared("product")
        policy = prepared.policy
        tags: list[str] | None = None
        if policy.strategy == "active":
            key_record: Record = {} if category_id is None else {"category_id": category_id}
            tags = [lists.scope_tag(category_id),
                    *policy.render_tags((key_record,), partial=True)]
        found = await self.cache.lookup(
            lists.block_key(category_id, block),
            found_only(lambda: repo.list_product_ids(self.db, category_id, lists.BLOCK,
                                                     block * lists.BLOCK)),
            tags=tags, options=prepared.options)
        return list(found.value)

    async def category(self, category_id: int) -> Record | None:
        value, _ = await self._read("category", f"category:{category_id}", {"id": category_id},
                                    lambda: repo.get_category(self.db, category_id))
        return value  # type: ignore[no-any-return]

    async def categories(self) -> list[Record]:
        value, _ = await self._read("category", "categories", {},
                                    lambda: repo.list_categories(self.db))
        return list(value)

    async def countries(self) -> list[Record]:
        value, _ = await self._read("country", "country:all", {},
                                    lambda: repo.list_countries(self.db))
        return list(value)

    # ------------------------------------------------------------ writes

    async def invalidate(self, data_type: str, change: Change, before: Record | None,
                         after: Record | None, *, confirm: bool = True) -> Invalidation:
        """Apply ``data_type``'s policy after a committed ``change`` (update,
        create or delete) of one record, given as it was ``before`` and is
        ``after`` (None for a create's before and a delete's after).

        The tags come from ``write_scope.tags_for_write``, the one place that
        decides them. ``active``: remove them on every replica; with
        ``acknowledged`` wait (at most ACK_TIMEOUT) until every live replica
        confirmed. ``ttl``: nothing; entries expire on their own.

        ``confirm=False`` (the outbox relay) never waits for confirmations:
        there is no caller to answer, and a silent member would hold every
        later change behind this one for up to its lease (L + 0.5 s), past a
        1 s ``maxStaleness``. The replicas' leases bound what they serve.
        """
        policy = self.policy(data_type)
        if policy.strategy != "active":
            return Invalidation(data_type, policy.strategy, policy.consistency)
        tags = tags_for_write(policy, change, before, after)
        INVALIDATIONS.labels(data_type, policy.consistency).inc()
        TAGS_PER_WRITE.labels(data_type).observe(len(tags))
        if not tags:
            return Invalidation(data_type, policy.strategy, policy.consistency)
        if policy.consistency != "acknowledged" or not confirm:
            await self.cache.remove_by_tags(tags)
            return Invalidation(data_type, policy.strategy, policy.consistency, tuple(tags))
        started = time.perf_counter()
        result = await self.cache.remove_by_tags(tags, ack_timeout=self.settings.ack_timeout)
        waited = time.perf_counter() - started
        ACK_WAIT.observe(waited)
        missing = frozenset(result.missing) if result is not None else frozenset()
        if missing:
            ACK_MISSING.labels(data_type).inc()
            log.warning("invalidation of %s not confirmed by %s within %.1fs",
                        tags, sorted(missing), self.settings.ack_timeout)
        return Invalidation(data_type, policy.strategy, policy.consistency, tuple(tags),
                            missing, waited)
