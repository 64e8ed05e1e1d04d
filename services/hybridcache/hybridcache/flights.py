"""In-process single flight: one load per key at a time in this process.

A ``Load`` is also where a load's state travels (its key, factory, options,
tags, the version it started at, its lease) from the L2 read to the factory
and the store, instead of through long argument lists.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

from .options import EntryOptions
from .stats import TypeStats

if TYPE_CHECKING:
    from .redis_layer import Lease

Layer = Literal["l1", "l2", "miss", "stale"]
T = TypeVar("T")
Factory = Callable[[], Awaitable[T]]


class Lookup(NamedTuple):
    """A value and the layer it came from: ``l1``, ``l2``, ``miss`` (the
    factory ran) or ``stale`` (fail-safe served an expired value). A named
    tuple: built on every lookup, and a frozen dataclass costs twice as much."""

    value: Any
    layer: Layer


class Abandoned(Exception):
    """The caller running a shared load was cancelled before it finished."""


class Load:
    """One in-flight load of a key in this process, shared by every caller
    that misses the key meanwhile, unless an invalidation detached it.

    The first caller runs the load itself (no task hop on the miss path);
    callers that join wait on ``future``, which is only resolved when someone
    joined. If the first caller is cancelled, joiners get ``Abandoned`` and
    start over, one of them becoming the new loader."""

    __slots__ = ("derive", "detached", "epoch", "factory", "future", "gaps", "joiners", "key",
                 "lease", "opts", "stale", "stats", "tags", "version")

    def __init__(self, key: str, factory: Factory[Any], opts: EntryOptions, stats: TypeStats,
                 tags: tuple[str, ...], derive: Callable[[Any], Iterable[str]] | None,
                 gaps: int, future: asyncio.Future[Lookup]) -> None:
        self.key = key
        self.factory = factory
        self.opts = opts
        self.stats = stats
        self.tags = tags
        self.derive = derive  # tags known only once the value is loaded
        self.gaps = gaps  # Versions.gaps when it started: a gap since voids it
        self.future = future
        self.detached = False
        self.joiners = 0
        self.stale = False  # its value was invalidated during the load
        self.version = 0  # the cluster version the load started at
        self.epoch: bytes | None = None  # None: not started from the cluster clock
        self.lease: Lease | None = None

    def settle(self, result: Lookup | None, exc: BaseException | None) -> None:
        if not self.joiners or self.future.done():
            return
        if exc is None:
            self.future.set_result(result)  # type: ignore[arg-type]
        else:
            self.future.set_exception(exc)


class Flights:
    """The loads in progress in this process, by key."""

    __slots__ = ("loads",)

    def __init__(self) -> None:
        self.loads: dict[str, Load] = {}

    def joinable(self, key: str, gaps: int) -> Load | None:
        load = self.loads.get(key)
        if load is None or load.detached or load.gaps != gaps:
            return None
        return load

    def begin(self, load: Load) -> None:
        self.loads[load.key] = load

    def end(self, load: Load) -> None:
        if self.loads.get(load.key) is load:
            del self.loads[load.key]

    def detach(self, key: str) -> None:
        """The key was invalidated: its load's value must not enter L1, and
        nobody may join it any more."""
        load = self.loads.pop(key, None)
        if load is not None:
            load.detached = True

    def detach_tag(self, tag: str) -> None:
        for key in [k for k, load in self.loads.items() if tag in load.tags]:
            self.loads.pop(key).detached = True

    def detach_all(self) -> None:
        for load in self.loads.values():
            load.detached = True
        self.loads.clear()
