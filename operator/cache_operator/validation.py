"""Validation and compilation of CacheInvalidationPolicy documents.

One code path for the operator's handlers and the ``apply`` command, so both
accept and reject exactly the same documents. It layers, on top of
``hybridcache.protocol`` (the library's own rules, which the CRD's CEL rules
mirror), the checks that the CRD's ``openAPIV3Schema`` makes in a cluster:
types, the duration syntax the API server can compare (``ms``, ``s``, ``m``,
``h``; the library also knows ``d``, Kubernetes' CEL ``duration()`` does not),
and the document's envelope (apiVersion, kind, metadata).

Every error is a :class:`PolicyError` whose message starts with the path of
the offending field (``spec.tags[1]: ...``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml
from hybridcache.protocol import DURATION_PATTERN, Policy, policy_from_spec

GROUP: Final = "caching.hybridcache.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "CacheInvalidationPolicy"
PLURAL: Final = "cacheinvalidationpolicies"
SHORT_NAME: Final = "cip"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# Go's time.ParseDuration units: what CEL's duration() in the API server parses
# (the protocol module's pattern, so the library and the CRD agree).
CRD_DURATION_PATTERN: Final = DURATION_PATTERN
_CRD_DURATION = re.compile(CRD_DURATION_PATTERN)
DURATION_FIELDS: Final = ("expiration", "localExpiration", "maxStaleness")
STRING_FIELDS: Final = ("dataType", "strategy", "consistency")
MAX_TAGS: Final = 64
# metadata.name of a custom resource: a DNS-1123 subdomain.
NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_NAME = re.compile(NAME_PATTERN)
NAMESPACE_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_NAMESPACE = re.compile(NAMESPACE_PATTERN)
DEFAULT_NAMESPACE: Final = "default"


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

    @classmethod
    def from_value_error(cls, exc: ValueError) -> PolicyError:
        """Wrap a protocol ValueError ("spec.tags[0]: ...") keeping its field path."""
        text = str(exc)
        head, sep, rest = text.partition(": ")
        if sep and " " not in head:
            return cls(head, rest)
        return cls("spec", text)


def compile_spec(spec: Any, *, generation: int = 0, source: str = "default") -> Policy:
    """Check a ``spec`` as the CRD schema would, then compile it with the
    library's own rules. Raises PolicyError naming the field."""
    if not isinstance(spec, Mapping):
        raise PolicyError("spec", "must be a mapping")
    if "dataType" not in spec:
        raise PolicyError("spec.dataType", "required")
    for name in STRING_FIELDS:
        if name in spec and not isinstance(spec[name], str):
            raise PolicyError(f"spec.{name}", f"must be a string, got {spec[name]!r}")
    for name in DURATION_FIELDS:
        if name not in spec:
            continue
        value = spec[name]
        if not isinstance(value, str) or _CRD_DURATION.fullmatch(value) is None:
            raise PolicyError(
                f"spec.{name}",
                f"{value!r} is not a duration (use e.g. 500ms, 30s, 10m, 1h, 1h30m)",
            )
    tags = spec.get("tags", [])
    if not isinstance(tags, list):
        raise PolicyError("spec.tags", "must be a list of strings")
    if len(tags) > MAX_TAGS:
        raise PolicyError("spec.tags", f"at most {MAX_TAGS} tag templates, got {len(tags)}")
    for i, tag in enumerate(tags):
        if not isinstance(tag, str):
            raise PolicyError(f"spec.tags[{i}]", f"must be a string, got {tag!r}")
    if "generation" in spec or "source" in spec:
        bad = "generation" if "generation" in spec else "source"
        raise PolicyError(f"spec.{bad}", "unknown field")
    try:
        return policy_from_spec(dict(spec), generation=generation, source=source)
    except ValueError as exc:
        raise PolicyError.from_value_error(exc) from None


def spec_fingerprint(policy: Policy) -> tuple[Any, ...]:
    """What makes two compiled policies different, ignoring generation and source."""
    return (policy.data_type, policy.strategy, policy.expiration, policy.local_expiration,
            policy.tags, policy.consistency, policy.max_staleness)


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
        docs = _expand(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise PolicyFileError([f"YAML: {exc}"]) from None
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
