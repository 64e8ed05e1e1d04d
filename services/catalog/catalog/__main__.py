"""Command line: ``python -m catalog serve|seed|migrate``.

- ``serve --host 127.0.0.1 --port 8001``: one replica under uvicorn (httptools,
  uvloop when installed) with the connection limits of http_limits.py,
  configured from the environment (see config.py).
- ``seed --products 1000``: migrate and insert the seed data that is missing
  (idempotent).
- ``migrate``: create the tables and the outbox triggers (idempotent; ``serve``
  and ``seed`` run it too).
- ``flush --data-type product [--tag T ...]``: invalidate every entry of a data
  type on every replica, on purpose (see flush.py).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys

from .config import Settings
from .db import database_dialect
from .logs import configure
from .redact import redact_url

log = logging.getLogger("catalog")


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from .app import create_app
    from .http_limits import limited_protocol

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    limits = settings.http
    config = uvicorn.Config(
        create_app(settings), host=args.host, port=args.port, loop=loop,
        http=limited_protocol(limits), backlog=settings.http_backlog,
        access_log=False, log_config=None, log_level=settings.log_level.lower(), lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    log.info("serving on http://%s:%s (loop=%s, http=httptools; head <= %d bytes, headers"
             " within %gs, idle %gs, <= %d connections; writes %s)", args.host, args.port, loop,
             limits.max_head_bytes, limits.header_timeout, limits.keepalive_timeout,
             limits.max_connections,
             "need a bearer token" if settings.write_token else "are open (no write token)")
    if settings.metrics_port is not None:
        from .metrics_server import start_metrics_server

        start_metrics_server(args.host, settings.metrics_port)
    uvicorn.Server(config).run()
    return 0


def _seed(args: argparse.Namespace, settings: Settings) -> int:
    from .db import Database
    from .seed import seed

    async def run() -> int:
        database = Database(settings.database_url)
        try:
            count = await seed(database, args.products, outbox=settings.outbox)
        finally:
            await database.dispose()
        return count

    count = asyncio.run(run())
    log.info("seeded %s: %d products (ids 1..%d), categories and countries",
             redact_url(settings.database_url), count, count)
    return 0


def _migrate(_args: argparse.Namespace, settings: Settings) -> int:
    from .db import Database

    async def run() -> None:
        database = Database(settings.database_url)
        try:
            await database.create_schema(outbox=settings.outbox)
        finally:
            await database.dispose()

    asyncio.run(run())
    log.info("migrated %s (outbox triggers %s)", settings.database_url,
             "installed" if settings.outbox else "removed")
    return 0


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _port(text: str) -> int:
    value = _non_negative(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m catalog",
                                     description="The hybrid-catalog service.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one replica (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000)
    seed = sub.add_parser("seed", help="fill the database with seed data (idempotent)")
    seed.add_argument("--products", type=_non_negative, default=1000)
    flush = sub.add_parser("flush", help="invalidate a whole data type on every replica")
    flush.add_argument("--data-type", required=True)
    flush.add_argument("--tag", action="append", default=[],
                       help="flush these tags instead of the data type's broad ones")
    sub.add_parser("migrate", help="create the schema and outbox triggers (idempotent)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        database_dialect(settings.database_url)  # a readable error now, not a traceback later
    except ValueError as exc:
        parser.error(str(exc))
    configure(settings.node_name, settings.log_level)
    if args.command == "serve":
        return _serve(args, settings)
    if args.command == "flush":
        from .flush import run

        return run(settings, args.data_type, args.tag)
    if args.command == "migrate":
        return _migrate(args, settings)
    return _seed(args, settings)


if __name__ == "__main__":
    sys.exit(main())
