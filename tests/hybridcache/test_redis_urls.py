"""REDIS_URL forms (redis_url.py): what each says, what is refused and how,
with the password never shown; and a Redis that went back in time (a
promoted replica that lacks the last writes) is a lost state, not a truth."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from hybridcache import CacheOptions, HybridCache
from hybridcache.keys import Keys
from hybridcache.redis_clients import redis_client
from hybridcache.redis_url import parse_redis_url, redact, secrets_of, with_tls_env

from tests.hybridcache.conftest import MakeNode, Source
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

SECRET = "s3cr%40t"  # percent-encoded "s3cr@t": both forms must stay hidden


def _hidden(text: str) -> bool:
    return "s3cr" not in text


def test_the_forms_and_what_they_name() -> None:
    one = parse_redis_url(f"redis://app:{SECRET}@cache.example:6380/3")
    assert (one.mode, one.tls, one.hosts) == ("standalone", False, (("cache.example", 6380),))
    assert one.connection == {"username": "app", "password": "s3cr@t", "db": 3}
    tls = parse_redis_url("rediss://cache.example/0?ssl_ca_certs=%2Fca.pem")
    assert tls.tls and tls.hosts == (("cache.example", 6379),)
    assert tls.connection["ssl_ca_certs"] == "/ca.pem"
    sentinel = parse_redis_url(
        f"redis+sentinel://app:{SECRET}@s1:26379,s2,[::1]:26380/mymaster/2")
    assert sentinel.mode == "sentinel" and sentinel.master == "mymaster"
    assert sentinel.hosts == (("s1", 26379), ("s2", 26379), ("::1", 26380))
    assert sentinel.connection["db"] == 2 and sentinel.sentinel_auth == {}
    own = parse_redis_url("redis+sentinel://:pw@s1/m?sentinel_username=sen&sentinel_password=x")
    assert own.sentinel_auth == {"username": "sen", "password": "x"}
    assert own.connection["db"] == 0
    assert parse_redis_url("rediss+sentinel://s1,s2/m/1").tls
    assert parse_redis_url("unix:///run/redis.sock?db=2").connection["db"] == 2
    cluster = parse_redis_url("redis+cluster://app:pw@h1:7000,h2:7001,h3")
    assert cluster.mode == "cluster" and not cluster.tls
    assert cluster.hosts == (("h1", 7000), ("h2", 7001), ("h3", 6379))
    assert cluster.connection["username"] == "app" and cluster.connection["password"] == "pw"
    assert parse_redis_url("rediss+cluster://h1:7000/0").tls


@pytest.mark.parametrize(("url", "problem"), [
    ("", "REDIS_URL is empty"),
    (f"http://:{SECRET}@h:6379/0", "unknown scheme 'http'"),
    (f"cache.example:{SECRET}", "not a URL"),
    (f"redis://:{SECRET}@h:99999/0", "'99999' is not a TCP port"),
    (f"redis://:{SECRET}@h:port/0", "'port' is not a TCP port"),
    (f"redis://:{SECRET}@h/zero", "the database must be a number"),
    (f"redis://:{SECRET}@/0", "no host"),
    (f"redis://:{SECRET}@a:1,b:2/0", "several hosts need redis+sentinel://"),
    (f"redis://:{SECRET}@h/0?colour=blue", "unknown query argument 'colour'"),
    (f"redis://:{SECRET}@h/0?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
    (f"redis+sentinel://:{SECRET}@s1:26379", "no master name"),
    (f"redis+sentinel://:{SECRET}@s1:26379/m/x", "the database must be a number"),
    (f"redis+sentinel://:{SECRET}@s1/m/0/extra", "unexpected path"),
    (f"redis://:{SECRET}@h/0?sentinel_password={SECRET}", "need redis+sentinel://"),
    (f"redis+cluster://:{SECRET}@h1:7000,h2:7001/3", "Redis Cluster has only database 0"),
    (f"redis+cluster://:{SECRET}@h1:7000,h2:x", "'x' is not a TCP port"),
])
def test_a_malformed_url_is_named_with_the_password_hidden(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"^REDIS_URL") as caught:
        CacheOptions(redis_url=url)
    message = str(caught.value)
    assert problem in message and _hidden(message), message


def test_redaction_keeps_where_and_hides_what() -> None:
    url = f"redis+sentinel://app:{SECRET}@s1:26379,s2/m/0?sentinel_password=x%2Fy&db=0"
    shown = redact(url)
    assert shown.startswith("redis+sentinel://app:***@s1:26379,s2/m/0?")
    assert "sentinel_password=***" in shown and "x%2Fy" not in shown and _hidden(shown)
    # A password holding '@' and '/' unencoded: hidden whole, not split at its '@'.
    assert redact("redis://:p@ss/w@h:6379/0") == "redis://:***@h:6379/0"
    assert set(secrets_of(url)) >= {SECRET, "s3cr@t", "x/y"}


def test_tls_files_come_from_the_environment(tmp_path: pytest.TempPathFactory) -> None:
    ca = tmp_path / "ca.pem"  # type: ignore[operator]
    ca.write_text("-")
    env = {"REDIS_TLS_CA_FILE": str(ca), "REDIS_TLS_CERT_FILE": str(ca),
           "REDIS_TLS_KEY_FILE": str(ca)}
    url = with_tls_env("rediss+sentinel://s1/m/0", env)
    assert url is not None
    target = parse_redis_url(url)
    assert {target.connection[k] for k in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")} == {
        str(ca)}
    assert with_tls_env("redis://h/0", {}) == "redis://h/0"
    with pytest.raises(ValueError, match="needs a TLS URL") as caught:
        with_tls_env(f"redis://:{SECRET}@h/0", env)
    assert _hidden(str(caught.value))
    with pytest.raises(ValueError, match="go together"):
        with_tls_env("rediss://h/0", {"REDIS_TLS_CERT_FILE": str(ca)})


async def test_an_unreachable_sentinel_degrades_and_names_the_url(
        caplog: pytest.LogCaptureFixture) -> None:
    """Nobody listens on these ports: the cache starts anyway (L1 + factory),
    says where it tried with the password hidden, and raises nothing."""
    url = f"redis+sentinel://app:{SECRET}@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/m/0"
    caplog.set_level(logging.WARNING, logger="hybridcache")
    async with HybridCache(CacheOptions(redis_url=url, node_id="alone", socket_timeout=0.3,
                                        reconnect_backoff_max=0.2)) as cache:
        assert await cache.get_or_create("k", Source("db")) == "db"
        assert not cache.connected
    text = caplog.text
    assert "redis+sentinel://app:***@127.0.0.1" in text and _hidden(text)


async def test_a_single_client_closes_its_sentinel_connections(
        redis_server: RedisServer) -> None:
    """redis_client (the operator's) on one server and through a sentinel
    URL it cannot reach: errors are redis-py's ConnectionError, never a
    crash, and closing it leaves nothing open."""
    plain = redis_client(redis_server.url, socket_timeout=1)
    assert await plain.ping()
    await plain.aclose()
    nowhere = redis_client(f"redis+sentinel://127.0.0.1:{free_port()}/m/0", socket_timeout=0.3)
    # Per sentinel, where and why: not a client's repr and an exception class.
    with pytest.raises(aioredis.ConnectionError,
                       match=r"no master 'm' from the sentinels: 127\.0\.0\.1:\d+: Error 111"):
        await nowhere.ping()
    await nowhere.aclose()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_a_redis_behind_the_replicas_starts_a_new_epoch(
        make_node: MakeNode, raw: aioredis.Redis) -> None:
    """What a failover to a replica that missed the last writes looks like:
    the state and an entry as they were before an acknowledged invalidation.
    The replicas have received a version above that Redis's clock, so the
    state counts as lost: a new epoch, and the old entry is never served."""
    a, b = await make_node("a"), await make_node("b")
    keys = Keys("hc:")
    assert await a.get_or_create("k", Source("v1")) == "v1"
    assert await b.get_or_create("k", Source("v1")) == "v1"
    before = {key: await raw.dump(key) for key in (keys.state, keys.marks, keys.nodes,
                                                   keys.entry("k"))}
    assert all(before.values())
    result = await a.remove("k", ack_timeout=2.0)
    assert result is not None and result.complete and "b" in result.acked
    epoch = await raw.hget(keys.state, "epoch")
    # The "promoted replica": the writes of that invalidation never arrived.
    for key, dumped in before.items():
        await raw.restore(key, 0, dumped, replace=True)
    resyncs = sum(a.stats().resyncs.values()) + sum(b.stats().resyncs.values())
    await raw.client_kill_filter(_type="normal", skipme=True)
    await raw.client_kill_filter(_type="pubsub", skipme=True)
    await eventually(lambda: a.connected and b.connected and sum(
        a.stats().resyncs.values()) + sum(b.stats().resyncs.values()) >= resyncs + 2,
                     timeout=10, what="both replicas resynchronised")
    assert await raw.hget(keys.state, "epoch") != epoch
    for node in (a, b):
        assert await node.get_or_create("k", Source("v2")) == "v2"


@pytest.mark.parametrize("command", [
    ["-m", "catalog", "serve", "--port", "8999"],
    ["-m", "cache_operator", "apply", "-f", "operator/examples/policies.yaml"],
    ["-m", "cache_operator", "run"],
], ids=["catalog serve", "operator apply", "operator run"])
def test_every_component_names_a_malformed_url_alike(command: list[str]) -> None:
    """Same parser, same words: exit non-zero, the problem named, the
    password masked, no traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, REDIS_URL=f"redis+sentinel://app:{SECRET}@s1:26379,s2:xx/m/0")
    env.pop("REDIS_TLS_CA_FILE", None)
    done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "REDIS_URL redis+sentinel://app:***@s1:26379,s2:xx/m/0: 'xx' is not a TCP port" in out
    assert _hidden(out) and "Traceback" not in out
