"""The outbox relay: turns committed outbox rows into cache invalidations.

One relay is active per database; every replica runs a candidate:

- **PostgreSQL:** the candidate holds a session advisory lock on a dedicated
  connection (``pg_try_advisory_lock``), retried every ``retry_interval``. When
  the holder dies its connection closes and the server releases the lock, so
  another replica takes over at its next try. The holder ``LISTEN``s on the
  triggers' channel: a notification arrives when a change from outside the API
  commits. Rows an API write claimed (claims.py) notify nobody; the holder looks
  for them every ``grace``, which also catches anything missed while connecting.
- **SQLite:** a lease row (``cache_relay_lease``) that the holder renews; a
  candidate takes it once it expired, so a dead holder is replaced within one
  lease plus one poll. SQLite has no notifications: the holder polls the
  outbox every ``poll_interval`` (a read of an empty table by primary key).

Publishing is at least once: rows are deleted only after their invalidation
was issued while the backplane was reachable (with Redis away they wait), and
invalidating twice is harmless. A relay that was cut off and
still thinks it leads only duplicates work.

Only a replica that reaches Redis leads: a holder whose replica loses Redis
(its backplane lease ran out, while PostgreSQL is still there) gives the lock
or lease back at once, even in the middle of a publish (those rows stay for
the next holder), and contends again once it is reachable. Otherwise a
replica partitioned from Redis alone would keep the role and sit on every
row, its own writes' and any writer's that died, until the partition heals:
nobody else may publish them, and the other replicas serve the old values
for as long (a "stale beyond budget" in the fault suite's partition test).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

from sqlalchemy import delete, text, update
from sqlalchemy.engine import make_url

from . import db as tables
from .db import Database
from .metrics import OUTBOX_AGE, OUTBOX_PUBLISHED, RELAY_ACTIVE
from .outbox import CHANNEL, Change, select_pending

log = logging.getLogger("catalog.relay")

# Arbitrary, fixed: the advisory lock whose holder is the relay.
RELAY_LOCK = 0x6361_7462
BATCH = 500
# The lock lives as long as the server thinks the holder's connection does.
# A killed process closes it at once; a holder cut off by the network would
# keep it for the kernel's keepalive default (hours): probe after 5 s idle,
# every 2 s, give up after 3 misses.
_PG_SESSION = {"application_name": "catalog-outbox-relay", "tcp_keepalives_idle": "5",
               "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3"}
Publish = Callable[[Sequence[Change]], Awaitable[None]]


class Invalidator(Protocol):
    async def invalidate(self, data_type: str, change: Literal["update", "create", "delete"],
                         before: dict[str, Any] | None, after: dict[str, Any] | None, *,
                         confirm: bool = True) -> Any: ...


# The database's names for a change, as the catalog's write scope names them.
_WRITE_CHANGE: dict[str, Literal["update", "create", "delete"]] = {
    "insert": "create", "update": "update", "delete": "delete"}


async def invalidate_change(catalog: Invalidator, change: Change) -> None:
    """The one place the relay meets the catalog: invalidate what ``change``
    did, through the same function (and so the same policy decisions) as the
    API's own writes."""
    # A kind the triggers never write (a hand-edited row) still invalidates
    # the record's own tags, and its lists when it names two categories.
    kind = _WRITE_CHANGE.get(change.kind, "update")
    # Published, not confirmed: waiting for acknowledgements would only hold
    # the next changes behind a slow or silent replica.
    await catalog.invalidate(change.data_type, kind, change.before, change.after,
                             confirm=False)


def catalog_publisher(catalog: Invalidator) -> Publish:
    """Publish a batch: one invalidation per distinct change, concurrently,
    none waiting for confirmations (``invalidate_change``)."""

    async def publish(changes: Sequence[Change]) -> None:
        distinct = {c.dedup_key(): c for c in changes}
        await asyncio.gather(*(invalidate_change(catalog, c) for c in distinct.values()))

    return publish


class Relay:
    """This replica's relay candidate; ``active`` while it holds the role."""

    def __init__(self, database: Database, publish: Publish, *, node: str,
                 poll_interval: float = 0.1, lease: float = 2.0,
                 retry_interval: float = 0.5, safety_interval: float = 1.0,
                 grace: float = 0.3, reachable: Callable[[], bool] = lambda: True) -> None:
        self.db = database
        self.publish = publish
        self.reachable = reachable
        self.node = node
        self.poll_interval = poll_interval
        self.lease = lease
        self.retry_interval = retry_interval
        self.safety_interval = safety_interval
        self.grace = grace
        self._deferred = False
        self.active = False
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        run = self._run_postgres if self.db.dialect == "postgresql" else self._run_sqlite
        self._task = asyncio.create_task(run(), name="outbox-relay")

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.db.dialect == "sqlite" and self.active:
            await self._release_lease()
        self._set_active(False)

    def _set_active(self, active: bool) -> None:
        if active != self.active:
            log.info("outbox relay %s on %s", "active" if active else "standing by", self.node)
        self.active = active
        RELAY_ACTIVE.set(1 if active else 0)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _deliver(self, rows: Sequence[Any]) -> list[int]:
        """Publish what is due; the ids to delete. A row an API write claimed
        is due only after ``grace`` (that write deletes it once it invalidated)."""
        changes = [Change.from_row(r) for r in rows]
        due = [c for c in changes if not c.claimed or c.age >= self.grace]
        self._deferred = len(due) < len(changes)
        if due and not self.reachable():
            # Redis away: an invalidation now would only be applied here and
            # queued in this process. Keep the rows until it can reach everyone.
            self._deferred = True
            return []
        if due:
            if not await self._publish_while_reachable(due):
                self._deferred = True
                return []
            for change in due:
                OUTBOX_AGE.observe(max(0.0, change.age))
            OUTBOX_PUBLISHED.inc(len(due))
        return [c.id for c in due]

    async def _publish_while_reachable(self, due: Sequence[Change]) -> bool:
        """Publish ``due``; False if this replica lost Redis before it was
        done. The publish is abandoned then: a call to a Redis that went away
        without a word hangs until its socket timeout, and this relay must
        hand the role over now, not after it (its rows stay outstanding)."""
        task = asyncio.ensure_future(self.publish(due))
        try:
            while not task.done():
                await asyncio.wait((task,), timeout=self.poll_interval)
                if not self.reachable():
                    return False
            task.result()
            return self.reachable()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _wait_timeout(self) -> float:
        """Sleep until the next notification or the next look for claimed rows
        (the triggers notify only for unclaimed ones): a writer that died
        after its commit is covered within about twice the grace."""
        return min(self.safety_interval, self.grace / 2 if self._deferred else self.grace)

    # ------------------------------------------------------------ PostgreSQL

    async def _run_postgres(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        dsn = make_url(self.db.url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        while not self._stop.is_set():
            conn = None
            try:
                conn = await asyncpg.connect(dsn, timeout=5, server_settings=_PG_SESSION)
                conn.add_termination_listener(lambda _c: self._wake.set())
                # Listen before the first drain: nothing committed in between is missed.
                await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
                while not self._stop.is_set():
                    # Only while this replica reaches Redis (module docstring).
                    while not (self.reachable() and await conn.fetchval(
                            "SELECT pg_try_advisory_lock($1)", RELAY_LOCK)):
                        await self._pause(self.retry_interval)
                        if self._stop.is_set():
                            return
                    self._set_active(True)
                    await self._lead_postgres(conn)
                    if self._stop.is_set():
                        return
                    await conn.fetchval("SELECT pg_advisory_unlock($1)", RELAY_LOCK)
                    self._set_active(False)
                    log.warning("outbox relay on %s stepped down: its replica cannot reach"
                                " Redis", self.node)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    TimeoutError) as exc:
                log.warning("outbox relay: %s: %s; retrying", type(exc).__name__, exc)
            finally:
                self._set_active(False)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
            await self._pause(self.retry_interval)

    async def _lead_postgres(self, conn: Any) -> None:
        """Publish as the holder until stopped or this replica loses Redis."""
        while not self._stop.is_set() and self.reachable():
            self._wake.clear()
            if await self._drain_postgres(conn) >= BATCH:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._wait_timeout())

    async def _drain_postgres(self, conn: Any) -> int:
        rows = await conn.fetch(select_pending("postgresql", BATCH))
        ids = await self._deliver(rows) if rows else []
        if ids:
            await conn.execute("DELETE FROM cache_outbox WHERE id = ANY($1::bigint[])", ids)
        return len(ids)

    # ------------------------------------------------------------ SQLite

    async def _run_sqlite(self) -> None:
        renewed = 0.0
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                if not self.reachable():
                    # Only while this replica reaches Redis (module docstring).
                    if self.active:
                        await self._release_lease()
                        self._set_active(False)
                    renewed = 0.0
                elif now - renewed >= self.lease / 3:
                    self._set_active(await self._take_lease())
                    renewed = now
                if self.active:
                    while await self._drain_sqlite() >= BATCH:
                        pass
            except Exception as exc:  # a locked or vanished file: retry, never die
                log.warning("outbox relay: %s: %s; retrying", type(exc).__name__, exc)
                self._set_active(False)
                renewed = 0.0
            await self._pause(self.poll_interval if self.active else self.retry_interval)

    async def _take_lease(self) -> bool:
        now = time.time()
        lease = tables.cache_relay_lease
        async with self.db.write.begin() as conn:
            result = await conn.execute(
                update(lease).where(lease.c.name == "outbox",
                                    (lease.c.holder == self.node) | (lease.c.expires_at < now))
                .values(holder=self.node, expires_at=now + self.lease))
        return bool(result.rowcount)

    async def _release_lease(self) -> None:
        lease = tables.cache_relay_lease
        with contextlib.suppress(Exception):
            async with self.db.write.begin() as conn:
                await conn.execute(update(lease).where(lease.c.name == "outbox",
                                                       lease.c.holder == self.node)
                                   .values(expires_at=0))

    async def _drain_sqlite(self) -> int:
        async with self.db.read.connect() as conn:
            rows = (await conn.execute(text(select_pending("sqlite", BATCH)))).all()
        ids = await self._deliver(rows) if rows else []
        if ids:
            async with self.db.write.begin() as conn:
                await conn.execute(delete(tables.cache_outbox)
                                   .where(tables.cache_outbox.c.id.in_(ids)))
        return len(ids)
