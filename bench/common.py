"""Shared timing helpers for the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def per_call_ns(fn: Callable[[], Awaitable[Any]], n: int, rounds: int = 5) -> float:
    """Best-of-rounds mean nanoseconds per awaited call (best: least noise)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(n):
            await fn()
        best = min(best, (time.perf_counter_ns() - start) / n)
    return best


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"
