"""The API's writes claim their own outbox rows, so the relay does not repeat
their invalidation.

A write request invalidates synchronously before it answers; the relay
publishing the same rows again would only make every replica drop and reload
what was just reloaded. So a write transaction made for an HTTP request
stamps its outbox rows with a token (``origin``), and once the request has
invalidated and answered, the replica deletes the rows with that token. The
relay leaves stamped rows alone for ``grace`` seconds and publishes whatever
is still there after it: the rows of a writer that died between commit and
invalidation (or whose invalidation could not reach Redis). Unstamped rows
(psql, migrations, other services) are published at once.

Stamping costs the write transaction one statement on PostgreSQL (a
transaction-local setting the trigger copies) and two on SQLite (the outbox's
last id when the transaction starts, under the write lock, and an UPDATE of
the rows after it before commit). The deletes run after the response, batched.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .db import Database

log = logging.getLogger("catalog.claims")
# Far below the relay's grace (0.3 s): released claims are gone before it looks.
_COALESCE = 0.02


@dataclass(slots=True)
class _Scope:
    """One write request: its token, once a write transaction took it."""

    token: str | None = None
    watermark: int = 0
    status: int = 0
    tokens: list[str] = field(default_factory=list)


_current: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
    "catalog_outbox_claim", default=None)


class Claims:
    """Stamps write transactions on ``database`` and deletes claimed rows."""

    def __init__(self, database: Database, *, node: str, connected: Any) -> None:
        self.db = database
        self.prefix = f"{node}:"
        self._connected = connected
        self._done: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._install(database)

    # ------------------------------------------------------------ stamping

    def _install(self, database: Database) -> None:
        engine = database.write.sync_engine
        if database.dialect == "postgresql":
            @event.listens_for(engine, "begin")
            def _pg_begin(conn: Any) -> None:
                claim = _current.get()
                if claim is not None and claim.token is None:
                    claim.token = self._token()
                    conn.exec_driver_sql("SELECT set_config('catalog.origin', $1, true)",
                                         (claim.token,))
            return

        # SQLite: registered after db.py's BEGIN IMMEDIATE, so this transaction
        # holds the write lock and every outbox row above the watermark is its own.
        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            claim = _current.get()
            if claim is not None and claim.token is None:
                claim.token = self._token()
                claim.watermark = int(conn.exec_driver_sql(
                    "SELECT COALESCE(MAX(id), 0) FROM cache_outbox").scalar() or 0)

        @event.listens_for(engine, "commit")
        def _sqlite_commit(conn: Any) -> None:
            claim = _current.get()
            if claim is not None and claim.token is not None:
                conn.exec_driver_sql(
                    "UPDATE cache_outbox SET origin = ? WHERE id > ? AND origin IS NULL",
                    (claim.token, claim.watermark))

    def _token(self) -> str:
        return self.prefix + secrets.token_hex(8)

    # ------------------------------------------------------------ releasing

    def release(self, token: str) -> None:
        """The request that stamped ``token`` has invalidated: drop its rows."""
        self._done.append(token)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._flush_forever(), name="outbox-claims")

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            # Let concurrent writes finish answering: one DELETE for all of them.
            await asyncio.sleep(_COALESCE)
            self._wake.clear()
            tokens, self._done = self._done, []
            try:
                await self._delete(tokens)
            except Exception as exc:  # the relay publishes them after the grace
                log.warning("could not release %d outbox claims: %s", len(tokens), exc)

    async def _delete(self, tokens: list[str]) -> None:
        async with self.db.write.begin() as conn:
            if self.db.dialect == "postgresql":
                await conn.exec_driver_sql(
                    "DELETE FROM cache_outbox WHERE origin = ANY($1::text[])", (tokens,))
            else:
                marks = ", ".join("?" * len(tokens))
                await conn.exec_driver_sql(
                    f"DELETE FROM cache_outbox WHERE origin IN ({marks})", tuple(tokens))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class ClaimsMiddleware:
    """Opens a claim for every write request and releases it once the request
    answered below 500 while Redis was reachable (its invalidation went out)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        claims: Claims | None = getattr(scope["app"].state, "outbox_claims", None)
        if claims is None:
            await self.app(scope, receive, send)
            return
        claim = _Scope()

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                claim.status = message["status"]
            await send(message)

        reset = _current.set(claim)
        try:
            await self.app(scope, receive, send_status)
        finally:
            _current.reset(reset)
        if claim.token is not None and 0 < claim.status < 500 and claims._connected():
            claims.release(claim.token)
