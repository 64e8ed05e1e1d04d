"""L1-only behaviour (redis_url=None): the read path, bounds, stampede
protection, validation, fail-safe and timeouts."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from hybridcache import CacheOptions, EntryOptions, HybridCache, MsgspecSerializer
from hybridcache.testing import FakeClock
from prometheus_client import generate_latest

from tests.hybridcache.conftest import Source
from tests.support.waiting import eventually


def local_cache(**kw: Any) -> HybridCache:
    return HybridCache(CacheOptions(redis_url=None, node_id="solo", **kw))


async def test_get_or_create_caches_in_l1_and_reports_layers() -> None:
    async with local_cache() as cache:
        src = Source({"id": 1})
        first = await cache.lookup("product:1", src, tags=["product:1"])
        second = await cache.lookup("product:1", src, tags=["product:1"])
        assert (first.layer, second.layer) == ("miss", "l1")
        assert second.value == {"id": 1} and src.calls == 1
        assert await cache.get_or_create("product:1", src) == {"id": 1}
        assert src.calls == 1


async def test_get_returns_default_without_calling_anything() -> None:
    async with local_cache() as cache:
        assert await cache.get("nothing:1", default="dflt") == "dflt"
        await cache.set("thing:1", [1, 2])
        assert await cache.get("thing:1") == [1, 2]


async def test_remove_and_remove_by_tag_and_all() -> None:
    async with local_cache() as cache:
        src = Source()
        for key, tags in (("a:1", ["x"]), ("a:2", ["x", "y"]), ("a:3", ["y"])):
            await cache.get_or_create(key, src, tags=tags)
        assert src.calls == 3
        await cache.remove("a:1")
        await cache.get_or_create("a:1", src, tags=["x"])
        assert src.calls == 4
        await cache.remove_by_tag("x")
        for key, tags in (("a:1", ["x"]), ("a:2", ["x", "y"]), ("a:3", ["y"])):
            await cache.get_or_create(key, src, tags=tags)
        assert src.calls == 6  # a:1 and a:2 reloaded, a:3 still cached
        await cache.remove_by_tag("*")
        await cache.get_or_create("a:3", src, tags=["y"])
        assert src.calls == 7


async def test_entries_found_invalidated_are_counted_once_per_entry() -> None:
    """hybridcache_l1_invalidated_entries: an entry a read finds invalidated
    by a tag counts once, however many reads find it before it is reloaded."""
    opts = EntryOptions(data_type="widget")
    async with local_cache() as cache:
        src = Source()
        for key, tags in (("w:1", ["w:1", "all"]), ("w:2", ["w:2", "all"]),
                          ("w:3", ["w:3", "all"])):
            await cache.get_or_create(key, src, tags=tags, options=opts)
        await cache.remove_by_tag("w:1")
        assert cache.peek("w:1", opts) is None
        assert cache.peek("w:1", opts) is None  # the same entry: not counted again
        assert cache.peek("w:2", opts) is not None
        assert cache.stats().per_type["widget"].invalidated == 1
        await cache.remove_by_tag("all")
        for key in ("w:1", "w:2", "w:3"):
            cache.peek(key, opts)
        assert cache.stats().per_type["widget"].invalidated == 3  # w:1 was already gone
        assert ('hybridcache_l1_invalidated_entries_total{data_type="widget"}'
                in generate_latest().decode())


async def test_stampede_500_concurrent_misses_run_the_factory_once() -> None:
    async with local_cache() as cache:
        gate = asyncio.Event()
        calls = 0

        async def slow() -> str:
            nonlocal calls
            calls += 1
            await gate.wait()
            return "shared"

        tasks = [asyncio.create_task(cache.get_or_create("hot:1", slow)) for _ in range(500)]
        await eventually(lambda: cache.stats().coalesced == 499, what="every caller to join")
        gate.set()
        results = await asyncio.gather(*tasks)
        assert calls == 1
        assert results == ["shared"] * 500


async def test_stampede_shares_the_exception() -> None:
    async with local_cache() as cache:
        gate = asyncio.Event()
        calls = 0

        async def failing() -> str:
            nonlocal calls
            calls += 1
            await gate.wait()
            raise LookupError("db down")

        tasks = [asyncio.create_task(cache.get_or_create("bad:1", failing)) for _ in range(20)]
        await eventually(lambda: cache.stats().coalesced == 19, what="every caller to join")
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert calls == 1
        assert all(isinstance(r, LookupError) for r in results)
        # Failures are not cached: the next call runs the factory again.
        gate.set()
        with pytest.raises(LookupError):
            await cache.get_or_create("bad:1", failing)
        assert calls == 2


async def test_invalidation_during_load_detaches_the_flight() -> None:
    """A caller arriving after an invalidation must not join a load that began
    before it, and that load's value must not enter L1."""
    async with local_cache() as cache:
        src_value = "old"
        started, release = asyncio.Event(), asyncio.Event()

        async def load() -> str:
            value = src_value
            started.set()
            await release.wait()
            return value

        early = asyncio.create_task(cache.get_or_create("p:1", load, tags=["p"]))
        await started.wait()
        src_value = "new"
        await cache.remove_by_tag("p")
        started.clear()
        late = asyncio.create_task(cache.get_or_create("p:1", load, tags=["p"]))
        await started.wait()
        release.set()
        assert await early == "old"  # concurrent with the invalidation: allowed
        assert await late == "new"
        assert await cache.get_or_create("p:1", load, tags=["p"]) == "new"


async def test_l1_evicts_by_entry_count_and_by_bytes() -> None:
    async with local_cache(l1_max_entries=100) as cache:
        for i in range(250):
            await cache.set(f"k:{i}", i)
        assert cache.stats().l1_entries == 100
        assert "hybridcache_l1_evictions_total" in generate_latest().decode()
        assert cache.stats().l1_evictions == 150
        assert await cache.get("k:249") == 249
        assert await cache.get("k:0") is None
    for copy in (False, True):  # the value's size counts whether or not a copy is kept
        async with local_cache(l1_max_bytes=50_000) as cache:
            for i in range(100):
                await cache.set(f"big:{i}", "x" * 2000,
                                options=EntryOptions(copy_on_read=copy))
            stats = cache.stats()
            assert stats.l1_bytes <= 50_000
            assert 0 < stats.l1_entries < 30


async def test_second_chance_keeps_recently_read_entries() -> None:
    async with local_cache(l1_max_entries=10) as cache:
        for i in range(10):
            await cache.set(f"k:{i}", i)
        assert await cache.get("k:0") == 0  # referenced: survives the next eviction
        await cache.set("k:10", 10)
        assert await cache.get("k:0") == 0
        assert await cache.get("k:1") is None


async def test_local_expiration_is_never_longer_than_expiration() -> None:
    opts = EntryOptions(expiration=0.05, local_expiration=60)
    assert opts.l1_expiration == 0.05
    clock = FakeClock()
    async with local_cache(monotonic=clock) as cache:
        src = Source()
        await cache.get_or_create("e:1", src, options=opts)
        clock.advance(0.04)
        await cache.get_or_create("e:1", src, options=opts)
        assert src.calls == 1
        clock.advance(0.02)  # the 50 ms lifetime, not the 60 s one, is over
        await cache.get_or_create("e:1", src, options=opts)
        assert src.calls == 2


async def test_per_call_flags_skip_l1() -> None:
    async with local_cache() as cache:
        src = Source()
        await cache.get_or_create("f:1", src, options=EntryOptions(skip_l1_write=True))
        await cache.get_or_create("f:1", src)
        assert src.calls == 2
        await cache.get_or_create("f:1", src, options=EntryOptions(skip_l1_read=True))
        assert src.calls == 3


async def test_cached_values_are_shared_unless_copy_on_read() -> None:
    async with local_cache() as cache:
        shared = await cache.get_or_create("s:1", Source({"n": 1}))
        assert await cache.get("s:1") is shared
        opts = EntryOptions(copy_on_read=True)
        first = await cache.get_or_create("c:1", Source({"n": 1}), options=opts)
        first["n"] = 99
        again = await cache.get_or_create("c:1", Source({"n": 1}), options=opts)
        assert again == {"n": 1} and again is not first


class _Opaque:
    """No serializer can encode this."""

    def __init__(self, n: int) -> None:
        self.n = n


async def test_copy_on_read_of_an_unserializable_value_hands_out_deep_copies() -> None:
    async with local_cache() as cache:
        opts = EntryOptions(copy_on_read=True)
        src = Source({"inner": _Opaque(1)})
        loaded = await cache.get_or_create("o:1", src, options=opts)
        hit = await cache.get_or_create("o:1", src, options=opts)
        hit["inner"].n = 99
        again = await cache.get_or_create("o:1", src, options=opts)
        assert src.calls == 1  # kept in L1 without a payload
        assert again["inner"].n == 1 and again is not hit and again is not loaded


@pytest.mark.parametrize(
    ("key", "message"),
    [("", "empty"), ("   ", "empty"), (42, "string"), ("k" * 2000, "maximum")],
)
async def test_bad_keys_raise_value_error(key: Any, message: str) -> None:
    async with local_cache() as cache:
        with pytest.raises(ValueError, match=message):
            await cache.get_or_create(key, Source())
        with pytest.raises(ValueError, match=message):
            await cache.set(key, 1)
        with pytest.raises(ValueError, match=message):
            await cache.remove(key)


@pytest.mark.parametrize(
    ("tags", "message"),
    [([""], "empty"), ([" "], "empty"), ([" x"], "whitespace"), (["*"], r"'\*'"),
     (["t" * 300], "maximum"), ("product:1", "list"), ([7], "string")],
)
async def test_bad_tags_raise_value_error_naming_the_tag(tags: Any, message: str) -> None:
    async with local_cache() as cache:
        with pytest.raises(ValueError, match=message):
            await cache.get_or_create("k:1", Source(), tags=tags)


async def test_bad_tags_for_invalidation() -> None:
    async with local_cache() as cache:
        with pytest.raises(ValueError, match="whitespace"):
            await cache.remove_by_tag("x ")
        with pytest.raises(ValueError, match="empty"):
            await cache.remove_by_tag("")


def test_bad_options_raise_value_error() -> None:
    with pytest.raises(ValueError, match="expiration"):
        EntryOptions(expiration=0)
    with pytest.raises(ValueError, match="jitter"):
        EntryOptions(jitter=-1)
    with pytest.raises(ValueError, match="l1_max_entries"):
        CacheOptions(l1_max_entries=0)


async def test_fail_safe_serves_the_last_value_when_the_factory_fails() -> None:
    opts = EntryOptions(expiration=0.05, fail_safe=True, fail_safe_max_duration=60,
                        fail_safe_throttle=0.05)
    clock = FakeClock()
    async with local_cache(monotonic=clock) as cache:
        assert await cache.get_or_create("fs:1", Source("good"), options=opts) == "good"
        clock.advance(0.05)  # expire it

        async def broken() -> str:
            raise ConnectionError("db down")

        result = await cache.lookup("fs:1", broken, options=opts)
        assert result == result.__class__("good", "stale")
        # Within the throttle the failing source is not asked again.
        assert (await cache.lookup("fs:1", Source("unused"), options=opts)).layer == "l1"
        clock.advance(0.05)  # past the throttle: the source is asked again
        assert (await cache.lookup("fs:1", Source("back"), options=opts)).value == "back"
        # Without fail-safe the error reaches the caller.
        with pytest.raises(ConnectionError):
            await cache.get_or_create("plain:1", broken)


async def test_fail_safe_never_serves_an_invalidated_value() -> None:
    opts = EntryOptions(expiration=0.05, fail_safe=True)
    async with local_cache() as cache:
        await cache.get_or_create("fs:2", Source("old"), tags=["t"], options=opts)
        await cache.remove_by_tag("t")

        async def broken() -> str:
            raise ConnectionError("db down")

        with pytest.raises(ConnectionError):
            await cache.get_or_create("fs:2", broken, tags=["t"], options=opts)


async def test_soft_timeout_serves_stale_and_finishes_in_background() -> None:
    opts = EntryOptions(expiration=0.05, fail_safe=True, factory_soft_timeout=0.01)
    clock = FakeClock()
    async with local_cache(monotonic=clock) as cache:
        await cache.get_or_create("st:1", Source("old"), options=opts)
        clock.advance(0.05)
        release = asyncio.Event()

        async def slow() -> str:
            await release.wait()
            return "new"

        assert (await cache.lookup("st:1", slow, options=opts)).layer == "stale"
        release.set()
        await cache.join_background()  # the background load completes and stores
        assert await cache.get("st:1") == "new"


async def test_hard_timeout_raises() -> None:
    async with local_cache() as cache:
        async def hang() -> str:
            await asyncio.Event().wait()
            return "never"

        with pytest.raises(TimeoutError):
            await cache.get_or_create("ht:1", hang,
                                      options=EntryOptions(factory_hard_timeout=0.02))


async def test_msgspec_serializer_round_trips_copies() -> None:
    async with local_cache(serializer=MsgspecSerializer()) as cache:
        opts = EntryOptions(copy_on_read=True)
        await cache.get_or_create("m:1", Source({"a": [1, 2]}), options=opts)
        assert await cache.get("m:1") == {"a": [1, 2]}


async def test_metrics_are_exported_with_design_names() -> None:
    from prometheus_client import generate_latest

    async with local_cache() as cache:
        src = Source()
        await cache.get_or_create("price:1", src)
        await cache.get_or_create("price:1", src)
        text = generate_latest().decode()
        assert 'hybridcache_requests_total{data_type="price",layer="l1",result="hit"}' in text
        assert 'hybridcache_factory_calls_total{data_type="price"}' in text
        for name in ("hybridcache_stampede_coalesced_total", "hybridcache_backplane_lag_seconds",
                     "hybridcache_backplane_connected", "hybridcache_l1_entries",
                     "hybridcache_l1_bytes", "hybridcache_l2_errors_total"):
            assert name in text
    del cache
    gc.collect()


async def test_tags_derived_from_the_loaded_value() -> None:
    """A product's category is only known once it is loaded."""
    async with local_cache() as cache:
        src = Source({"id": 1, "category_id": 3})

        def tags(v: dict[str, int]) -> list[str]:
            return [f"product:{v['id']}", f"category:{v['category_id']}"]

        await cache.get_or_create("product:1", src, tags=tags)
        await cache.remove_by_tag("category:4")
        await cache.get_or_create("product:1", src, tags=tags)
        assert src.calls == 1
        await cache.remove_by_tag("category:3")
        await cache.get_or_create("product:1", src, tags=tags)
        assert src.calls == 2


async def test_bad_derived_tags_raise_value_error() -> None:
    async with local_cache() as cache:
        with pytest.raises(ValueError, match="whitespace"):
            await cache.get_or_create("d:1", Source("x"), tags=lambda v: [" padded"])


async def test_joiners_of_a_load_invalidated_through_a_derived_tag_load_again() -> None:
    async with local_cache() as cache:
        row = {"id": 1, "category_id": 3, "name": "old"}
        started, release = asyncio.Event(), asyncio.Event()

        async def load() -> dict[str, object]:
            snapshot = dict(row)
            started.set()
            await release.wait()
            return snapshot

        def tags(v: dict[str, object]) -> list[str]:
            return [f"category:{v['category_id']}"]

        leader = asyncio.create_task(cache.get_or_create("product:1", load, tags=tags))
        await started.wait()
        row["name"] = "new"
        await cache.remove_by_tag("category:3")
        joiner = asyncio.create_task(cache.get_or_create("product:1", load, tags=tags))
        await eventually(lambda: cache.stats().coalesced == 1, what="the joiner to join")
        release.set()
        assert (await leader)["name"] == "old"
        assert (await joiner)["name"] == "new"
        assert (await cache.get_or_create("product:1", load, tags=tags))["name"] == "new"


async def test_factory_chooses_its_own_caching_with_adaptive() -> None:
    from hybridcache import Adaptive

    clock = FakeClock()
    async with local_cache(monotonic=clock) as cache:
        calls = 0

        async def not_found() -> Adaptive:
            nonlocal calls
            calls += 1
            return Adaptive(None, cache=False)  # do not remember a miss

        assert await cache.get_or_create("p:404", not_found) is None
        assert await cache.get_or_create("p:404", not_found) is None
        assert calls == 2

        async def short_lived() -> Adaptive:
            return Adaptive("v", options=EntryOptions(expiration=0.05), tags=["late"])

        assert await cache.get_or_create("p:1", short_lived) == "v"
        assert (await cache.lookup("p:1", short_lived)).layer == "l1"
        await cache.remove_by_tag("late")  # the tags the factory chose are attached
        assert (await cache.lookup("p:1", short_lived)).layer == "miss"
        assert (await cache.lookup("p:1", short_lived)).layer == "l1"
        clock.advance(0.05)  # past the factory's own 50 ms lifetime
        assert (await cache.lookup("p:1", short_lived)).layer == "miss"


async def test_eager_refresh_reloads_a_hot_entry_before_it_expires() -> None:
    opts = EntryOptions(expiration=60, local_expiration=0.2, eager_refresh=0.5)
    clock = FakeClock()
    async with local_cache(monotonic=clock) as cache:
        src = Source("v1")
        await cache.get_or_create("hot:1", src, options=opts)
        src.value = "v2"
        clock.advance(0.09)  # not yet half of the 0.2 s L1 lifetime
        await cache.lookup("hot:1", src, options=opts)
        await cache.join_background()
        assert src.calls == 1
        clock.advance(0.02)  # past half of it, not past it
        # The hit still answers from L1 at once, and starts a background reload.
        hit = await cache.lookup("hot:1", src, options=opts)
        assert (hit.value, hit.layer) == ("v1", "l1")
        await cache.join_background()
        assert src.calls == 2
        assert (await cache.lookup("hot:1", src, options=opts)).value == "v2"
    with pytest.raises(ValueError, match="eager_refresh"):
        EntryOptions(eager_refresh=1.5)


async def test_peek_reads_l1_without_awaiting_or_loading() -> None:
    async with local_cache() as cache:
        assert cache.peek("pk:1") is None
        await cache.get_or_create("pk:1", Source({"n": 1}), tags=["t"])
        found = cache.peek("pk:1")
        assert found is not None and found.value == {"n": 1} and found.layer == "l1"
        await cache.remove_by_tag("t")
        assert cache.peek("pk:1") is None  # invalidated entries are never peeked


async def test_inspect_describes_the_l1_entry_without_counting_a_hit() -> None:
    clock = FakeClock()
    async with local_cache(monotonic=clock) as cache:
        assert cache.inspect("i:1") is None
        await cache.get_or_create("i:1", Source("v"), tags=["t"],
                                  options=EntryOptions(expiration=10))
        info = cache.inspect("i:1")
        assert info is not None and info.tags == ("t",) and info.servable
        assert info.expires_in == 10
        assert cache.stats().per_type["i"].l1_hit == 0
        clock.advance(11)
        info = cache.inspect("i:1")
        assert info is not None and info.fresh and not info.servable
        await cache.set("i:2", "w", tags=["u"])
        await cache.remove_by_tag("u")
        info = cache.inspect("i:2")
        assert info is not None and not info.fresh and not info.servable
        assert "u" in cache.tag_versions()


def _store(max_entries: int) -> Any:
    from hybridcache.local_store import LocalStore
    from hybridcache.serializers import JsonSerializer
    from hybridcache.versions import Versions

    return LocalStore(max_entries, 1 << 30, Versions(), JsonSerializer(), lambda: 0.0)


def _keep(store: Any, key: str) -> None:
    from hybridcache.stats import TypeStats

    store.keep(key, key, None, 0, (), EntryOptions(expiration=60), TypeStats())


def test_eviction_skips_removed_keys_and_spares_referenced_ones() -> None:
    store = _store(3)
    for key in ("a", "b", "c"):
        _keep(store, key)
    store.pop("b")
    assert store.hit("a", 0.0, None) is not None  # referenced: one more lap
    _keep(store, "d")
    _keep(store, "e")  # over the bound: "b" is gone, "a" was read, "c" goes
    assert sorted(store.entries) == ["a", "d", "e"] and store.evictions == 1


def test_the_clock_stays_bounded_when_keys_come_and_go() -> None:
    store = _store(1000)
    for round_ in range(2000):
        for n in range(5):
            _keep(store, f"k{n}")
            if round_ % 2:
                store.pop(f"k{n}")
    assert len(store.entries) == 0 and len(store.ring) <= 2 * 5 + 64 + 1
    _keep(store, "last")
    assert list(store.entries) == ["last"] and "last" in store.ring
