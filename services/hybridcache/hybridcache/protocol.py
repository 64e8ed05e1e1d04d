"""The backplane wire format and the Redis key layout shared by every node.

This module is the contract between cache replicas and the operator. It has no
dependency on the rest of the package (only the standard library and orjson),
so that `cache_operator` can import it without pulling in the cache itself.

Wire format (DESIGN.md): a JSON object published on ``{prefix}backplane``::

    {"v": 1, "op": "key"|"tag"|"policy"|"probe", "id": str,
     "node": str, "ts": float, "seq": int}

Two optional fields extend it, and receivers that do not know them ignore them:

- ``"ver": int`` -- the cluster version (``INCR {prefix}clock``) that the
  invalidation was recorded at. Nodes compare versions, never wall clocks, to
  decide whether an entry predates an invalidation, so clock skew between
  nodes cannot keep a stale entry alive.
- ``"ack": true`` -- the sender waits for every live node to confirm it has
  applied the message; receivers answer on ``{prefix}acks``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

WIRE_VERSION: Final = 1
Op = Literal["key", "tag", "policy", "probe"]
OPS: Final[frozenset[str]] = frozenset({"key", "tag", "policy", "probe"})
ALL_TAG: Final = "*"


class Keys:
    """Every Redis key and channel name, derived from one key prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def channel(self) -> str:
        """Pub/sub channel carrying invalidations, policies and probes."""
        return f"{self.prefix}backplane"

    @property
    def ack_channel(self) -> str:
        """Pub/sub channel on which nodes confirm messages sent with ``ack``."""
        return f"{self.prefix}acks"

    @property
    def fill_channel(self) -> str:
        """Pub/sub channel announcing that a leased key was filled (or given up)."""
        return f"{self.prefix}fill"

    @property
    def clock(self) -> str:
        """Cluster-wide version counter (INCR); orders loads against invalidations."""
        return f"{self.prefix}clock"

    @property
    def epoch(self) -> str:
        """The clock's starting value, set when Redis has no state. A load that
        read the clock under another epoch (Redis restarted empty meanwhile,
        losing invalidation records) may not write its value."""
        return f"{self.prefix}epoch"

    @property
    def tags(self) -> str:
        """Hash: tag -> version at which it was last invalidated."""
        return f"{self.prefix}tags"

    @property
    def tag_times(self) -> str:
        """Sorted set: tag -> wall time of its last invalidation (for pruning)."""
        return f"{self.prefix}tagtimes"

    @property
    def policies(self) -> str:
        """Hash: dataType -> compiled policy JSON (written by the operator)."""
        return f"{self.prefix}policies"

    @property
    def nodes(self) -> str:
        """Sorted set: node id -> wall time of its last heartbeat."""
        return f"{self.prefix}nodes"

    def entry(self, key: str) -> str:
        return f"{self.prefix}e:{key}"

    def key_mark(self, key: str) -> str:
        """Version at which ``key`` was last removed (guards the stale-set race)."""
        return f"{self.prefix}k:{key}"

    def lease(self, key: str) -> str:
        """Cluster-wide single-flight lease for loading ``key``."""
        return f"{self.prefix}lease:{key}"

    def policy_acks(self, data_type: str) -> str:
        """Hash: node id -> policy generation that node has applied."""
        return f"{self.prefix}policy-acks:{data_type}"

    def probe(self, probe_id: str) -> str:
        """Hash: node id -> wall time at which that node received the probe."""
        return f"{self.prefix}probe:{probe_id}"

    def stats(self, node: str) -> str:
        """Hash of a node's published counters: ``l1_hit:<dt>``, ``l1_miss:<dt>``..."""
        return f"{self.prefix}stats:{node}"


@dataclass(frozen=True, slots=True)
class Message:
    """One backplane message. ``id`` is the key, tag, data type or probe id."""

    op: str
    id: str
    node: str
    ts: float
    seq: int
    ver: int | None = None
    ack: bool = False
    v: int = WIRE_VERSION

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "v": self.v,
            "op": self.op,
            "id": self.id,
            "node": self.node,
            "ts": self.ts,
            "seq": self.seq,
        }
        if self.ver is not None:
            body["ver"] = self.ver
        if self.ack:
            body["ack"] = True
        return orjson.dumps(body)

    def encode_open(self) -> bytes:
        """The encoding without its closing brace, so a Redis script can append
        ``,"ver":N}`` with the version it allocated atomically."""
        assert self.ver is None
        return self.encode()[:-1]


class MessageError(ValueError):
    """A backplane payload that does not follow the wire contract."""


def decode_message(raw: bytes | str) -> Message:
    """Parse and check one payload; raise MessageError naming what is wrong."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"backplane message is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MessageError("backplane message is not a JSON object")
    if body.get("v") != WIRE_VERSION:
        raise MessageError(f"unsupported backplane wire version {body.get('v')!r}")
    op, ident, node, ts, seq = (body.get(k) for k in ("op", "id", "node", "ts", "seq"))
    if op not in OPS:
        raise MessageError(f"unknown backplane op {op!r}")
    if not isinstance(ident, str) or not isinstance(node, str):
        raise MessageError("backplane message 'id' and 'node' must be strings")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        raise MessageError("backplane message 'ts' must be a number")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise MessageError("backplane message 'seq' must be an integer")
    ver = body.get("ver")
    if ver is not None and (not isinstance(ver, int) or isinstance(ver, bool)):
        raise MessageError("backplane message 'ver' must be an integer")
    return Message(op, ident, node, float(ts), seq, ver, bool(body.get("ack", False)))


# --------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------

Strategy = Literal["active", "ttl"]
Consistency = Literal["eventual", "acknowledged"]
STRATEGIES: Final = ("active", "ttl")
CONSISTENCIES: Final = ("eventual", "acknowledged")

# Go's time.ParseDuration units (what Kubernetes' CEL duration() parses), so a
# policy valid here is valid in the CRD and the other way round: no "d".
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
DURATION_PATTERN: Final = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# A tag template: literal text with {placeholders} naming fields of the record.
TAG_TEMPLATE_PATTERN: Final = r"^[^{}\s*]*(\{[A-Za-z_][A-Za-z0-9_]*\}[^{}\s*]*)*$"
_TAG_TEMPLATE = re.compile(TAG_TEMPLATE_PATTERN)
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DATA_TYPE_PATTERN: Final = r"^[a-z][a-z0-9-]{0,62}$"
_DATA_TYPE = re.compile(DATA_TYPE_PATTERN)


def parse_duration(text: str | int | float, *, field_name: str = "duration") -> float:
    """Seconds from ``"500ms"``, ``"30s"``, ``"10m"``, ``"1h30m"`` or a number."""
    if isinstance(text, bool):
        raise ValueError(f"{field_name}: expected a duration, got {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"{field_name}: duration must not be negative, got {text!r}")
        return float(text)
    if not isinstance(text, str) or re.fullmatch(DURATION_PATTERN, text) is None:
        raise ValueError(
            f"{field_name}: {text!r} is not a duration (use e.g. 500ms, 30s, 10m, 1h, 1h30m)"
        )
    return sum(float(n) * _UNIT[u] for n, u in _DURATION_PART.findall(text))


def template_fields(template: str) -> list[str]:
    """The placeholder names in a tag template: "product:{id}" -> ["id"]."""
    return _PLACEHOLDER.findall(template)


def render_tag(template: str, record: dict[str, Any]) -> str:
    """Fill a tag template from a record; a missing field raises ValueError."""
    try:
        return template.format_map(record)
    except KeyError as exc:
        raise ValueError(f"tag template {template!r} needs field {exc.args[0]!r}") from None


@dataclass(frozen=True, slots=True)
class Policy:
    """A compiled CacheInvalidationPolicy, as stored in ``{prefix}policies``."""

    data_type: str
    strategy: str = "active"
    expiration: float = 600.0
    local_expiration: float = 30.0
    tags: tuple[str, ...] = ()
    consistency: str = "eventual"
    max_staleness: float = 1.0
    generation: int = 0
    source: str = "default"  # "default", or "<namespace>/<name>" of the custom resource

    def __post_init__(self) -> None:
        validate_policy(self)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "dataType": self.data_type,
                "strategy": self.strategy,
                "expiration": self.expiration,
                "localExpiration": self.local_expiration,
                "tags": list(self.tags),
                "consistency": self.consistency,
                "maxStaleness": self.max_staleness,
                "generation": self.generation,
                "source": self.source,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Policy:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"policy is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ValueError("policy must be a JSON object")
        return policy_from_spec(body, generation=body.get("generation", 0),
                                source=body.get("source", "default"))


def policy_from_spec(
    spec: dict[str, Any], *, generation: int = 0, source: str = "default"
) -> Policy:
    """Compile a CacheInvalidationPolicy ``spec`` (YAML field names, durations as
    strings or seconds) into a Policy; ValueError names the offending field."""
    if not isinstance(spec, dict):
        raise ValueError("spec must be a mapping")
    known = {"dataType", "strategy", "expiration", "localExpiration", "tags",
             "consistency", "maxStaleness", "generation", "source"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(f"spec.{unknown[0]}: unknown field")
    data_type = spec.get("dataType")
    if not isinstance(data_type, str):
        raise ValueError("spec.dataType: required, a string")
    strategy = spec.get("strategy", "active")
    expiration = parse_duration(spec.get("expiration", "10m"), field_name="spec.expiration")
    local_default = min(30.0, expiration)
    local = parse_duration(spec.get("localExpiration", local_default),
                           field_name="spec.localExpiration")
    tags = spec.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("spec.tags: must be a list of strings")
    max_staleness = parse_duration(spec.get("maxStaleness", "1s"), field_name="spec.maxStaleness")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise ValueError(f"generation: must be a non-negative integer, got {generation!r}")
    return Policy(
        data_type=data_type,
        strategy=strategy,
        expiration=expiration,
        local_expiration=local,
        tags=tuple(tags),
        consistency=spec.get("consistency", "eventual"),
        max_staleness=max_staleness,
        generation=generation,
        source=str(source),
    )


def validate_policy(p: Policy) -> None:
    """Cross-field rules, the same ones the CRD states in CEL."""
    if not isinstance(p.data_type, str) or _DATA_TYPE.fullmatch(p.data_type) is None:
        raise ValueError(
            f"spec.dataType: {p.data_type!r} must be lower-case letters, digits and '-',"
            " starting with a letter, at most 63 characters"
        )
    if p.strategy not in STRATEGIES:
        raise ValueError(f"spec.strategy: {p.strategy!r} must be one of {', '.join(STRATEGIES)}")
    if p.consistency not in CONSISTENCIES:
        raise ValueError(
            f"spec.consistency: {p.consistency!r} must be one of {', '.join(CONSISTENCIES)}"
        )
    if p.expiration <= 0:
        raise ValueError("spec.expiration: must be greater than zero")
    if p.local_expiration <= 0:
        raise ValueError("spec.localExpiration: must be greater than zero")
    if p.local_expiration > p.expiration:
        raise ValueError("spec.localExpiration: must not be longer than spec.expiration")
    if p.strategy == "active" and not p.tags:
        raise ValueError("spec.tags: required (at least one) when strategy is active")
    if p.strategy == "ttl" and p.tags:
        raise ValueError("spec.tags: not allowed when strategy is ttl (entries only expire)")
    if p.strategy == "ttl" and p.consistency == "acknowledged":
        raise ValueError("spec.consistency: acknowledged requires strategy active")
    seen: set[str] = set()
    for i, tag in enumerate(p.tags):
        where = f"spec.tags[{i}]"
        if not tag or tag != tag.strip():
            raise ValueError(f"{where}: {tag!r} must be non-empty without surrounding whitespace")
        if len(tag) > 256:
            raise ValueError(f"{where}: longer than 256 characters")
        if _TAG_TEMPLATE.fullmatch(tag) is None:
            raise ValueError(
                f"{where}: {tag!r} is not a tag template (literal text and {{field}}"
                " placeholders; no '*', spaces or unbalanced braces)"
            )
        if tag in seen:
            raise ValueError(f"{where}: {tag!r} is listed twice")
        seen.add(tag)
