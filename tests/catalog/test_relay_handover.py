"""A relay whose replica loses Redis hands the role to one that reaches it.

The fault suite's partition test found this: the replica cut off from Redis
(PostgreSQL still reachable) kept the relay's advisory lock, its publish hung
on the dead link, then it deferred every row until the partition healed, so
nobody published its own writes (their claims are kept while it is cut off)
and the other replicas served the old values for seconds. Two real ``Relay``
candidates on one real database (SQLite file, private PostgreSQL database);
their publish functions stand in for the cache: the holder's hangs, as a
call to a Redis that vanished without a word does until its socket timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from catalog.db import Database
from catalog.outbox import Change
from catalog.relay import Relay

from tests.support import plain_sql
from tests.support.waiting import eventually


@pytest.fixture
async def databases(empty_database: str) -> AsyncIterator[tuple[Database, Database]]:
    """The database as two replicas see it (one engine each), migrated."""
    first, second = Database(empty_database), Database(empty_database)
    await first.create_schema()
    yield first, second
    await first.dispose()
    await second.dispose()


def _pending(url: str) -> int:
    return int(plain_sql.scalar(url, "SELECT count(*) FROM cache_outbox"))


async def test_a_holder_that_loses_redis_hands_the_relay_over(
        databases: tuple[Database, Database], empty_database: str) -> None:
    reaches = {"cut": True, "healthy": True}
    published: dict[str, list[int]] = {"cut": [], "healthy": []}
    never = asyncio.Event()

    async def publish_hanging(changes: Sequence[Change]) -> None:
        published["cut"] += [c.id for c in changes]
        await never.wait()  # the call to Redis that never returns

    async def publish(changes: Sequence[Change]) -> None:
        published["healthy"] += [c.id for c in changes]

    def candidate(name: str, database: Database, publish: object) -> Relay:
        return Relay(database, publish, node=name,  # type: ignore[arg-type]
                     poll_interval=0.05, lease=0.6, retry_interval=0.05,
                     reachable=lambda: reaches[name])

    cut = candidate("cut", databases[0], publish_hanging)
    cut.start()
    healthy = None
    try:
        await eventually(lambda: cut.active, what="the first candidate to lead")
        healthy = candidate("healthy", databases[1], publish)
        healthy.start()
        # A change from outside the API: the holder starts publishing it and hangs.
        plain_sql.run(empty_database,
                      "INSERT INTO categories (id, name, updated_at) VALUES (7, 'seven', 0)")
        await eventually(lambda: published["cut"], what="the holder to publish")
        assert cut.active and not healthy.active
        # Its backplane lease ran out: it cannot reach Redis any more.
        reaches["cut"] = False
        await eventually(lambda: healthy.active, what="the other candidate to take over")
        await eventually(lambda: published["healthy"] == published["cut"],
                         what="the other candidate to publish the row")
        await eventually(lambda: _pending(empty_database) == 0, what="the row deleted")
        assert not cut.active
    finally:
        await cut.stop()
        if healthy is not None:
            await healthy.stop()
