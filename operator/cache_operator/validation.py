"""Validation and compilation of CacheInvalidationPolicy documents.

One code path for the operator's handlers and the ``apply``/``validate``
commands, so both accept and reject exactly the same documents, and the same
ones the API server accepts:

1. the document against the CRD's own ``openAPIV3Schema`` (jsonschema), read
   from the copy of the CRD shipped in this package (``crd/``; the chart's
   ``crds/`` file is the source, and a test checks the copy is identical), plus
   the unknown-field check ``kubectl apply`` makes (strict field validation);
2. then the cross-field rules, once, in the library: ``Policy.from_spec``
   (:mod:`hybridcache.policy`), which the CRD's CEL rules state too (a
   property test checks that both accept the same specs).

Every error is a :class:`PolicyError` whose message starts with the path of
the offending field (``spec.tags[1]: ...``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any, Final

import jsonschema
import yaml
from hybridcache import policy as contract
from hybridcache.policy import Policy

from .documents import DocumentError, load_all

GROUP: Final = "caching.hybridcache.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "CacheInvalidationPolicy"
PLURAL: Final = "cacheinvalidationpolicies"
SHORT_NAME: Final = "cip"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"
# The packaged copy of helm/hybrid-catalog/crds/cacheinvalidationpolicies.yaml
# (``make operator-crd-sync`` refreshes it; tests/operator/test_crd.py checks it).
CRD_RESOURCE: Final = "crd/cacheinvalidationpolicies.yaml"
MAX_TAGS: Final = contract.MAX_TAGS
# metadata.name of a custom resource: a DNS-1123 subdomain.
NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_NAME = re.compile(NAME_PATTERN)
NAMESPACE_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_NAMESPACE = re.compile(NAMESPACE_PATTERN)
DEFAULT_NAMESPACE: Final = "default"

# What a pattern in the schema means, in the library's words.
_PATTERN_HINTS: Final = {
    contract.DURATION_PATTERN: contract.DURATION_HINT,
    contract.TAG_TEMPLATE_PATTERN: contract.TAG_TEMPLATE_HINT,
    contract.DATA_TYPE_PATTERN: contract.DATA_TYPE_HINT,
}


class PolicyError(ValueError):
    """A document that is not a valid CacheInvalidationPolicy.

    ``field`` is the path of the offending field (``spec.localExpiration``),
    ``reason`` a short CamelCase word for Kubernetes conditions and events.
    """

    def __init__(self, field: str, message: str, *, reason: str = "InvalidSpec") -> None:
        self.field = field
        self.detail = message
        self.reason = reason
        super().__init__(f"{field}: {message}")


@lru_cache(maxsize=1)
def crd() -> dict[str, Any]:
    """The CustomResourceDefinition this package ships."""
    text = files("cache_operator").joinpath(CRD_RESOURCE).read_text(encoding="utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the served version."""
    version = next(v for v in crd()["spec"]["versions"] if v["name"] == VERSION)
    found: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return found


@lru_cache(maxsize=1)
def _spec_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(schema()["properties"]["spec"])


def check_schema(spec: Any) -> None:
    """The CRD's structural schema for ``spec``: types, patterns, lengths,
    enums, and no unknown field. Raises PolicyError for the first problem
    (in field order)."""
    if not isinstance(spec, Mapping):
        raise PolicyError("spec", "must be a mapping")
    spec_schema = schema()["properties"]["spec"]
    unknown = sorted(set(spec) - set(spec_schema["properties"]))
    if unknown:
        raise PolicyError(f"spec.{unknown[0]}", "unknown field")
    errors = sorted(_spec_validator().iter_errors(dict(spec)),
                    key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise _describe(errors[0])


def _describe(error: jsonschema.ValidationError) -> PolicyError:
    path = "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                            for p in error.absolute_path)
    value: Any = error.instance
    limit: Any = error.validator_value
    keyword = error.validator
    if keyword == "required":
        return PolicyError(f"{path}.{error.message.split(chr(39))[1]}", "required")
    if keyword == "type":
        return PolicyError(path, f"must be of type {limit}, got {value!r}")
    if keyword == "enum":
        return PolicyError(path, f"{value!r} must be one of {', '.join(map(str, limit))}")
    if keyword == "maxLength":
        shown = repr(value[:40]) + ("..." if len(value) > 40 else "")
        return PolicyError(path, f"{shown} is {len(value)} characters; at most {limit}")
    if keyword == "minLength":
        return PolicyError(path, "must not be empty")
    if keyword == "minItems":
        return PolicyError(path, "must not be empty (omit it for the default)")
    if keyword == "maxItems":
        return PolicyError(path, f"at most {limit} items, got {len(value)}")
    if keyword == "pattern":
        hint = _PATTERN_HINTS.get(str(limit), f"does not match {limit}")
        return PolicyError(path, f"{value!r} {hint}")
    return PolicyError(path, error.message)


def compile_spec(spec: Any, *, generation: int = 0, source: str = "default") -> Policy:
    """Check a ``spec`` against the CRD's schema, then compile it with the
    library's rules (the cross-field ones included). Raises PolicyError
    naming the field."""
    check_schema(spec)
    try:
        return Policy.from_spec(spec, generation=generation, source=source)
    except contract.PolicyError as exc:
        raise PolicyError(exc.field, exc.detail) from None


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """One validated CacheInvalidationPolicy document."""

    namespace: str
    name: str
    spec: dict[str, Any]
    policy: Policy
    index: int  # position in its file (0-based), for messages

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


class PolicyFileError(ValueError):
    """One or more invalid documents in a policy file; ``errors`` lists them all."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


def validate_document(doc: Any, *, index: int = 0, source: str = "default",
                      generation: int | None = None) -> PolicyDocument:
    """Validate one parsed YAML/JSON document (envelope and spec)."""
    if not isinstance(doc, Mapping):
        raise PolicyError("(document)", "must be a mapping (a Kubernetes object)")
    if doc.get("apiVersion") != API_VERSION:
        raise PolicyError("apiVersion", f"must be {API_VERSION}, got {doc.get('apiVersion')!r}")
    if doc.get("kind") != KIND:
        raise PolicyError("kind", f"must be {KIND}, got {doc.get('kind')!r}")
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping):
        raise PolicyError("metadata", "required, a mapping with at least a name")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise PolicyError("metadata.name", "required")
    if len(name) > 253 or _NAME.fullmatch(name) is None:
        raise PolicyError("metadata.name", f"{name!r} must be a DNS-1123 subdomain "
                          "(lower-case letters, digits, '-' and '.')")
    namespace = meta.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or len(namespace) > 63 \
            or _NAMESPACE.fullmatch(namespace) is None:
        raise PolicyError("metadata.namespace", f"{namespace!r} is not a valid namespace name")
    unknown = sorted(set(doc) - {"apiVersion", "kind", "metadata", "spec", "status"})
    if unknown:
        raise PolicyError(unknown[0], "unknown field")
    if "spec" not in doc:
        raise PolicyError("spec", "required")
    gen = generation if generation is not None else meta.get("generation", 0)
    if not isinstance(gen, int) or isinstance(gen, bool) or gen < 0:
        raise PolicyError("metadata.generation", f"must be a non-negative integer, got {gen!r}")
    policy = compile_spec(doc["spec"], generation=gen, source=source)
    return PolicyDocument(namespace, name, dict(doc["spec"]), policy, index)


def _expand(docs: Iterable[Any]) -> list[Any]:
    """Drop empty documents; unfold ``kind: List`` (what ``kubectl get -o yaml`` prints)."""
    out: list[Any] = []
    for doc in docs:
        if doc is None:
            continue
        if isinstance(doc, Mapping) and doc.get("kind") == "List" and "items" in doc:
            items = doc.get("items") or []
            out.extend(items if isinstance(items, list) else [items])
        else:
            out.append(doc)
    return out


def load_policies(text: str, *, source: str = "default") -> list[PolicyDocument]:
    """Parse and validate a multi-document YAML text. All documents are checked;
    if any is invalid, PolicyFileError lists every problem and nothing is returned."""
    try:
        docs = _expand(load_all(text))  # no aliases, bounded size and depth
    except DocumentError as exc:
        raise PolicyFileError([str(exc)]) from None
    errors: list[str] = []
    valid: list[PolicyDocument] = []
    owners: dict[tuple[str, str], PolicyDocument] = {}
    for i, doc in enumerate(docs):
        label = _label(doc, i)
        try:
            pd = validate_document(doc, index=i, source=source)
        except PolicyError as exc:
            errors.append(f"{label}: {exc}")
            continue
        key = (pd.namespace, pd.policy.data_type)
        first = owners.get(key)
        if first is not None:
            errors.append(
                f"{label}: spec.dataType: {pd.policy.data_type!r} is already governed by "
                f"{first.ref} (document {first.index + 1}); one policy per data type and namespace"
            )
            continue
        owners[key] = pd
        valid.append(pd)
    if not docs:
        errors.append("no CacheInvalidationPolicy documents found")
    if errors:
        raise PolicyFileError(errors)
    return valid


def _label(doc: Any, index: int) -> str:
    name = None
    if isinstance(doc, Mapping) and isinstance(doc.get("metadata"), Mapping):
        name = doc["metadata"].get("name")
    return f"document {index + 1}" + (f" ({name})" if isinstance(name, str) else "")
