"""Waiting on state another process or connection changes, with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], Any], *, timeout: float = 15.0,
                     interval: float = 0.02, what: str = "condition") -> Any:
    """Poll ``check`` (sync, or returning an awaitable) until it gives a truthy
    value, and return that value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        await asyncio.sleep(interval)


def wait_until(check: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.02,
               what: str = "condition") -> Any:
    """``eventually`` for synchronous tests and helpers: poll ``check`` until it
    gives a truthy value and return it; fail the test after ``timeout``.

    Polling is the honest tool only for state in another process or server
    (nothing there can be awaited); within a process, await an event instead.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)
