"""cache_operator.validation, status and config: pure functions."""

from __future__ import annotations

import pytest
from cache_operator.config import Config, ConfigError
from cache_operator.fleet import in_sync, p99
from cache_operator.status import find_condition, with_condition
from cache_operator.validation import (
    PolicyError,
    PolicyFileError,
    compile_spec,
    load_policies,
    validate_document,
)
from hybridcache import policy as contract
from hybridcache.policy import Policy

HEAD = "apiVersion: caching.hybridcache.io/v1alpha1\nkind: CacheInvalidationPolicy\n"


def test_compile_spec_gives_the_library_policy() -> None:
    policy = compile_spec({"dataType": "product", "strategy": "active", "expiration": "30m",
                           "localExpiration": "1m", "tags": ["product:{id}", "products"],
                           "consistency": "acknowledged", "maxStaleness": "500ms"},
                          generation=4, source="shop/product")
    assert policy == Policy("product", "active", 1800.0, 60.0, ("product:{id}", "products"),
                            "acknowledged", 0.5, 4, "shop/product")


def test_defaults_match_the_library() -> None:
    policy = compile_spec({"dataType": "country", "strategy": "ttl", "expiration": "10s"})
    assert (policy.local_expiration, policy.consistency, policy.max_staleness) == (10.0,
                                                                                   "eventual", 1.0)


@pytest.mark.parametrize(("spec", "field"), [
    ("not a mapping", "spec"),
    ({"dataType": 5}, "spec.dataType"),
    ({"dataType": "price", "tags": "product:{id}"}, "spec.tags"),
    ({"dataType": "price", "tags": [1]}, "spec.tags[0]"),
    ({"dataType": "price", "tags": ["a"], "ttl": "1m"}, "spec.ttl"),
    ({"dataType": "price", "tags": ["a"], "generation": 3}, "spec.generation"),
    ({"dataType": "price", "tags": ["a"], "strategy": None}, "spec.strategy"),
])
def test_errors_name_the_field(spec: object, field: str) -> None:
    with pytest.raises(PolicyError) as info:
        compile_spec(spec)
    assert info.value.field == field


@pytest.mark.parametrize(("spec", "message"), [
    ({"dataType": "price", "tags": ["a"], "expiration": 600},
     "spec.expiration: must be of type string, got 600"),
    ({"dataType": "price", "tags": ["a"], "strategy": "lru"},
     "spec.strategy: 'lru' must be one of active, ttl"),
    ({"dataType": "price", "tags": ["a"], "expiration": "10 minutes"},
     "spec.expiration: '10 minutes' is not a duration (use e.g. 500ms, 30s, 10m, 1h, 1h30m)"),
    ({"dataType": "price", "tags": ["a"], "maxStaleness": "1" * 33 + "s"},
     "spec.maxStaleness: '" + "1" * 33 + "s' is 34 characters; at most 32"),
    ({"dataType": "price", "tags": ["a b"]},
     "spec.tags[0]: 'a b' is not a tag template"),
    ({"dataType": "price", "tags": [""]}, "spec.tags[0]: must not be empty"),
    ({"dataType": "price", "tags": ["a"], "invalidates": []},
     "spec.invalidates: must not be empty (omit it for the default)"),
    ({"dataType": "price", "tags": ["a"], "invalidates": ["a {b}"]},
     "spec.invalidates[0]: 'a {b}' is not a tag template"),
])
def test_schema_errors_are_worded_for_people(spec: dict[str, object], message: str) -> None:
    """The CRD's schema (jsonschema) finds these, in the library's words."""
    with pytest.raises(PolicyError) as info:
        compile_spec(spec)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize("spec", [
    {"dataType": "price", "tags": ["a"], "expiration": "1m", "localExpiration": "2m"},
    {"dataType": "price", "strategy": "ttl", "tags": ["a"]},
    {"dataType": "price", "tags": ["a"], "expiration": "8761h"},
    {"dataType": "price", "tags": ["a", "a"]},
    {"dataType": "price", "tags": ["a"], "invalidates": ["b"]},
    {"dataType": "price", "strategy": "ttl", "invalidates": ["a"]},
])
def test_rules_past_the_schema_are_the_librarys(spec: dict[str, object]) -> None:
    """What the schema cannot state (CEL in the CRD) is checked once, by
    Policy.from_spec: the operator reports exactly the library's error."""
    with pytest.raises(contract.PolicyError) as library:
        Policy.from_spec(spec)
    with pytest.raises(PolicyError) as operator:
        compile_spec(spec)
    assert (operator.value.field, operator.value.detail) == (library.value.field,
                                                             library.value.detail)


@pytest.mark.parametrize(("doc", "field"), [
    ({"apiVersion": "v1", "kind": "CacheInvalidationPolicy"}, "apiVersion"),
    ({"apiVersion": "caching.hybridcache.io/v1alpha1", "kind": "Policy"}, "kind"),
    ({"apiVersion": "caching.hybridcache.io/v1alpha1", "kind": "CacheInvalidationPolicy"},
     "metadata"),
    ({"apiVersion": "caching.hybridcache.io/v1alpha1", "kind": "CacheInvalidationPolicy",
      "metadata": {"name": "Bad_Name"}, "spec": {}}, "metadata.name"),
    ({"apiVersion": "caching.hybridcache.io/v1alpha1", "kind": "CacheInvalidationPolicy",
      "metadata": {"name": "p", "namespace": "Team A"}, "spec": {}}, "metadata.namespace"),
    ({"apiVersion": "caching.hybridcache.io/v1alpha1", "kind": "CacheInvalidationPolicy",
      "metadata": {"name": "p"}}, "spec"),
    ({"apiVersion": "caching.hybridcache.io/v1alpha1", "kind": "CacheInvalidationPolicy",
      "metadata": {"name": "p"}, "spec": {}, "data": 1}, "data"),
])
def test_document_envelope(doc: dict[str, object], field: str) -> None:
    with pytest.raises(PolicyError) as info:
        validate_document(doc)
    assert info.value.field == field


def test_load_policies_reports_every_bad_document_and_returns_nothing() -> None:
    text = (HEAD + "metadata: {name: price}\nspec: {dataType: price, tags: ['product:{id}']}\n"
            "---\n" + HEAD + "metadata: {name: country}\n"
            "spec: {dataType: country, strategy: ttl, tags: [x]}\n"
            "---\n" + HEAD + "metadata: {name: price2}\nspec: {dataType: price, tags: [a]}\n"
            "---\n# only a comment\n")
    with pytest.raises(PolicyFileError) as info:
        load_policies(text)
    assert info.value.errors == [
        "document 2 (country): spec.tags: not allowed when strategy is ttl (entries only expire)",
        "document 3 (price2): spec.dataType: 'price' is already governed by default/price "
        "(document 1); one policy per data type and namespace",
    ]


def test_load_policies_accepts_lists_and_namespaces() -> None:
    text = ("apiVersion: v1\nkind: List\nitems:\n"
            "- {apiVersion: caching.hybridcache.io/v1alpha1, kind: CacheInvalidationPolicy,"
            " metadata: {name: price, namespace: a}, spec: {dataType: price, tags: [x]}}\n"
            "- {apiVersion: caching.hybridcache.io/v1alpha1, kind: CacheInvalidationPolicy,"
            " metadata: {name: price, namespace: b}, spec: {dataType: price, tags: [x]}}\n")
    docs = load_policies(text, source="cli:x.yaml")
    assert [d.ref for d in docs] == ["a/price", "b/price"]
    assert docs[0].policy.source == "cli:x.yaml"


@pytest.mark.parametrize("text", ["", "---\n", "a: [unclosed\n"])
def test_load_policies_rejects_empty_and_broken_yaml(text: str) -> None:
    with pytest.raises(PolicyFileError):
        load_policies(text)


def test_with_condition_keeps_transition_time_until_status_changes() -> None:
    conds = with_condition([], "Ready", False, "Waiting", "1/2", 1, now="t1")
    conds = with_condition(conds, "Applied", True, "Published", "ok", 1, now="t1")
    assert [c["type"] for c in conds] == ["Applied", "Ready"]
    conds = with_condition(conds, "Ready", False, "Waiting", "0/2", 2, now="t2")
    assert find_condition({"conditions": conds}, "Ready")["lastTransitionTime"] == "t1"
    conds = with_condition(conds, "Ready", True, "InSync", "2/2", 2, now="t3")
    ready = find_condition({"conditions": conds}, "Ready")
    assert ready == {"type": "Ready", "status": "True", "reason": "InSync", "message": "2/2",
                     "observedGeneration": 2, "lastTransitionTime": "t3"}


def test_p99_and_in_sync() -> None:
    assert p99([]) is None
    assert p99([0.5]) == 0.5
    assert p99(range(1, 101)) == 99
    assert p99([1.0] * 99 + [10.0] * 2) == 10.0
    assert in_sync(["a", "b"], {"a": 3, "b": 2}, 3) == 1
    assert in_sync(["a", "b"], {"a": 4, "b": 3}, 3) == 2


def test_config_from_env() -> None:
    config = Config.from_env({"REDIS_URL": "redis://r:6379/1", "CACHE_KEY_PREFIX": "x:",
                              "WATCH_NAMESPACE": "shop, staging,", "PROBE_INTERVAL": "2.5",
                              "METRICS_PORT": "0"})
    assert config.redis_url == "redis://r:6379/1" and config.key_prefix == "x:"
    assert config.namespaces == ("shop", "staging") and not config.clusterwide
    assert config.probe_interval == 2.5 and config.metrics_port == 0
    assert config.liveness_endpoint == "http://0.0.0.0:8080/healthz"
    default = Config.from_env({})
    assert default.clusterwide and default.key_prefix == "hc:" and default.metrics_port == 9100
    assert default.probe_interval == 10.0
    with pytest.raises(ConfigError, match="PROBE_INTERVAL"):
        Config.from_env({"PROBE_INTERVAL": "soon"})
    with pytest.raises(ConfigError, match="METRICS_PORT"):
        Config.from_env({"METRICS_PORT": "99999"})
