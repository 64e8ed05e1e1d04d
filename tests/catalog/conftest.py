"""Fixtures for the catalog suites: databases (SQLite file, private PostgreSQL
database), an in-process app, and clusters of real replica processes."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.catalog_cluster import Cluster, seed_database
from tests.support.redis_server import RedisServer

# Starlette's TestClient still works on httpx; its nudge towards httpx2 is noise
# here. Importing it once, quietly, keeps the warning out of every test module.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import starlette.testclient  # noqa: F401

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# The replicas of the `cluster` fixture require it for writes (as deployed).
WRITE_TOKEN = "replicas-write-token"
SEED_PRODUCTS = 200


def _pg_reachable() -> str | None:
    """None if PostgreSQL at 127.0.0.1:5432 answers, else why not."""
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(PG_ADMIN, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"PostgreSQL at 127.0.0.1:5432 unreachable: {type(exc).__name__}: {exc}"
    return None


def _pg_admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


class PgDatabase:
    """A private database ``<prefix>_<random>``, dropped afterwards."""

    def __init__(self, prefix: str = "catalog_test") -> None:
        self.name = f"{prefix}_{secrets.token_hex(4)}"
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.name}"

    def __enter__(self) -> PgDatabase:
        _pg_admin(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc: object) -> None:
        _pg_admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A seeded database: a SQLite file, or a private PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("catalog-db") / "catalog.db"
        url = f"sqlite+aiosqlite:///{path}"
        seed_database(url, SEED_PRODUCTS)
        yield url
        return
    reason = _pg_reachable()
    if reason is not None:
        pytest.skip(reason)
    with PgDatabase() as db:
        seed_database(db.url, SEED_PRODUCTS)
        yield db.url


@pytest.fixture(scope="session")
def _seeded_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seeded") / "template.db"
    seed_database(f"sqlite+aiosqlite:///{path}", 50)
    return path


@pytest.fixture
def sqlite_url(_seeded_sqlite: Path, tmp_path: Path) -> str:
    """A private copy of a seeded SQLite database (50 products)."""
    target = tmp_path / "catalog.db"
    shutil.copyfile(_seeded_sqlite, target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture(scope="module")
def cluster_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def cluster(database_url: str, cluster_redis: RedisServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 ``python -m catalog serve`` processes sharing one Redis and one database."""
    workdir = tmp_path_factory.mktemp("replicas")
    prefix = f"t{secrets.token_hex(3)}:"
    with Cluster(3, database_url=database_url, redis_url=cluster_redis.url, workdir=workdir,
                 key_prefix=prefix,
                 extra_env={"ACK_TIMEOUT": "1.5", "CATALOG_WRITE_TOKEN": WRITE_TOKEN}) as c:
        yield c


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody has migrated yet (SQLite, then PostgreSQL)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    reason = _pg_reachable()
    if reason is not None:
        pytest.skip(reason)
    with PgDatabase() as db:
        yield db.url
