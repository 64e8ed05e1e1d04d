"""hybridcache.policy: the two doors (from_spec, from_wire), the one
serialization, the bounds, tag rendering, and the registry refusing a stored
policy it cannot use."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson
import pytest
from hybridcache.options import CacheOptions, EntryOptions
from hybridcache.policies import PolicyRegistry
from hybridcache.policy import (
    MAX_DURATION_SECONDS,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    SPEC_FIELDS,
    Policy,
    PolicyError,
    PolicyRejected,
    parse_duration,
    tag_value,
)
from prometheus_client import REGISTRY

PRODUCT = Policy("product", "active", 600.0, 30.0,
                 ("product:{id}", "category:{categoryId}", "products"), "eventual", 1.0,
                 generation=3, source="shop/product")


def rejected(data_type: str, reason: str) -> float:
    value = REGISTRY.get_sample_value("hybridcache_policy_rejected_total",
                                      {"data_type": data_type, "reason": reason})
    return value or 0.0


# ---------------------------------------------------------------- from_spec

def test_from_spec_compiles_durations_and_defaults() -> None:
    policy = Policy.from_spec({"dataType": "product", "expiration": "1h30m",
                               "tags": ["product:{id}"], "maxStaleness": "500ms"},
                              generation=2, source="a/b")
    assert policy == Policy("product", "active", 5400.0, 30.0, ("product:{id}",), "eventual",
                            0.5, 2, "a/b")
    short = Policy.from_spec({"dataType": "country", "strategy": "ttl", "expiration": "10s"})
    assert short.local_expiration == 10.0  # the shorter of 30s and expiration


@pytest.mark.parametrize(("spec", "field", "words"), [
    ({"strategy": "ttl"}, "spec.dataType", "required"),
    ({"dataType": "p", "tags": ["a"], "expiration": "1" * 400 + "s"}, "spec.expiration",
     "401 characters; a duration has at most 32"),
    ({"dataType": "p", "tags": ["a"], "expiration": "9" * 30 + "h"}, "spec.expiration",
     "longer than the maximum, 8760h"),
    ({"dataType": "p", "tags": ["a"], "maxStaleness": "8761h"}, "spec.maxStaleness",
     "longer than the maximum"),
    ({"dataType": "p", "tags": ["a"], "expiration": 600}, "spec.expiration",
     "is not a duration"),
    ({"dataType": "p", "tags": ["a"], "expiration": "1d"}, "spec.expiration",
     "is not a duration"),
    ({"dataType": "p", "tags": ["a"], "expiration": "0s"}, "spec.expiration",
     "greater than zero"),
    ({"dataType": "p", "tags": [f"t{i}" for i in range(MAX_TAGS + 1)]}, "spec.tags",
     "at most 64 tag templates, got 65"),
    ({"dataType": "p", "tags": ["a", "a"]}, "spec.tags[1]", "listed twice"),
    ({"dataType": "p", "tags": ["x" * 257]}, "spec.tags[0]", "longer than 256"),
    ({"dataType": "p", "tags": ["a {b}"]}, "spec.tags[0]", "is not a tag template"),
    # a template must start with literal text, so a value cannot be a whole tag
    ({"dataType": "p", "tags": ["{name}"]}, "spec.tags[0]", "literal text first"),
    ({"dataType": "p", "tags": ["a"], "localExpiration": "11m"}, "spec.localExpiration",
     "must not be longer than spec.expiration"),
    ({"dataType": "p"}, "spec.tags", "required (at least one) when strategy is active"),
    ({"dataType": "p", "strategy": "ttl", "tags": ["a"]}, "spec.tags", "not allowed"),
    ({"dataType": "p", "strategy": "ttl", "consistency": "acknowledged"},
     "spec.consistency", "requires strategy active"),
    ({"dataType": "P", "tags": ["a"]}, "spec.dataType", "lower-case"),
    ({"dataType": "p", "tags": ["a"], "flushes": ["a"]}, "spec.flushes", "unknown field"),
    ({"dataType": "p", "tags": ["a"], "invalidates": ["b"]}, "spec.invalidates[0]",
     "is not one of spec.tags"),
    ({"dataType": "p", "tags": ["a"], "invalidates": []}, "spec.invalidates",
     "must not be empty"),
    ({"dataType": "p", "strategy": "ttl", "invalidates": ["a"]}, "spec.invalidates",
     "not allowed when strategy is ttl"),
    ({"dataType": "p", "tags": ["a", "b"], "invalidates": ["b", "b"]}, "spec.invalidates[1]",
     "listed twice"),
])
def test_from_spec_names_the_bad_field(spec: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_spec(spec)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ") and words in str(info.value)


def test_parse_duration_units_and_bounds() -> None:
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration("250ms") == 0.25
    assert parse_duration("8760h") == MAX_DURATION_SECONDS
    with pytest.raises(ValueError, match="8760h"):
        parse_duration("8760h1ms")


# ------------------------------------------------------- to_dict / from_wire

def test_to_dict_is_the_spec_field_names_and_round_trips() -> None:
    body = PRODUCT.to_dict()
    assert list(body) == [*SPEC_FIELDS, "generation", "source"]
    assert body["tags"] == list(PRODUCT.tags) and body["localExpiration"] == 30.0
    assert Policy.from_wire(PRODUCT.to_json()) == PRODUCT
    assert Policy.from_wire(body) == PRODUCT


def test_from_wire_ignores_fields_it_does_not_know() -> None:
    newer = {**PRODUCT.to_dict(), "flushes": ["products"]}
    assert Policy.from_wire(orjson.dumps(newer)) == PRODUCT


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "not_json"),
    (b"[1, 2]", "malformed"),
    ({**PRODUCT.to_dict(), "tags": [f"t{i}" for i in range(65)]}, "out_of_bounds"),
    ({**PRODUCT.to_dict(), "tags": ["x" * 257]}, "out_of_bounds"),
    ({**PRODUCT.to_dict(), "expiration": None}, "malformed"),  # what inf was stored as
    ({**PRODUCT.to_dict(), "expiration": 1e300}, "out_of_bounds"),
    ({**PRODUCT.to_dict(), "localExpiration": 0}, "out_of_bounds"),
    ({**PRODUCT.to_dict(), "strategy": "lru"}, "malformed"),
    ({**PRODUCT.to_dict(), "generation": -1}, "malformed"),
    ({k: v for k, v in PRODUCT.to_dict().items() if k != "dataType"}, "malformed"),
])
def test_from_wire_refuses_what_a_replica_cannot_use(raw: Any, reason: str) -> None:
    with pytest.raises(PolicyRejected) as info:
        Policy.from_wire(raw if isinstance(raw, bytes) else orjson.dumps(raw))
    assert info.value.reason == reason


def test_from_wire_checks_the_hash_field_it_was_stored_under() -> None:
    with pytest.raises(PolicyRejected) as info:
        Policy.from_wire(PRODUCT.to_json(), data_type="price")
    assert info.value.reason == "data_type_mismatch"


# ------------------------------------------------------------ what it means

def test_policy_limits_are_the_cache_defaults() -> None:
    """A policy's rendered tags must fit what a default cache accepts per entry."""
    options = CacheOptions()
    assert (options.maximum_tags_per_entry, options.maximum_tag_length) == (MAX_TAGS,
                                                                            MAX_TAG_LENGTH)


def test_entry_options() -> None:
    assert PRODUCT.entry_options() == EntryOptions(expiration=600.0, local_expiration=30.0,
                                                   data_type="product")


def test_render_tags_with_camel_case_and_partial_records() -> None:
    record = {"id": 5, "category_id": 2}
    assert PRODUCT.render_tags([record, {"id": 5, "category_id": 3}]) == [
        "product:5", "category:2", "products", "category:3"]
    assert PRODUCT.render_tags([{"id": 5}], partial=True) == ["product:5", "products"]


def test_unusable_rendered_tags_are_skipped() -> None:
    policy = Policy("product", "active", 600.0, 30.0, ("name:{name}", "product:{id}"))
    assert policy.render_tags([{"id": 2, "name": "x" * 300}]) == ["product:2"]
    stored = Policy("product", "active", 600.0, 30.0, ("{", "product:{id}"))  # never parsed
    assert stored.render_tags([{"id": 3}]) == ["product:3"]


def test_a_field_value_cannot_name_another_entitys_tag() -> None:
    """A client chooses a product's name; a template using it must not let the
    name "product:31" invalidate product 31 (nor spaces, '*' or braces slip in)."""
    policy = Policy("product", "active", 600.0, 30.0, ("name:{name}", "product:{id}"))
    assert policy.render_tags([{"id": 30, "name": "product:31"}]) == [
        "name:product%3A31", "product:30"]
    assert policy.render_tags([{"id": 1, "name": " padded * {x}"}]) == [
        "name:%20padded%20%2A%20%7Bx%7D", "product:1"]
    # ids pass unchanged: integers and plain codes
    country = Policy("country", "active", 600.0, 30.0, ("country:{code}",))
    assert country.render_tags([{"code": "US"}]) == ["country:US"]
    assert tag_value(True) == "True" and tag_value(-3) == "-3"


def test_read_tags_static_when_the_key_has_every_field_else_derived() -> None:
    price = Policy("price", "active", 600.0, 30.0, ("product:{id}",))
    assert price.read_tags({"id": 7}) == ["product:7"]
    derived = PRODUCT.read_tags({"id": 7})
    assert callable(derived)
    assert derived({"id": 7, "category_id": 4}) == ["product:7", "products", "category:4"]
    assert Policy("country", "ttl").read_tags({"id": 1}) is None


# ---------------------------------------------------------------- registry

def test_registry_keeps_the_last_good_policy_and_counts_the_refusal() -> None:
    registry = PolicyRegistry()
    seen: list[Policy | None] = []
    registry.add_listener(lambda _dt, p: seen.append(p))
    assert registry.apply("product", PRODUCT.to_json()) == PRODUCT
    before = rejected("product", "out_of_bounds")
    bad = orjson.dumps({**PRODUCT.to_dict(), "tags": [f"t{i}" for i in range(65)],
                        "generation": 4})
    assert registry.apply("product", bad) == PRODUCT
    assert registry.get("product") == PRODUCT and seen == [PRODUCT]
    assert rejected("product", "out_of_bounds") == before + 1
    registry.replace_all({"product": b"junk"})
    assert registry.get("product") == PRODUCT


def test_importing_the_contract_does_not_import_the_cache() -> None:
    code = ("import sys, hybridcache.policy, hybridcache.keys, hybridcache.wire\n"
            "bad = [m for m in ('redis', 'prometheus_client', 'hybridcache.cache')"
            " if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_invalidates_defaults_to_the_first_tag_template() -> None:
    """A write invalidates the entity's own tag, not the broad tags entries carry."""
    spec = {"dataType": "product", "tags": ["product:{id}", "category:{category_id}", "products"]}
    policy = Policy.from_spec(spec)
    assert policy.invalidates == ("product:{id}",)
    assert policy == Policy.from_spec({**spec, "invalidates": ["product:{id}"]})
    assert policy.to_dict()["invalidates"] == ["product:{id}"]
    assert Policy.from_spec({"dataType": "country", "strategy": "ttl"}).invalidates == ()


def test_render_invalidations_renders_only_invalidates() -> None:
    before, after = {"id": 5, "category_id": 2}, {"id": 5, "category_id": 3}
    assert PRODUCT.render_invalidations([before, after]) == ["product:5"]
    wide = Policy.from_spec({"dataType": "product", "tags": list(PRODUCT.tags),
                             "invalidates": ["product:{id}", "category:{categoryId}"]})
    assert wide.render_invalidations([before, after]) == ["product:5", "category:2",
                                                          "category:3"]


def test_a_stored_policy_without_invalidates_gets_the_default() -> None:
    """Written by an older operator: the replica resolves the same default."""
    body = PRODUCT.to_dict()
    del body["invalidates"]
    assert Policy.from_wire(orjson.dumps(body)).invalidates == ("product:{id}",)
