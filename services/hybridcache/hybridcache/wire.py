"""The backplane wire format: one JSON object per message, published on
``{prefix}backplane`` (see :class:`hybridcache.keys.Keys`)::

    {"v": 1, "op": "key"|"tag"|"policy"|"probe", "id": str,
     "node": str, "ts": float, "seq": int}

Two optional fields extend it, and receivers that do not know them ignore them:

- ``"ver": int`` -- the cluster version (``HINCRBY {prefix}state clock``) that the
  invalidation was recorded at. Nodes compare versions, never wall clocks, to
  decide whether an entry predates an invalidation, so clock skew between
  nodes cannot keep a stale entry alive.
- ``"ack": true`` -- the sender waits for every live node to confirm it has
  applied the message; receivers answer on ``{prefix}acks``.
- ``"rt": float`` -- Redis's own time (seconds) when the publishing script
  ran; receivers measure lag against it, corrected by their measured offset
  from Redis's clock, so a node's clock skew cannot fake lag.
- ``"w": 2`` -- the sender's wire revision. Revision 2 senders hear acks on
  their own channel ``{prefix}acks:<node>``; a receiver answers there when
  the message says ``"w": 2`` and on the shared ``{prefix}acks`` otherwise
  (a revision 1 sender, during a rolling upgrade).
- ``"b": [[op, id, ver], ...]`` -- a batch (revision 2): the invalidations a
  sender coalesced while its previous publish was in flight, ``op`` ``"k"``
  (key) or ``"t"`` (tag), each at its own version, applied in order. The
  envelope of a batch reads ``"op": "tag", "id": "*"`` without ``ver``: a
  revision 1 receiver, which ignores ``b``, invalidates everything it holds
  at a version above any it has seen (correct, and costly only during a
  rolling upgrade); a revision 2 receiver applies the items instead.

A ``policy`` message carries only the data type: receivers read the policy
itself from the ``{prefix}policies`` hash (:mod:`hybridcache.policy`), so a
missed message is repaired by the next resync. Depends only on orjson, so the
operator can import it without the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import orjson

WIRE_VERSION: Final = 1
WIRE_REVISION: Final = 2  # "w": what this code speaks inside envelope version 1
BATCH_OPS: Final[frozenset[str]] = frozenset({"k", "t"})
BatchItem = tuple[str, str, int]  # ("k" | "t", key or tag, version)
Op = Literal["key", "tag", "policy", "probe"]
OPS: Final[frozenset[str]] = frozenset({"key", "tag", "policy", "probe"})


@dataclass(slots=True)
class Message:
    """One backplane message. ``id`` is the key, tag, data type or probe id.
    Not frozen: every replica builds one per message it hears, and a frozen
    dataclass pays a setattr call per field."""

    op: str
    id: str
    node: str
    ts: float
    seq: int
    ver: int | None = None
    ack: bool = False
    v: int = WIRE_VERSION
    rt: float | None = None
    w: int = WIRE_REVISION
    batch: tuple[BatchItem, ...] | None = None

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
        if self.w != 1:
            body["w"] = self.w
        if self.batch is not None:
            body["b"] = [list(item) for item in self.batch]
        if self.rt is not None:
            body["rt"] = self.rt
        return orjson.dumps(body)

    def encode_open(self) -> bytes:
        """The encoding without its closing brace, so a Redis script can append
        ``,"ver":N}`` with the version it allocated atomically."""
        assert self.ver is None
        return self.encode()[:-1]


def encode_batch_open(node: str, ts: float, seq: int, *, ack: bool) -> bytes:
    """A batch envelope without ``b``, ``rt`` and its closing brace: the
    INVALIDATE_BATCH script appends the items with the versions it allocates."""
    return Message("tag", "*", node, ts, seq, ack=ack).encode()[:-1]


class MessageError(ValueError):
    """A backplane payload that does not follow the wire contract."""


_NUMBER = (int, float)


def decode_message(raw: bytes | str) -> Message:
    """Parse and check one payload; raise MessageError naming what is wrong.
    Every replica decodes every message of the cluster: exact type checks
    (``type(x) is int`` also refuses booleans), one pass."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"backplane message is not JSON: {exc}") from None
    if type(body) is not dict:
        raise MessageError("backplane message is not a JSON object")
    get = body.get
    if get("v") != WIRE_VERSION:
        raise MessageError(f"unsupported backplane wire version {get('v')!r}")
    op, ident, node, ts, seq = get("op"), get("id"), get("node"), get("ts"), get("seq")
    if op not in OPS:
        raise MessageError(f"unknown backplane op {op!r}")
    if type(ident) is not str or type(node) is not str:
        raise MessageError("backplane message 'id' and 'node' must be strings")
    if type(ts) not in _NUMBER:
        raise MessageError("backplane message 'ts' must be a number")
    if type(seq) is not int:
        raise MessageError("backplane message 'seq' must be an integer")
    ver = get("ver")
    if ver is not None and type(ver) is not int:
        raise MessageError("backplane message 'ver' must be an integer")
    rt = get("rt")
    if rt is not None:
        if type(rt) not in _NUMBER:
            raise MessageError("backplane message 'rt' must be a number")
        rt = float(rt)
    w = get("w", 1)
    if type(w) is not int:
        raise MessageError("backplane message 'w' must be an integer")
    raw_batch = get("b")
    batch = None if raw_batch is None else _batch(raw_batch)
    return Message(op, ident, node, float(cast(float, ts)), seq, ver, get("ack") is True,
                   WIRE_VERSION, rt, w, batch)


def _batch(raw: Any) -> tuple[BatchItem, ...]:
    if type(raw) is not list or not raw:
        raise MessageError("backplane message 'b' must be a non-empty list")
    items = []
    for item in raw:
        if (type(item) is not list or len(item) != 3 or item[0] not in BATCH_OPS
                or type(item[1]) is not str or type(item[2]) is not int):
            raise MessageError(f"backplane batch item {str(item)[:80]!r} is not"
                               " [\"k\"|\"t\", str, int]")
        items.append((item[0], item[1], item[2]))
    return tuple(items)
