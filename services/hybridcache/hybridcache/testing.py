"""Support for tests of HybridCache and of code built on it.

``FakeClock`` drives ``CacheOptions.monotonic``, so lifetimes, eager refresh
and fail-safe windows are tested exactly and instantly. The functions reach
states a test needs that production code never asks for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cache import HybridCache


class FakeClock:
    """A monotonic clock that moves only when told to."""

    __slots__ = ("now",)

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        self.now += seconds


async def stop_listening(cache: HybridCache) -> None:
    """Drop the backplane subscription for good: the replica still
    heartbeats (so it counts as a member) but hears nothing, as a stuck one
    would, until its backplane lease runs out."""
    node = cache._node
    if node.subscription is not None:
        await node.subscription.stop()
        node.subscription = None


def resume_listening(cache: HybridCache) -> None:
    """Subscribe again after :func:`stop_listening`: the replica resynchronises
    (L1 flushed, tag table reloaded) and its backplane lease is renewed."""
    node = cache._node
    if node.subscription is None:
        node.start()


async def refresh_tag_table(cache: HybridCache) -> None:
    """Run now the maintenance step that bounds the local tag table by
    Redis's (normally every minute)."""
    await cache._maintenance.refresh_tag_table()
