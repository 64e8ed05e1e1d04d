"""A test-only fault: die right after committing a write, before invalidating.

The outbox exists for exactly this window (a replica killed between its
commit and its invalidation); the fault tests need to hit it for sure, not by
racing a SIGKILL. Honoured only when ``CATALOG_TEST_CRASH_AFTER_COMMIT`` names
a table, and armed only by a transaction that changed that table, so start-up
(migrations, the relay's own bookkeeping) never trips it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

ENV = "CATALOG_TEST_CRASH_AFTER_COMMIT"
log = logging.getLogger("catalog.crashpoint")


def install(engine: AsyncEngine, env: dict[str, str] | None = None) -> bool:
    """Arm the crash point on ``engine`` if the environment asks for it."""
    table = (env if env is not None else os.environ).get(ENV, "").strip().lower()
    if not table:
        return False
    prefix = f"update {table} "
    log.warning("test crash point armed: exiting after the first commit that updates %s", table)

    # Connection.info is the pooled connection's own dict, which the pool's
    # checkin event sees too: pending while the transaction runs, armed once it
    # commits, fired when the committed connection goes back to the pool.
    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _watch(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lower().startswith(prefix):
            conn.info["crash_pending"] = True

    @event.listens_for(engine.sync_engine, "commit")
    def _arm(conn: Any) -> None:
        if conn.info.pop("crash_pending", False):
            conn.info["crash_after_commit"] = True

    @event.listens_for(engine.sync_engine, "rollback")
    def _disarm(conn: Any) -> None:
        conn.info.pop("crash_pending", None)

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def _crash(_dbapi: Any, record: Any) -> None:
        if record is not None and record.info.pop("crash_after_commit", False):
            os._exit(137)  # committed, not invalidated: what SIGKILL would leave

    return True
