"""Value serializers for L2 (and for copy-on-read and byte accounting in L1).

A serializer is any object with ``dumps(value) -> bytes`` and
``loads(bytes) -> value``. JSON through orjson is the default because it is
readable in ``redis-cli`` and language-neutral; msgpack through msgspec is the
compact fast path for services that only talk to themselves.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import orjson


@runtime_checkable
class Serializer(Protocol):
    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JsonSerializer:
    """orjson: dataclasses, datetimes, UUIDs and numpy arrays serialize natively."""

    __slots__ = ()

    def dumps(self, value: Any) -> bytes:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)

    def loads(self, data: bytes) -> Any:
        return orjson.loads(data)


class MsgspecSerializer:
    """msgpack via msgspec: smaller payloads and faster than JSON.

    Needs the optional dependency ``hybridcache[msgspec]``.
    """

    __slots__ = ("_decoder", "_encoder")

    def __init__(self) -> None:
        import msgspec

        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder()

    def dumps(self, value: Any) -> bytes:
        return self._encoder.encode(value)

    def loads(self, data: bytes) -> Any:
        return self._decoder.decode(data)
