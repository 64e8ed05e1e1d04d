"""Unit tests of the pure parts: validation, policies and tag rendering,
and configuration."""

from __future__ import annotations

import pytest
from catalog import validation
from catalog.config import Settings
from catalog.errors import Invalid, NotFound
from catalog.policies import DEFAULT_POLICIES, DEFAULT_SPECS, effective
from catalog.repo import format_cents
from hybridcache.policy import Policy


@pytest.mark.parametrize(("text", "cents"), [
    ("0", 0), ("12", 1200), ("12.5", 1250), ("12.50", 1250), ("0.01", 1),
    ("9999999999.99", 999999999999),
])
def test_price_parsing(text: str, cents: int) -> None:
    assert validation.price_cents(text) == cents
    assert format_cents(cents) == f"{cents // 100}.{cents % 100:02d}"


@pytest.mark.parametrize("text", ["-1", "1.234", "01", "1e3", "NaN", "", " 1", "1.", ".5",
                                  "12345678901"])
def test_bad_prices(text: str) -> None:
    with pytest.raises(Invalid):
        validation.price_cents(text)


def test_path_ids() -> None:
    assert validation.path_id("7", "product") == 7
    for bad in ["0", "-3", "x", "2147483648", "١٢"]:
        with pytest.raises(NotFound):
            validation.path_id(bad, "product")


def test_default_policies_follow_the_design() -> None:
    assert {dt: p.strategy for dt, p in DEFAULT_POLICIES.items()} == {
        "product": "active", "price": "active", "stock": "active",
        "category": "ttl", "country": "ttl"}
    assert DEFAULT_POLICIES["product"].tags == ("product:{id}", "category:{category_id}",
                                                "products")


def test_published_policy_overrides_the_default() -> None:
    published = Policy("price", "ttl", 60.0, 10.0, (), "eventual", 60.0, generation=3)
    assert effective({"price": published}, "price") is published
    assert effective({}, "price") is DEFAULT_POLICIES["price"]


def test_defaults_are_valid_policies_of_the_catalog_data_types() -> None:
    for data_type, spec in DEFAULT_SPECS.items():
        assert spec["dataType"] == data_type
        DEFAULT_POLICIES[data_type].validate()
    assert DEFAULT_POLICIES["country"].max_staleness == 3660.0


def test_settings_from_env() -> None:
    s = Settings.from_env({"REDIS_URL": "redis://x:1/0", "CACHE_KEY_PREFIX": "p:",
                           "NODE_NAME": "n", "ACK_TIMEOUT": "0.5"})
    assert (s.redis_url, s.key_prefix, s.node_name, s.ack_timeout) == (
        "redis://x:1/0", "p:", "n", 0.5)
    assert Settings.from_env({}).database_url == "sqlite+aiosqlite:///./catalog.db"
    with pytest.raises(ValueError, match="ACK_TIMEOUT"):
        Settings.from_env({"ACK_TIMEOUT": "soon"})


