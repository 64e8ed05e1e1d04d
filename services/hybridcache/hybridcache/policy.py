"""The CacheInvalidationPolicy model: one contract for the operator, the
replicas and the services that use the cache.

A policy says how entries of one data type are cached: ``active`` (writes
invalidate them by tag on every replica) or ``ttl`` (they only expire), their
lifetimes, the tag templates they carry (``tags``: what may invalidate an
entry), the tag templates a write of the data type invalidates
(``invalidates``: what the write changed), and the consistency of
invalidations.

``tags`` and ``invalidates`` are apart on purpose: an entry carries a broad tag
(``products``) so that everything of its type can be flushed at once, but an
ordinary write must not remove it, or one rename empties every replica's
cache of that type. ``invalidates`` defaults to the first template of
``tags`` (by convention the entity's own tag, ``product:{id}``); it must be a
subset of ``tags``, because a tag no entry carries invalidates nothing.

It enters the system two ways, and each has its own door:

- :meth:`Policy.from_spec` takes user input (a CacheInvalidationPolicy
  ``spec``, with the CRD's field names and duration strings) and checks every
  rule: the field rules the CRD's ``openAPIV3Schema`` states and the
  cross-field rules its CEL ``x-kubernetes-validations`` state. Errors are
  :class:`PolicyError` naming the field (``spec.tags[3]: ...``).
- :meth:`Policy.from_wire` takes what the operator stored in Redis
  (:meth:`Policy.to_dict`). It was validated when it was written, so this door
  checks only what a replica needs to serve with it safely (types and bounds)
  and ignores fields it does not know, so an older replica keeps working with a
  policy written by a newer operator. It raises :class:`PolicyRejected` with a
  short reason for the ``hybridcache_policy_rejected_total`` metric.

Each field is declared once, in :class:`Policy`, with its spec name and kind
(the ``metadata`` of the dataclass field): the two doors, :meth:`Policy.to_dict`
and the checks all follow from that declaration, so adding a field is one line
here (plus the CRD schema, which a test compares with these declarations).

Standard library and orjson only, so that ``cache_operator`` can import it without the
cache itself.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import quote

import orjson

from .validation import check_tag

if TYPE_CHECKING:
    from .options import EntryOptions

Strategy = Literal["active", "ttl"]
Consistency = Literal["eventual", "acknowledged"]
STRATEGIES: Final = ("active", "ttl")
CONSISTENCIES: Final = ("eventual", "acknowledged")

# Limits. The CRD states the same ones (tests/operator/test_crd.py compares them).
MAX_TAGS: Final = 64  # also hybridcache's CacheOptions.maximum_tags_per_entry default
MAX_TAG_LENGTH: Final = 256  # also CacheOptions.maximum_tag_length's default
MAX_DURATION_LENGTH: Final = 32
MAX_DURATION: Final = "8760h"  # one year: far beyond any useful cache lifetime
MAX_DURATION_SECONDS: Final = 8760 * 3600.0
MAX_DATA_TYPE_LENGTH: Final = 63

# Go's time.ParseDuration units (what Kubernetes' CEL duration() parses), so a
# policy valid here is valid in the CRD and the other way round: no "d".
DURATION_PATTERN: Final = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION = re.compile(DURATION_PATTERN)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# A tag template: literal text first (so a rendered tag always starts with the
# template's own prefix, e.g. "product:"), then {placeholders} naming fields of
# the record. Field values are escaped when rendered (``tag_value``), so a value
# can never supply a ':' and name another entity's tag.
TAG_TEMPLATE_PATTERN: Final = r"^[^{}\s*]+(\{[A-Za-z_][A-Za-z0-9_]*\}[^{}\s*]*)*$"
_TAG_TEMPLATE = re.compile(TAG_TEMPLATE_PATTERN)
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DATA_TYPE_PATTERN: Final = r"^[a-z][a-z0-9-]{0,62}$"
_DATA_TYPE = re.compile(DATA_TYPE_PATTERN)
log = logging.getLogger("hybridcache.policy")

# How the rules are worded (the operator uses the same words for schema errors).
DURATION_HINT: Final = "is not a duration (use e.g. 500ms, 30s, 10m, 1h, 1h30m)"
TAG_TEMPLATE_HINT: Final = ("is not a tag template (literal text first, then {field}"
                            " placeholders; no '*', spaces or unbalanced braces)")
DATA_TYPE_HINT: Final = (f"must be lower-case letters, digits and '-', starting with a letter,"
                         f" at most {MAX_DATA_TYPE_LENGTH} characters")

# Default lifetime in L1 when a spec names none: the shorter of this and expiration.
DEFAULT_LOCAL_EXPIRATION: Final = 30.0


class PolicyError(ValueError):
    """User input that is not a valid policy. ``field`` is the path of the
    offending field (``spec.localExpiration``); the message starts with it."""

    def __init__(self, field: str, detail: str) -> None:
        self.field = field
        self.detail = detail
        super().__init__(f"{field}: {detail}")


class PolicyRejected(ValueError):
    """A stored or published policy this replica cannot use. ``reason`` is one
    of ``not_json``, ``malformed``, ``out_of_bounds``, ``data_type_mismatch``
    (the label of ``hybridcache_policy_rejected_total``)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(detail)


# --------------------------------------------------------------------- fields

Kind = Literal["name", "enum", "duration", "tags"]


def _spec(name: str, kind: Kind, *, choices: tuple[str, ...] = (),
          positive: bool = False) -> dict[str, Any]:
    """Field metadata: its name in the CRD spec and on the wire, and its kind."""
    return {"spec": name, "kind": kind, "choices": choices, "positive": positive}


@dataclass(frozen=True, slots=True)
class Policy:
    """A compiled CacheInvalidationPolicy. Durations are seconds.

    ``generation`` and ``source`` are not part of the spec: the operator sets
    them (the resource's ``metadata.generation`` and ``<namespace>/<name>``).
    Constructing one directly trusts the caller; :meth:`validate` checks it.
    """

    data_type: str = field(metadata=_spec("dataType", "name"))
    strategy: str = field(default="active",
                          metadata=_spec("strategy", "enum", choices=STRATEGIES))
    expiration: float = field(default=600.0,
                              metadata=_spec("expiration", "duration", positive=True))
    local_expiration: float = field(
        default=DEFAULT_LOCAL_EXPIRATION,
        metadata=_spec("localExpiration", "duration", positive=True))
    tags: tuple[str, ...] = field(default=(), metadata=_spec("tags", "tags"))
    consistency: str = field(default="eventual",
                             metadata=_spec("consistency", "enum", choices=CONSISTENCIES))
    max_staleness: float = field(default=1.0, metadata=_spec("maxStaleness", "duration"))
    # Empty means "the default": the first template of ``tags`` (__post_init__).
    # Keyword-only: positional construction (..., max_staleness, generation) keeps working.
    invalidates: tuple[str, ...] = field(default=(), kw_only=True,
                                         metadata=_spec("invalidates", "tags"))
    generation: int = 0
    source: str = "default"  # "default", or "<namespace>/<name>" of the custom resource

    def __post_init__(self) -> None:
        # Resolve the default once, so every door (spec, wire, direct) yields
        # the same policy and to_dict() states what a write invalidates.
        if not self.invalidates and self.strategy == "active" and self.tags \
                and isinstance(self.tags, tuple):
            object.__setattr__(self, "invalidates", self.tags[:1])

    # ---------------------------------------------------------------- doors

    @classmethod
    def from_spec(cls, spec: Any, *, generation: int = 0, source: str = "default") -> Policy:
        """Compile a CacheInvalidationPolicy ``spec`` (user input): every field
        rule and every cross-field rule; PolicyError names the field."""
        if not isinstance(spec, Mapping):
            raise PolicyError("spec", "must be a mapping")
        unknown = sorted(set(spec) - set(SPEC_FIELDS))
        if unknown:
            raise PolicyError(f"spec.{unknown[0]}", "unknown field")
        if "dataType" not in spec:
            raise PolicyError("spec.dataType", "required")
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
            raise PolicyError("metadata.generation",
                              f"must be a non-negative integer, got {generation!r}")
        values: dict[str, Any] = {}
        for f in _SPEC_FIELDS:
            name = f.metadata["spec"]
            if name in spec:
                values[f.name] = _parse_spec(f, spec[name], f"spec.{name}")
        if "localExpiration" not in spec:
            values["local_expiration"] = min(DEFAULT_LOCAL_EXPIRATION,
                                             values.get("expiration", 600.0))
        policy = cls(**values, generation=generation, source=str(source))
        policy.validate()
        return policy

    @classmethod
    def from_wire(cls, raw: bytes | str | Mapping[str, Any], *,
                  data_type: str | None = None) -> Policy:
        """A policy as stored in ``{prefix}policies`` (already validated when
        written): types and bounds only, unknown fields ignored. ``data_type``,
        if given, is the hash field it was stored under and must match."""
        body: Any = raw
        if not isinstance(raw, Mapping):
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise PolicyRejected("not_json", f"policy is not JSON: {exc}") from None
        if not isinstance(body, Mapping):
            raise PolicyRejected("malformed", "policy is not a JSON object")
        values: dict[str, Any] = {}
        for f in _SPEC_FIELDS:
            name = f.metadata["spec"]
            if name in body:
                values[f.name] = _parse_wire(f, body[name], name)
            elif f.name == "data_type":
                raise PolicyRejected("malformed", "dataType: missing")
        generation = body.get("generation", 0)
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
            raise PolicyRejected("malformed", f"generation: {generation!r} is not a count")
        source = body.get("source", "default")
        if not isinstance(source, str):
            raise PolicyRejected("malformed", f"source: {source!r} is not a string")
        if data_type is not None and values["data_type"] != data_type:
            raise PolicyRejected("data_type_mismatch",
                                 f"stored under {data_type!r} but governs "
                                 f"{values['data_type']!r}")
        return cls(**values, generation=generation, source=source)

    def to_dict(self) -> dict[str, Any]:
        """The one serialization: stored in Redis, read back by :meth:`from_wire`,
        served by services (e.g. the catalog's ``GET /policies``). Spec field
        names; durations in seconds."""
        out: dict[str, Any] = {}
        for f in _SPEC_FIELDS:
            value = getattr(self, f.name)
            out[f.metadata["spec"]] = list(value) if isinstance(value, tuple) else value
        out["generation"] = self.generation
        out["source"] = self.source
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    # ---------------------------------------------------------------- rules

    def validate(self) -> None:
        """Every rule, on an already built policy: the field rules and the
        cross-field rules the CRD states in CEL. PolicyError names the field."""
        for f in _SPEC_FIELDS:
            _check_value(f, getattr(self, f.name), f"spec.{f.metadata['spec']}")
        # The CRD's x-kubernetes-validations on spec, in the same order.
        if self.local_expiration > self.expiration:
            raise PolicyError("spec.localExpiration", "must not be longer than spec.expiration")
        if self.strategy == "active" and not self.tags:
            raise PolicyError("spec.tags", "required (at least one) when strategy is active")
        if self.strategy == "ttl" and self.tags:
            raise PolicyError("spec.tags",
                              "not allowed when strategy is ttl (entries only expire)")
        if self.strategy == "ttl" and self.consistency == "acknowledged":
            raise PolicyError("spec.consistency", "acknowledged requires strategy active")
        if self.strategy == "ttl" and self.invalidates:
            raise PolicyError("spec.invalidates",
                              "not allowed when strategy is ttl (entries only expire)")
        for i, template in enumerate(self.invalidates):
            if template not in self.tags:
                raise PolicyError(f"spec.invalidates[{i}]",
                                  f"{template!r} is not one of spec.tags (a tag no entry "
                                  "carries invalidates nothing)")

    def same_spec(self, other: Policy) -> bool:
        """Equal apart from ``generation`` and ``source``."""
        return all(getattr(self, f.name) == getattr(other, f.name) for f in _SPEC_FIELDS)

    # ------------------------------------------------------- what it means

    def entry_options(self) -> EntryOptions:
        """The cache options of an entry of this data type."""
        from .options import EntryOptions

        return EntryOptions(expiration=self.expiration, local_expiration=self.local_expiration,
                            data_type=self.data_type)

    def render_tags(self, records: Iterable[Mapping[str, Any]], *,
                    partial: bool = False) -> list[str]:
        """The tags entries carry (``tags``) rendered with each record, deduplicated
        (see :func:`render_templates`)."""
        return render_templates(self.data_type, self.tags, records, partial=partial)

    def render_invalidations(self, records: Iterable[Mapping[str, Any]]) -> list[str]:
        """The tags a write of ``records`` (before and after) invalidates:
        ``invalidates`` rendered with each record, deduplicated."""
        return render_templates(self.data_type, self.invalidates, records)

    def read_tags(self, key_record: Mapping[str, Any]) -> ReadTags:
        """The tags a cached read attaches: rendered from the key's fields when
        every template can be; otherwise a function of the loaded value, so that
        templates such as ``category:{category_id}`` are attached too (the cache
        calls it with the value once it is loaded)."""
        if not self.tags:
            return None
        static = self.render_tags((key_record,), partial=True)
        ctx = _context(key_record)
        if all(all(n in ctx for n in template_fields(t)) for t in self.tags):
            return static

        def derived(value: Any) -> list[str]:
            records = (key_record, value) if isinstance(value, Mapping) else (key_record,)
            return self.render_tags(records, partial=True)

        return derived


ReadTags = list[str] | Callable[[Any], list[str]] | None

_SPEC_FIELDS: Final = tuple(f for f in dataclasses.fields(Policy) if "spec" in f.metadata)
SPEC_FIELDS: Final = tuple(f.metadata["spec"] for f in _SPEC_FIELDS)
"""The spec's field names, in declaration order (the CRD's ``spec.properties``)."""


# ------------------------------------------------------------------ durations

def parse_duration(text: Any, *, field_name: str = "duration") -> float:
    """Seconds from a duration string: ``"500ms"``, ``"30s"``, ``"10m"``,
    ``"1h30m"``; at most 32 characters and at most 8760h (what the CRD allows)."""
    if not isinstance(text, str):
        raise PolicyError(field_name, f"{text!r} {DURATION_HINT}")
    if len(text) > MAX_DURATION_LENGTH:
        raise PolicyError(field_name, f"{text[:40]!r}... is {len(text)} characters; "
                          f"a duration has at most {MAX_DURATION_LENGTH}")
    if _DURATION.fullmatch(text) is None:
        raise PolicyError(field_name, f"{text!r} {DURATION_HINT}")
    seconds = sum(float(n) * _UNIT[u] for n, u in _DURATION_PART.findall(text))
    if seconds > MAX_DURATION_SECONDS:
        raise PolicyError(field_name, f"{text!r} is longer than the maximum, {MAX_DURATION}")
    return seconds


# ---------------------------------------------------------------- templates

@lru_cache(maxsize=1024)
def template_fields(template: str) -> tuple[str, ...]:
    """The placeholder names in a tag template: "product:{id}" -> ("id",)."""
    return tuple(_PLACEHOLDER.findall(template))


def render_templates(data_type: str, templates: tuple[str, ...],
                     records: Iterable[Mapping[str, Any]], *,
                     partial: bool = False) -> list[str]:
    """Tag templates rendered with each record, deduplicated.

    A template naming a field a record lacks is skipped (with ``partial``
    silently: read-side tags know only the key's fields; otherwise with a
    warning), and so is a rendered tag the cache would refuse (empty, ``*``,
    surrounding whitespace, too long): a policy naming a field the data type
    does not have, or a field value with spaces, must not break writes.
    """
    tags: dict[str, None] = {}
    for record in records:
        ctx = _context(record)
        for template in templates:
            names = template_fields(template)
            if not all(n in ctx for n in names):
                if not partial:
                    log.warning("policy %s: tag template %r needs fields %s not in the "
                                "record", data_type, template, list(names))
                continue
            try:
                tag = template.format_map(_Escaped(ctx))
            except (ValueError, IndexError, AttributeError, KeyError) as exc:
                # Stored templates are not re-parsed (from_wire); never fail a write.
                log.warning("policy %s: cannot render %r: %s", data_type, template, exc)
                continue
            try:
                check_tag(tag, MAX_TAG_LENGTH)  # the cache's own tag rules
            except ValueError:
                log.warning("policy %s: template %r gave an unusable tag %r; skipped",
                            data_type, template, tag[:80])
                continue
            tags[tag] = None
    return list(tags)


def render_tag(template: str, record: Mapping[str, Any]) -> str:
    """Fill a tag template from a record; a missing field raises ValueError."""
    try:
        return template.format_map(_Escaped(_context(record)))
    except KeyError as exc:
        raise ValueError(f"tag template {template!r} needs field {exc.args[0]!r}") from None


def tag_value(value: Any) -> str:
    """A field value as it appears in a tag: ids (integers, and strings of
    letters, digits, '_', '.', '-', '~') unchanged; anything else
    percent-encoded, so a client-chosen value such as a product name
    "product:31" renders as "product%3A31" and cannot name product 31's tag."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return quote(str(value), safe="")


class _Escaped(dict[str, Any]):
    """A rendering context whose values come out escaped (``tag_value``)."""

    def __getitem__(self, name: str) -> str:
        return tag_value(super().__getitem__(name))


def _context(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record plus camelCase aliases (``{categoryId}`` for ``category_id``),
    since CRD authors write camelCase and Python records snake_case."""
    ctx = dict(record)
    for name, value in record.items():
        if "_" in name:
            head, *rest = name.split("_")
            ctx.setdefault(head + "".join(p.capitalize() for p in rest), value)
    return ctx


# ------------------------------------------------------------- field checks

def _parse_spec(f: dataclasses.Field[Any], value: Any, where: str) -> Any:
    """One spec field from user input, in its CRD form, to its Policy value."""
    kind = f.metadata["kind"]
    if kind == "duration":
        return parse_duration(value, field_name=where)
    if kind == "tags":
        if not isinstance(value, list):
            raise PolicyError(where, "must be a list of strings")
        if not value and f.name == "invalidates":
            # [] would mean "a write invalidates nothing": that is strategy ttl.
            raise PolicyError(where, "must not be empty (omit it for the default)")
        return tuple(value)
    return value


def _check_value(f: dataclasses.Field[Any], value: Any, where: str) -> None:
    """The CRD's openAPIV3Schema rules for one field (and its per-field CEL)."""
    kind, meta = f.metadata["kind"], f.metadata
    if kind == "name":
        if not isinstance(value, str) or _DATA_TYPE.fullmatch(value) is None:
            raise PolicyError(where, f"{value!r} {DATA_TYPE_HINT}")
    elif kind == "enum":
        if value not in meta["choices"]:
            raise PolicyError(where, f"{value!r} must be one of {', '.join(meta['choices'])}")
    elif kind == "duration":
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not 0 <= value <= MAX_DURATION_SECONDS:
            raise PolicyError(where, f"{value!r} is not a duration of at most {MAX_DURATION}")
        if meta["positive"] and value <= 0:
            raise PolicyError(where, "must be greater than zero")
    elif kind == "tags":
        _check_templates(value, where)


def _check_templates(tags: Any, where: str) -> None:
    if not isinstance(tags, tuple):
        raise PolicyError(where, "must be a list of strings")
    if len(tags) > MAX_TAGS:
        raise PolicyError(where, f"at most {MAX_TAGS} tag templates, got {len(tags)}")
    seen: set[str] = set()
    for i, tag in enumerate(tags):
        at = f"{where}[{i}]"
        if not isinstance(tag, str):
            raise PolicyError(at, f"must be a string, got {tag!r}")
        if not tag:
            raise PolicyError(at, "must not be empty")
        if len(tag) > MAX_TAG_LENGTH:
            raise PolicyError(at, f"longer than {MAX_TAG_LENGTH} characters")
        if _TAG_TEMPLATE.fullmatch(tag) is None:
            raise PolicyError(at, f"{tag!r} {TAG_TEMPLATE_HINT}")
        if tag in seen:
            raise PolicyError(at, f"{tag!r} is listed twice")
        seen.add(tag)


def _parse_wire(f: dataclasses.Field[Any], value: Any, name: str) -> Any:
    """One field of a stored policy: what a replica needs to use it safely."""
    kind, meta = f.metadata["kind"], f.metadata
    if kind in ("name", "enum"):
        if not isinstance(value, str) or not value:
            raise PolicyRejected("malformed", f"{name}: {value!r} is not a string")
        if kind == "enum" and value not in meta["choices"]:
            raise PolicyRejected("malformed", f"{name}: unknown value {value!r}")
        return value
    if kind == "duration":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise PolicyRejected("malformed", f"{name}: {value!r} is not a number of seconds")
        if not math.isfinite(value) or not 0 <= value <= MAX_DURATION_SECONDS \
                or (meta["positive"] and value <= 0):
            raise PolicyRejected("out_of_bounds",
                                 f"{name}: {value!r} seconds is outside (0, {MAX_DURATION}]")
        return float(value)
    # tags
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise PolicyRejected("malformed", f"{name}: not a list of strings")
    if len(value) > MAX_TAGS:
        raise PolicyRejected("out_of_bounds",
                             f"{name}: {len(value)} templates; the maximum is {MAX_TAGS}")
    if any(not t or len(t) > MAX_TAG_LENGTH for t in value):
        raise PolicyRejected("out_of_bounds",
                             f"{name}: a template is empty or longer than {MAX_TAG_LENGTH}")
    return tuple(value)
