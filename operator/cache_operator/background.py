"""A loop the operator runs beside kopf's handlers (the fleet probes, the
epoch watch), with the one way to start and stop it.

Stopping cancels again until the task is done: a cancellation can be
swallowed inside the Redis client (a pipeline's reset on exit), and a single
``cancel()`` would leave the loop running after the operator said it stopped.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("cache_operator")


class BackgroundLoop:
    """Subclasses define ``run``, which returns once ``_stopping`` is set."""

    task_name = "cache-operator-loop"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self.run(), name=self.task_name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s ended with %r", self.task_name, task.exception())
