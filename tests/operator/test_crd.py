"""The CRD itself (kmock enforces no schema): shape, printer columns, the
openAPIV3Schema (jsonschema) and the CEL rules (cel-python) against every
example and a set of invalid documents, agreement with the operator's own
validation (the packaged CRD's schema, then ``Policy.from_spec``: what the
handlers and ``apply`` use), and the packaged copy of the CRD."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cache_operator.validation import (
    API_VERSION,
    CRD_NAME,
    GROUP,
    KIND,
    MAX_TAGS,
    PLURAL,
    SHORT_NAME,
    VERSION,
    PolicyError,
    compile_spec,
    crd,
    load_policies,
)
from hybridcache.policy import (
    CONSISTENCIES,
    DATA_TYPE_PATTERN,
    DURATION_PATTERN,
    MAX_DATA_TYPE_LENGTH,
    MAX_DURATION,
    MAX_DURATION_LENGTH,
    MAX_TAG_LENGTH,
    SPEC_FIELDS,
    STRATEGIES,
    TAG_TEMPLATE_PATTERN,
    Policy,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.operator.crd_tools import (
    CRD_PATH,
    EXAMPLES,
    PACKAGED_CRD_PATH,
    CrdValidator,
    load_crd,
)

CRD = load_crd()
V = CrdValidator(CRD, VERSION)
SPEC = V.schema["properties"]["spec"]
EXAMPLE_DOCS = [d for d in yaml.safe_load_all(EXAMPLES.read_text()) if d]


def doc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "p", "namespace": "default"}, "spec": spec}


def test_crd_is_a_valid_kubernetes_object() -> None:
    assert kubernetes_validate.validate(CRD, "1.33", strict=True)
    assert CRD_PATH.read_text().count("\n---") == 0


def test_crd_names_scope_version_status() -> None:
    assert CRD["metadata"]["name"] == CRD_NAME
    spec = CRD["spec"]
    assert spec["group"] == GROUP and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == KIND and spec["names"]["plural"] == PLURAL
    assert spec["names"]["shortNames"] == [SHORT_NAME]
    [version] = spec["versions"]
    assert version["name"] == VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns_show_what_kubectl_get_needs() -> None:
    columns = {c["name"]: c for c in V.printer_columns}
    expected = {
        "Data Type": ".spec.dataType", "Strategy": ".spec.strategy",
        "Expiration": ".spec.expiration", "In Sync": ".status.replicasInSync",
        "Ready": '.status.conditions[?(@.type=="Ready")].status',
        "Reason": '.status.conditions[?(@.type=="Ready")].reason',
        "Age": ".metadata.creationTimestamp",
    }
    for name, path in expected.items():
        assert columns[name]["jsonPath"] == path
        assert columns[name].get("priority", 0) == 0
    assert columns["Age"]["type"] == "date"


def test_the_operator_ships_the_chart_crd_byte_for_byte() -> None:
    """The chart's file is the source; `make operator-crd-sync` refreshes the copy."""
    assert PACKAGED_CRD_PATH.read_bytes() == CRD_PATH.read_bytes(), (
        "operator/cache_operator/crd/ differs from the chart's CRD: run make operator-crd-sync")
    assert crd() == CRD  # what compile_spec checks against, loaded as package data


def test_schema_mirrors_the_policy_module() -> None:
    props = SPEC["properties"]
    assert tuple(props) == SPEC_FIELDS  # one declaration per field, in the same order
    assert SPEC["required"] == ["dataType"]
    assert props["dataType"]["pattern"] == DATA_TYPE_PATTERN
    assert props["dataType"]["maxLength"] == MAX_DATA_TYPE_LENGTH
    assert props["tags"]["items"]["pattern"] == TAG_TEMPLATE_PATTERN
    assert props["tags"]["items"]["maxLength"] == MAX_TAG_LENGTH
    assert props["tags"]["maxItems"] == MAX_TAGS
    assert props["tags"]["x-kubernetes-list-type"] == "set"
    assert props["invalidates"]["items"] == props["tags"]["items"]  # same grammar
    assert props["invalidates"]["maxItems"] == MAX_TAGS
    assert props["invalidates"]["minItems"] == 1
    assert props["invalidates"]["x-kubernetes-list-type"] == "set"
    for name in ("expiration", "localExpiration", "maxStaleness"):
        assert props[name]["pattern"] == DURATION_PATTERN
        assert props[name]["maxLength"] == MAX_DURATION_LENGTH
        rules = [r["rule"] for r in props[name]["x-kubernetes-validations"]]
        assert f"duration(self) <= duration('{MAX_DURATION}')" in rules
    assert tuple(props["strategy"]["enum"]) == STRATEGIES
    assert tuple(props["consistency"]["enum"]) == CONSISTENCIES
    # the CRD's defaults compile to the library's defaults (Policy.from_spec)
    defaults = {k: v["default"] for k, v in props.items() if "default" in v}
    assert defaults == {"strategy": "active", "expiration": "10m",
                        "consistency": "eventual", "maxStaleness": "1s"}
    assert Policy.from_spec({"dataType": "x", "tags": ["a"], **defaults}) == \
        Policy.from_spec({"dataType": "x", "tags": ["a"]})


@pytest.mark.parametrize("example", EXAMPLE_DOCS, ids=lambda d: d["metadata"]["name"])
def test_every_example_is_valid(example: dict[str, Any]) -> None:
    defaulted, errors = V.admit(example)
    assert errors == []
    compile_spec(defaulted["spec"])  # the operator agrees


def test_examples_cover_the_catalog_data_types() -> None:
    specs = {d["spec"]["dataType"]: d["spec"] for d in EXAMPLE_DOCS}
    assert {k: v["strategy"] for k, v in specs.items()} == {
        "price": "active", "stock": "active", "product": "active",
        "country": "ttl", "category": "ttl"}
    # a price or stock write invalidates its own entry; the product's tag is carried
    for data_type in ("price", "stock"):
        assert specs[data_type]["tags"] == [f"{data_type}:{{id}}", "product:{id}"]
        assert specs[data_type]["invalidates"] == [f"{data_type}:{{id}}"]
    assert "category:{category_id}" in specs["product"]["tags"]
    # a write invalidates the entity's own tag, never the broad "products"
    assert specs["product"].get("invalidates", specs["product"]["tags"][:1]) == ["product:{id}"]
    assert specs["country"]["expiration"] == "1h" and specs["category"]["expiration"] == "10m"
    docs = load_policies(EXAMPLES.read_text())
    assert [d.policy.data_type for d in docs] == list(specs)


# (spec, expected API server error, field the operator names)
INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({"strategy": "active"}, "spec.dataType: Required value",
     "spec.dataType"),
    ({"dataType": "Price", "tags": ["product:{id}"]}, "spec.dataType: Invalid value: 'Price'",
     "spec.dataType"),
    ({"dataType": "price", "strategy": "lru", "tags": ["a"]},
     "spec.strategy: Invalid value: 'lru' is not one of ['active', 'ttl']", "spec.strategy"),
    ({"dataType": "price", "tags": ["a"], "expiration": "10 minutes"},
     "spec.expiration: Invalid value: '10 minutes' does not match", "spec.expiration"),
    ({"dataType": "price", "tags": ["a"], "expiration": "1d"},
     "spec.expiration: Invalid value: '1d' does not match", "spec.expiration"),
    ({"dataType": "price", "tags": ["a"], "expiration": 600},
     "spec.expiration: Invalid value: 600 is not of type 'string'", "spec.expiration"),
    ({"dataType": "price", "tags": ["a"], "expiration": "0s"},
     "spec.expiration: Invalid value: expiration must be greater than zero", "spec.expiration"),
    ({"dataType": "price", "tags": ["a"], "expiration": "10s", "localExpiration": "30s"},
     "spec.localExpiration: Invalid value: localExpiration must not be longer than expiration",
     "spec.localExpiration"),
    ({"dataType": "price", "tags": ["a"], "localExpiration": "0ms"},
     "spec.localExpiration: Invalid value: localExpiration must be greater than zero",
     "spec.localExpiration"),
    ({"dataType": "price", "strategy": "active"},
     "spec.tags: Required value: tags are required (at least one) when strategy is active",
     "spec.tags"),
    ({"dataType": "price", "tags": []},
     "spec.tags: Required value: tags are required (at least one) when strategy is active",
     "spec.tags"),
    ({"dataType": "country", "strategy": "ttl", "tags": ["country:{id}"]},
     "spec.tags: Forbidden: tags are not allowed when strategy is ttl", "spec.tags"),
    ({"dataType": "country", "strategy": "ttl", "consistency": "acknowledged"},
     "spec.consistency: Invalid value: consistency acknowledged requires strategy active",
     "spec.consistency"),
    ({"dataType": "price", "tags": ["a"], "consistency": "strong"},
     "spec.consistency: Invalid value: 'strong' is not one of", "spec.consistency"),
    ({"dataType": "price", "tags": ["product:{id"]},
     "spec.tags[0]: Invalid value: 'product:{id' does not match", "spec.tags[0]"),
    ({"dataType": "price", "tags": ["product:{id}", "all *"]},
     "spec.tags[1]: Invalid value: 'all *' does not match", "spec.tags[1]"),
    ({"dataType": "price", "tags": ["product:{1d}"]},
     "spec.tags[0]: Invalid value: 'product:{1d}' does not match", "spec.tags[0]"),
    ({"dataType": "price", "tags": ["product:{id}", "product:{id}"]},
     "spec.tags[1]: Duplicate value: 'product:{id}'", "spec.tags[1]"),
    ({"dataType": "price", "tags": [f"t{i}" for i in range(65)]},
     "spec.tags: Invalid value:", "spec.tags"),
    ({"dataType": "price", "tags": ["a"], "invalidates": ["b"]},
     "spec.invalidates: Invalid value: every invalidates template must be one of tags",
     "spec.invalidates[0]"),
    ({"dataType": "price", "tags": ["a"], "invalidates": []},
     "spec.invalidates: Invalid value: [] should be non-empty", "spec.invalidates"),
    ({"dataType": "country", "strategy": "ttl", "invalidates": ["a"]},
     "spec.invalidates: Forbidden: invalidates is not allowed when strategy is ttl",
     "spec.invalidates"),
    ({"dataType": "price", "tags": ["a", "b"], "invalidates": ["b", "b"]},
     "spec.invalidates[1]: Duplicate value: 'b'", "spec.invalidates[1]"),
    ({"dataType": "price", "tags": ["a"], "maxStaleness": "soon"},
     "spec.maxStaleness: Invalid value: 'soon' does not match", "spec.maxStaleness"),
    # durations are bounded: at most 32 characters and at most 8760h
    ({"dataType": "price", "tags": ["a"], "expiration": "1" * 400 + "s"},
     "spec.expiration: Invalid value: '111", "spec.expiration"),
    ({"dataType": "price", "tags": ["a"], "expiration": "9" * 30 + "h"},
     "spec.expiration: Invalid value: expiration must be at most 8760h", "spec.expiration"),
    ({"dataType": "price", "tags": ["a"], "expiration": "8761h", "localExpiration": "1m"},
     "spec.expiration: Invalid value: expiration must be at most 8760h", "spec.expiration"),
    ({"dataType": "price", "tags": ["a"], "localExpiration": "2562048h"},
     "spec.localExpiration: Invalid value: localExpiration must be at most 8760h",
     "spec.localExpiration"),
    ({"dataType": "price", "tags": ["a"], "maxStaleness": "8760h1ms"},
     "spec.maxStaleness: Invalid value: maxStaleness must be at most 8760h",
     "spec.maxStaleness"),
]


@pytest.mark.parametrize(("spec", "api_error", "field"), INVALID,
                         ids=[e[1].split(":")[0] + f"-{i}" for i, e in enumerate(INVALID)])
def test_invalid_documents_are_rejected_with_the_field(
        spec: dict[str, Any], api_error: str, field: str) -> None:
    _, errors = V.admit(doc(**spec))
    assert any(e.startswith(api_error) for e in errors), errors
    with pytest.raises(PolicyError) as info:
        compile_spec(spec)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(f"{field}: ")


def test_data_type_is_immutable() -> None:
    old = V.default(doc(dataType="price", tags=["a"]))
    new = V.default(doc(dataType="stock", tags=["a"]))
    assert V.validate(new, old) == [
        "spec.dataType: Invalid value: dataType is immutable; create a new policy instead"]
    assert V.validate(old, old) == []


def test_status_schema_accepts_what_the_operator_writes() -> None:
    obj = V.default(doc(dataType="price", tags=["a"]))
    obj["status"] = {
        "observedGeneration": 2, "appliedReplicas": 3, "totalReplicas": 3,
        "replicasInSync": "3/3",
        "conditions": [
            {"type": "Applied", "status": "True", "reason": "Published", "message": "m",
             "observedGeneration": 2, "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Ready", "status": "True", "reason": "InSync", "message": "m",
             "observedGeneration": 2, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    assert V.validate(obj) == []
    obj["status"]["conditions"].append(dict(obj["status"]["conditions"][0]))
    assert any("Duplicate value" in e for e in V.validate(obj))


# ---------------------------------------------------------------------------
# The CRD (schema + CEL) and the operator accept exactly the same specs.

DURATIONS = st.sampled_from(["0s", "500ms", "10s", "30s", "10m", "1h", "1h30m", "1.5h",
                             "90m", "1d", "10", "abc", "8760h", "525600m", "8760h1ms",
                             "8761h", "9" * 30 + "h", "1" * 33 + "s", "1" * 400 + "s"])
TAGS = st.lists(st.sampled_from(["product:{id}", "category:{category_id}", "products",
                                 "{x", "a b", "*", "x:{1}", "p:{id}:{lang}", "t" * 257,
                                 "{name}", "{id}:x"]),
                max_size=4) | st.integers(63, 66).map(lambda n: [f"t{i}" for i in range(n)])

INVALIDATES = st.lists(st.sampled_from(["product:{id}", "products", "{x", "other:{id}"]),
                       max_size=3)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"dataType": draw(st.sampled_from(
        ["price", "stock", "a-b", "Price", "1x", "", "x" * 64]))}
    optional = {
        "strategy": st.sampled_from(["active", "ttl", "lru"]),
        "expiration": DURATIONS, "localExpiration": DURATIONS, "maxStaleness": DURATIONS,
        "tags": TAGS, "consistency": st.sampled_from(["eventual", "acknowledged", "strong"]),
        "invalidates": INVALIDATES,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            spec[name] = draw(strategy)
    return spec


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_crd_and_operator_agree(spec: dict[str, Any]) -> None:
    defaulted, errors = V.admit(doc(**copy.deepcopy(spec)))
    try:
        compile_spec(spec)
        operator_ok = True
    except PolicyError:
        operator_ok = False
    assert (errors == []) == operator_ok, (spec, errors)
    if operator_ok:  # and the API server's defaults compile to the same policy
        assert compile_spec(defaulted["spec"]) == compile_spec(spec)
