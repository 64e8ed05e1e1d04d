"""hybridcache: an asyncio hybrid cache (in-process L1, Redis L2, the source of
truth) that stays correct across replicas.

Imports are lazy so that ``import hybridcache.policy`` (and ``.keys``, ``.wire``: what the
operator uses) does not load Redis clients, metrics or the cache itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "AckResult",
    "Adaptive",
    "CacheOptions",
    "EntryOptions",
    "HybridCache",
    "JsonSerializer",
    "Lookup",
    "MsgspecSerializer",
    "Policy",
    "Serializer",
]

_WHERE = {
    "HybridCache": ".cache",
    "Lookup": ".cache",
    "AckResult": ".backplane",
    "Adaptive": ".options",
    "CacheOptions": ".options",
    "EntryOptions": ".options",
    "Serializer": ".serializers",
    "JsonSerializer": ".serializers",
    "MsgspecSerializer": ".serializers",
    "Policy": ".policy",
}

if TYPE_CHECKING:
    from .backplane import AckResult
    from .cache import HybridCache, Lookup
    from .options import Adaptive, CacheOptions, EntryOptions
    from .policy import Policy
    from .serializers import JsonSerializer, MsgspecSerializer, Serializer


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'hybridcache' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
