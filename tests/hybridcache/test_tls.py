"""rediss:// with a private CA (made here with trustme) against a real
redis-server on a TLS port: the library and ``cache_operator apply``
connect with REDIS_TLS_CA_FILE, a client without the CA is refused with a
readable error, and client certificates work when the server requires them.
(The catalog's REDIS_TLS_CA_FILE is tested in tests/chart/test_ca_bundle.py.)"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import trustme
from hybridcache import CacheOptions, HybridCache
from hybridcache.redis_clients import redis_client
from hybridcache.redis_url import with_tls_env

from tests.support.ports import free_port
from tests.support.redis_sentinel import Sentinels, TlsFiles
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Tls:
    port: int
    ca: Path
    cert: Path  # a client certificate the CA issued
    key: Path

    def env(self, *, client_cert: bool) -> dict[str, str]:
        env = {"REDIS_TLS_CA_FILE": str(self.ca)}
        if client_cert:
            env |= {"REDIS_TLS_CERT_FILE": str(self.cert), "REDIS_TLS_KEY_FILE": str(self.key)}
        return env

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"


def _tls_server(tmp: Path, *, clients_need_certs: bool) -> Iterator[Tls]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("hybridcache-test-client")
    files = {"ca.pem": ca.cert_pem, "server.pem": server.cert_chain_pems[0],
             "server.key": server.private_key_pem, "client.pem": client.cert_chain_pems[0],
             "client.key": client.private_key_pem}
    for name, blob in files.items():
        blob.write_to_path(str(tmp / name))
    port = free_port()
    with RedisServer(args=(
            "--tls-port", str(port), "--tls-cert-file", str(tmp / "server.pem"),
            "--tls-key-file", str(tmp / "server.key"), "--tls-ca-cert-file", str(tmp / "ca.pem"),
            "--tls-auth-clients", "yes" if clients_need_certs else "no")):
        yield Tls(port, tmp / "ca.pem", tmp / "client.pem", tmp / "client.key")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    yield from _tls_server(tmp_path_factory.mktemp("tls"), clients_need_certs=False)


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    yield from _tls_server(tmp_path_factory.mktemp("mtls"), clients_need_certs=True)


async def test_the_library_connects_with_the_ca_bundle(tls: Tls) -> None:
    url = with_tls_env(tls.url, tls.env(client_cert=False))
    async with HybridCache(CacheOptions(redis_url=url, node_id="tls")) as cache:
        await cache.wait_connected()
        assert await cache.get_or_create("k", _const("v")) == "v"
    check = aioredis.Redis(host="127.0.0.1", port=tls.port, ssl=True, ssl_ca_certs=str(tls.ca))
    assert await check.exists("hc:e:k") == 1
    await check.aclose()


async def test_without_the_ca_the_server_is_not_trusted(
        tls: Tls, caplog: pytest.LogCaptureFixture) -> None:
    client = redis_client(tls.url, socket_timeout=2)
    with pytest.raises(aioredis.ConnectionError, match="certificate verify failed"):
        await client.ping()
    await client.aclose()
    caplog.set_level(logging.WARNING, logger="hybridcache")
    async with HybridCache(CacheOptions(redis_url=tls.url, node_id="untrusting",
                                        socket_timeout=1.0)) as cache:
        assert not cache.connected  # runs on L1 + factory, says why
        assert await cache.get_or_create("k", _const("db")) == "db"
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


async def test_client_certificates_when_the_server_requires_them(mtls: Tls) -> None:
    without = redis_client(with_tls_env(mtls.url, mtls.env(client_cert=False)) or "",
                           socket_timeout=2)
    with pytest.raises(aioredis.ConnectionError):
        await without.ping()
    await without.aclose()
    url = with_tls_env(mtls.url, mtls.env(client_cert=True))
    async with HybridCache(CacheOptions(redis_url=url, node_id="mtls")) as cache:
        await cache.wait_connected()
        assert await cache.get_or_create("k", _const("v")) == "v"


def test_operator_apply_with_a_client_certificate(mtls: Tls) -> None:
    command = [sys.executable, "-m", "cache_operator", "apply", "-f",
               str(ROOT / "operator/examples/policies.yaml")]
    base = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    base["REDIS_URL"] = mtls.url
    ok = subprocess.run(command, env=base | mtls.env(client_cert=True),
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(command, env=base | mtls.env(client_cert=False),
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "error: cannot publish to rediss://" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.slow
async def test_sentinel_over_tls_follows_a_failover(tmp_path: Path) -> None:
    """rediss+sentinel://: TLS to the sentinels and to the servers, which
    also replicate and are monitored over TLS; the cache follows a kill -9
    of the master, and a client without the CA finds no master."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    files = TlsFiles(tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key")
    ca.cert_pem.write_to_path(str(files.ca))
    leaf.cert_chain_pems[0].write_to_path(str(files.cert))
    leaf.private_key_pem.write_to_path(str(files.key))
    with Sentinels(tls=files) as group:
        untrusting = redis_client(group.url(), socket_timeout=2)
        with pytest.raises(aioredis.ConnectionError,
                           match=r"no master 'hcmaster' from the sentinels: .*certificate verify"):
            await untrusting.ping()
        await untrusting.aclose()
        url = with_tls_env(group.url(), {"REDIS_TLS_CA_FILE": str(files.ca)})
        cache = HybridCache(CacheOptions(redis_url=url, node_id="tls-sentinel",
                                         heartbeat_interval=0.2, heartbeat_timeout=1.0,
                                         reconnect_backoff_max=0.2, socket_timeout=0.5))
        await cache.start()
        try:
            await cache.wait_connected()
            assert await cache.get_or_create("k", _const("v1")) == "v1"
            group.wait_failover(group.kill_master())
            await eventually(lambda: cache.connected and cache.stats().resyncs, timeout=20,
                             what="the cache on the promoted master, over TLS")
            await cache.remove("k")
            assert await cache.get_or_create("k", _const("v2")) == "v2"
        finally:
            await cache.close()


def _const(value: object):  # type: ignore[no-untyped-def]
    async def load() -> object:
        return value
    return load
