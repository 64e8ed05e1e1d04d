"""CA bundles for an external Redis and PostgreSQL with a private CA: the
chart mounts the Secret/ConfigMap read-only and points REDIS_TLS_CA_FILE,
PGSSLROOTCERT and PGSSLMODE at it; the catalog and `cache_operator apply`
trust that CA on a real TLS redis-server (certificates made by openssl in the
test) and fail without it."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.chart.render import container, env_of, one, pod_spec, render
from tests.support.catalog_cluster import Cluster, http_json, seed_database
from tests.support.redis_server import free_port
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
EXTERNAL = ("--set", "redis.enabled=false",
            "--set", "redis.external.url=rediss://catalog:pw@redis.example:6380/0",
            "--set", "redis.external.caBundle.secretName=redis-ca",
            "--set", "postgresql.enabled=false",
            "--set", "postgresql.external.url=postgresql+asyncpg://app:pw@db.example/catalog",
            "--set", "postgresql.external.caBundle.configMapName=pg-ca",
            "--set", "postgresql.external.caBundle.key=root.pem")


def _mounts(obj: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container(obj, name).get("volumeMounts", [])}


def _volumes(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec(obj)["volumes"]}


def test_bundles_are_mounted_read_only_where_they_are_used() -> None:
    docs = render(None, *EXTERNAL)
    catalog = one(docs, "Deployment", "-catalog")
    operator = one(docs, "Deployment", "-operator")
    seed = one(docs, "Job", "-seed")
    redis_ca, pg_ca = "/etc/hybrid-catalog/redis-ca", "/etc/hybrid-catalog/postgresql-ca"
    for obj, name, wants in [(catalog, "catalog", {redis_ca, pg_ca}),
                             (operator, "operator", {redis_ca}),
                             (seed, "seed", {pg_ca})]:
        mounts = _mounts(obj, name)
        assert {p for p in mounts if p.endswith("-ca")} == wants
        assert all(mounts[p]["readOnly"] for p in wants)
        env = env_of(container(obj, name))
        assert ("REDIS_TLS_CA_FILE" in env) == (redis_ca in wants)
        assert ("PGSSLROOTCERT" in env) == (pg_ca in wants)
        if redis_ca in wants:
            assert env["REDIS_TLS_CA_FILE"]["value"] == f"{redis_ca}/ca.crt"
            assert _volumes(obj)["redis-ca"]["secret"] == {
                "secretName": "redis-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
        if pg_ca in wants:
            assert env["PGSSLROOTCERT"]["value"] == f"{pg_ca}/root.pem"
            assert env["PGSSLMODE"]["value"] == "verify-full"
            assert _volumes(obj)["postgresql-ca"]["configMap"]["name"] == "pg-ca"


def test_no_bundle_no_mount() -> None:
    docs = render(None)
    env = env_of(container(one(docs, "Deployment", "-catalog"), "catalog"))
    assert "REDIS_TLS_CA_FILE" not in env and "PGSSLROOTCERT" not in env


def test_secret_and_configmap_together_are_refused() -> None:
    from tests.chart.render import CHART, run_helm

    done = run_helm("template", "t", str(CHART), "--set", "redis.enabled=false",
                    "--set", "redis.external.url=rediss://x:6380/0",
                    "--set", "redis.external.caBundle.secretName=a",
                    "--set", "redis.external.caBundle.configMapName=b")
    assert done.returncode != 0 and "caBundle" in done.stderr


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "2", "-subj", "/CN=private test CA", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(d / "server.crt"), "--tls-key-file", str(d / "server.key"),
         "--tls-ca-cert-file", str(d / "ca.crt"), "--tls-auth-clients", "no",
         "--save", "", "--dir", str(d)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(d / "ca.crt"))

    def up() -> bool:
        assert proc.poll() is None, "redis-server refused the TLS settings"
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        asyncio.run(eventually(up, timeout=10, what="the TLS redis-server to start"))
        yield port, d / "ca.crt"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def test_catalog_trusts_the_mounted_ca(tls_redis: tuple[int, Path], tmp_path: Path) -> None:
    port, ca = tls_redis
    db = f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
    seed_database(db, 5)
    url = f"rediss://127.0.0.1:{port}/0"
    with Cluster(1, database_url=db, redis_url=url, workdir=tmp_path / "with",
                 extra_env={"REDIS_TLS_CA_FILE": str(ca)}) as cluster:
        assert http_json(cluster.urls[0] + "/readyz")[2]["redis"] == "ok"
        assert http_json(cluster.urls[0] + "/products/1")[0] == 200
    # Without the bundle the server's certificate is not trusted: L1 + database only.
    without = Cluster(1, database_url=db, redis_url=url, workdir=tmp_path / "without")
    replica = without.replicas[0]
    replica.start()

    def ready() -> Any:
        try:
            status, _, body = http_json(replica.url + "/readyz", timeout=1.0)
        except OSError:
            return None
        return body if status == 200 else None

    try:
        body = asyncio.run(eventually(ready, timeout=30, what="the replica without the CA"))
        assert body["redis"].startswith("degraded")
        assert "CERTIFICATE_VERIFY_FAILED" in replica.tail(200)
    finally:
        without.stop()


def test_apply_trusts_the_mounted_ca(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    base = dict(os.environ, REDIS_URL=f"rediss://127.0.0.1:{port}/0")
    base.pop("REDIS_TLS_CA_FILE", None)
    command = [sys.executable, "-m", "cache_operator", "apply", "-f",
               str(ROOT / "operator/examples/policies.yaml")]
    ok = subprocess.run(command, env=dict(base, REDIS_TLS_CA_FILE=str(ca)),
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(command, env=base, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "certificate verify failed" in refused.stderr
    plain = subprocess.run(command, env=dict(base, REDIS_URL=f"redis://127.0.0.1:{port}/0",
                                             REDIS_TLS_CA_FILE=str(ca)),
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode != 0 and "needs a TLS URL (rediss://" in plain.stderr
    assert "Traceback" not in plain.stderr


def test_a_ca_file_needs_a_tls_url(tmp_path: Path) -> None:
    from cache_operator.config import Config, ConfigError
    from catalog.config import Settings

    with pytest.raises(ValueError, match="rediss://"):
        Settings.from_env({"REDIS_URL": "redis://h:6379/0", "REDIS_TLS_CA_FILE": "/ca.crt"})
    with pytest.raises(ConfigError, match="rediss://"):
        Config.from_env({"REDIS_URL": "redis://h:6379/0", "REDIS_TLS_CA_FILE": "/ca.crt"})
    ca = tmp_path / "a b.crt"
    ca.write_text("not read until a connection is made\n")
    s = Settings.from_env({"REDIS_URL": "rediss://h:6380/0?socket_timeout=1",
                           "REDIS_TLS_CA_FILE": str(ca)})
    assert s.redis_url == ("rediss://h:6380/0?socket_timeout=1&ssl_ca_certs="
                           + str(ca).replace("/", "%2F").replace(" ", "%20"))
    # A bundle that cannot be read is named at start, not at the first connection.
    with pytest.raises(ValueError, match="REDIS_TLS_CA_FILE: cannot read"):
        Settings.from_env({"REDIS_URL": "rediss://h:6380/0",
                           "REDIS_TLS_CA_FILE": str(tmp_path / "missing.crt")})
