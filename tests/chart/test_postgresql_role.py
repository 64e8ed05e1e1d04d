"""The chart's PostgreSQL app role, run for real: the init script the chart
renders (app-role.psql) runs as the admin against a private database on the
local PostgreSQL; then, connected through the DATABASE_URL the chart stores
(its password percent-encoded), `catalog seed` creates and fills the schema,
a replica serves reads and writes, and a trigger with a plpgsql function (what
a migration adds) can be created; but the role is no superuser and cannot
create roles or databases or make itself a superuser."""

from __future__ import annotations

import asyncio
import base64
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart.render import container, env_of, one, render
from tests.support.catalog_cluster import Cluster, http_json, seed_database

pytestmark = pytest.mark.postgres

APP_PASSWORD = "p@ss:w/o#r?d"
PG = "postgresql://postgres@127.0.0.1:5432/"


def _admin(sql: str, database: str = "postgres") -> list[Any]:
    import asyncpg

    async def run() -> list[Any]:
        conn = await asyncpg.connect(PG + database, timeout=5)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


def _as_app(user: str, database: str, sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(f"postgresql://{user}@127.0.0.1:5432/{database}", timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


class Rendered:
    def __init__(self, user: str, database: str) -> None:
        docs = render(None, "--set", f"postgresql.username={user}",
                      "--set", f"postgresql.database={database}",
                      "--set-string", f"postgresql.password={APP_PASSWORD}")
        init = one(docs, "ConfigMap", "-postgresql-init")["data"]
        self.psql: str = init["app-role.psql"]
        self.shell: str = init["10-app-role.sh"]
        data = one(docs, "Secret", "-postgresql")["data"]
        self.secret = {k: base64.b64decode(v).decode() for k, v in data.items()}
        self.postgres_env = env_of(container(one(docs, "StatefulSet", "-postgresql"), "postgresql"))


@pytest.fixture(scope="module")
def app_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Rendered]]:
    try:
        _admin("SELECT 1")
    except Exception as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 unreachable: {exc}")
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    suffix = secrets.token_hex(4)
    user, database = f"catalog_app_{suffix}", f"catalog_role_{suffix}"
    rendered = Rendered(user, database)
    script = tmp_path_factory.mktemp("pg-init") / "app-role.psql"
    script.write_text(rendered.psql)
    _admin(f'CREATE DATABASE "{database}"')
    try:
        for _ in range(2):  # idempotent: a second run changes nothing and fails nothing
            subprocess.run(
                ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-X", "-q",
                 "-v", "ON_ERROR_STOP=1", "-v", f"app_user={user}",
                 "-v", f"app_password={APP_PASSWORD}", "-v", f"app_db={database}",
                 "-f", str(script)],
                check=True, capture_output=True, timeout=30)
        yield user, database, rendered
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        _admin(f'DROP ROLE IF EXISTS "{user}"')


def test_the_entrypoint_script_passes_what_the_sql_uses(app_db: tuple[str, str, Rendered]) -> None:
    _, _, rendered = app_db
    for var in ("app_user", "app_password", "app_db"):
        assert f"-v {var}=" in rendered.shell
        assert f":'{var}'" in rendered.psql or f':"{var}"' in rendered.psql
    env = rendered.postgres_env
    assert env["POSTGRES_USER"]["value"] == "postgres"
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "admin-password"
    assert env["APP_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "postgres-password"
    assert rendered.secret["postgres-password"] == APP_PASSWORD
    assert rendered.secret["admin-password"] != APP_PASSWORD


def test_the_role_is_not_privileged(app_db: tuple[str, str, Rendered]) -> None:
    user, database, _ = app_db
    (row,) = _admin(f"SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls,"
                    f" rolcanlogin FROM pg_roles WHERE rolname = '{user}'")
    assert tuple(row) == (False, False, False, False, False, True)
    (owner,) = _admin("SELECT pg_get_userbyid(datdba) FROM pg_database"
                      f" WHERE datname = '{database}'")
    assert owner[0] == user
    import asyncpg

    for sql in (f'CREATE ROLE "x_{user}"', f'CREATE DATABASE "x_{database}"',
                f'ALTER ROLE "{user}" SUPERUSER', f'ALTER ROLE "{user}" CREATEROLE',
                "COPY (SELECT 1) TO PROGRAM 'true'"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            _as_app(user, database, sql)


def test_the_role_seeds_serves_and_migrates(app_db: tuple[str, str, Rendered],
                                           tmp_path: Path) -> None:
    user, database, rendered = app_db
    url = rendered.secret["database-url"].replace(
        "t-hybrid-catalog-postgresql:5432", "127.0.0.1:5432")
    assert url == (f"postgresql+asyncpg://{user}:p%40ss%3Aw%2Fo%23r%3Fd@127.0.0.1:5432/{database}")
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    assert (parsed.username, parsed.password, parsed.database) == (user, APP_PASSWORD, database)
    seed_database(url, 10)
    tables = _admin("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'",
                    database)
    assert tables and {r["tableowner"] for r in tables} == {user}
    with Cluster(1, database_url=url, redis_url=None, workdir=tmp_path,
                 extra_env={"CATALOG_WRITE_TOKEN": "t"}) as cluster:
        base = cluster.urls[0]
        assert http_json(base + "/products/2")[0] == 200
        status, _, body = http_json(base + "/products/2/price", method="PUT",
                                    body={"price": "3.25"}, token="t")
        assert status == 200, body
        assert http_json(base + "/products/2")[2]["price"] == "3.25"
    # What a migration adds (an outbox fed by triggers): allowed on its own tables.
    _as_app(user, database, """
        CREATE TABLE outbox_probe (id bigserial PRIMARY KEY, product_id int NOT NULL);
        CREATE FUNCTION outbox_probe_fn() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO outbox_probe (product_id) VALUES (NEW.product_id); RETURN NEW; END $$;
        CREATE TRIGGER outbox_probe_trg AFTER UPDATE ON prices
          FOR EACH ROW EXECUTE FUNCTION outbox_probe_fn();
        UPDATE prices SET cents = cents + 1 WHERE product_id = 1;
    """)
    (count,) = _admin("SELECT count(*) AS n FROM outbox_probe", database)
    assert count["n"] == 1
