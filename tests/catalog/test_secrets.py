"""No secret in any output: each ``python -m catalog`` command runs with a
known password in its DATABASE_URL, and its stdout, stderr, log and HTTP
answers are searched for it. PostgreSQL here trusts loopback, so the password
is carried (and would be leaked) but not needed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from catalog.redact import redact_url, scrub

from tests.support.catalog_cluster import Cluster, http_json
from tests.support.ports import free_port
from tests.support.waiting import eventually

from .conftest import PgDatabase, _pg_admin, _pg_reachable

PASSWORD = "Kn0wn-Pa55word"


def _with_password(url: str) -> str:
    return url.replace("://postgres@", f"://postgres:{PASSWORD}@")


def _catalog(*args: str, env: dict[str, str],
             timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "catalog", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **env})


@pytest.fixture
def pg() -> Iterator[PgDatabase]:
    reason = _pg_reachable()
    if reason is not None:
        pytest.skip(reason)
    with PgDatabase() as db:
        yield db


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+asyncpg://app:s3cr%40t@db:5432/catalog",
     "postgresql+asyncpg://app:***@db:5432/catalog"),
    ("redis://:pw@redis:6379/0", "redis://:***@redis:6379/0"),
    ("rediss://user@h/0?password=pw", "rediss://user@h/0?***"),
    ("sqlite+aiosqlite:///./catalog.db", "sqlite+aiosqlite:///./catalog.db"),
    ("postgres//user:pw@host/db", "***@host/db"),        # mistyped: still hidden
    ("redis://:p@ss#w@h/0", "redis://:***@h/0"),         # unencoded '@' and '#'
    ("redis://:pa?ss@h/0", "redis://:***@h/0"),          # unencoded '?'
    ("redis://h/0?password=pw", "redis://h/0?***"),
    ("postgresql://u:pw@h/d?x=a@b", "postgresql://u:***@b"),  # '@' in the query: hides more
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_removes_the_password_in_both_spellings() -> None:
    url = "postgresql://app:s3cr%40t@db/catalog"
    assert scrub("auth failed: s3cr@t / s3cr%40t", url) == "auth failed: *** / ***"


def test_seed_logs_the_url_without_its_password(pg: PgDatabase) -> None:
    done = _catalog("seed", "--products", "3", env={"DATABASE_URL": _with_password(pg.url),
                                                     "LOG_LEVEL": "INFO"})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"seeded postgresql+asyncpg://postgres:***@127.0.0.1:5432/{pg.name}" in output
    assert PASSWORD not in output


@pytest.mark.parametrize("command", [["seed"], ["serve", "--port", str(free_port())]])
@pytest.mark.parametrize("url", [f"postgresql+asyncpg://app:{PASSWORD}@db:port/catalog",
                                 f"postgres//app:{PASSWORD}@db/catalog"])
def test_malformed_database_url_is_refused_without_its_password(command: list[str],
                                                                url: str) -> None:
    done = _catalog(*command, env={"DATABASE_URL": url})
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "is not a database URL" in output and "Traceback" not in output
    assert PASSWORD not in output


def test_unreachable_database_at_start_shows_no_password(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://app:{PASSWORD}@127.0.0.1:{free_port()}/catalog"
    done = _catalog("serve", "--port", str(free_port()),
                    env={"DATABASE_URL": url, "DB_STARTUP_TIMEOUT": "1"})
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "database unreachable" in output
    assert PASSWORD not in output


def test_readyz_says_unreachable_without_driver_text(pg: PgDatabase, tmp_path: Path) -> None:
    url = _with_password(pg.url)
    with Cluster(1, database_url=url, redis_url=None, workdir=tmp_path) as cluster:
        replica = cluster.replicas[0]
        assert http_json(replica.url + "/readyz")[2]["database"] == "ok"
        _pg_admin(f'DROP DATABASE "{pg.name}" WITH (FORCE)')

        async def unready() -> object:
            status, _, body = http_json(replica.url + "/readyz")
            return body if status == 503 else None

        body = asyncio.run(eventually(unready, timeout=30, what="readyz 503"))
        assert body["database"] == "unreachable", body  # type: ignore[index]
        assert "does not exist" not in str(body) and pg.name not in str(body)
        asyncio.run(eventually(lambda: "readiness: database unreachable" in replica.tail(200),
                               timeout=30, what="the reason in the log"))
    log = replica.log_path.read_text()
    assert pg.name in log  # the detail is kept for the operator ...
    assert PASSWORD not in log  # ... without the password
