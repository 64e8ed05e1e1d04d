"""The chart's Redis ACL, run for real: the rules, the start script and the
passwords the chart renders start a private redis-server; the real catalog (a
replica process) and the real `cache_operator apply` (plus the operator's
fleet round and unpublish) work with their own users, and Redis logs no
refusal for them; each user is refused FLUSHALL, CONFIG, DEBUG, KEYS and keys
outside its patterns. The catalog's password holds `@ : / # ?`, so the URL the
chart builds (percent-encoded) is proven too."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.chart.render import container, env_of, one, pod_spec, render
from tests.support.catalog_cluster import Cluster, http_json, seed_database
from tests.support.redis_server import free_port
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
CATALOG_PASSWORD = "p@ss:w/o#r?d %+"
PASSWORDS = ("--set-string", f"redis.users.catalog.password={CATALOG_PASSWORD}",
             "--set-string", "redis.users.operator.password=op-pw",
             "--set-string", "redis.password=admin-pw")
WRITE_TOKEN = "acl-test-token"
HOST = "t-hybrid-catalog-redis:6379"


@dataclass
class ChartRedis:
    port: int
    urls: dict[str, str]  # user -> URL as the pods get it, pointed at this server
    admin: redis.Redis
    probe: list[str]
    proc: subprocess.Popen[bytes]


def _secret(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    data = one(docs, "Secret", name)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


@pytest.fixture(scope="module")
def chart_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartRedis]:
    docs = render(None, *PASSWORDS)
    sts = one(docs, "StatefulSet", "-redis")
    c = container(sts, "redis")
    acl = one(docs, "ConfigMap", "-redis-acl")["data"]
    secret = _secret(docs, "-redis")
    work = tmp_path_factory.mktemp("chart-redis")
    rules, secrets = work / "rules", work / "secrets"
    rules.mkdir()
    secrets.mkdir()
    # Lay the volumes out as the pod sees them (the mounts' items, by key).
    for name, text in acl.items():
        (rules if name.endswith(".acl") else work).joinpath(name).write_text(text)
    (secret_volume,) = [v for v in pod_spec(sts)["volumes"] if v["name"] == "acl-secrets"]
    for item in secret_volume["secret"]["items"]:
        (secrets / item["path"]).write_text(secret[item["key"]])
    assert c["command"] == ["sh", "/etc/redis-acl/start-redis.sh"]
    port = free_port()
    args = list(c["args"])
    args[args.index("--port") + 1] = str(port)
    args[args.index("--dir") + 1] = str(work)
    env = dict(os.environ, REDIS_ACL_RULES=str(rules), REDIS_SECRETS=str(secrets),
               REDIS_ACL_FILE=str(work / "users.acl"))
    proc = subprocess.Popen(["sh", str(work / "start-redis.sh"), *args, "--bind", "127.0.0.1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    admin = redis.Redis(port=port, password=secret["redis-password"])

    def up() -> bool:
        assert proc.poll() is None, "redis-server exited: the rendered ACL was refused"
        try:
            return bool(admin.ping())
        except redis.ConnectionError:
            return False

    asyncio.run(eventually(up, timeout=10, what="the chart's redis-server to start"))
    urls = {user: secret[f"{user}-url"].replace(HOST, f"127.0.0.1:{port}")
            for user in ("catalog", "operator")}
    probe = c["readinessProbe"]["exec"]["command"]
    try:
        yield ChartRedis(port, urls, admin, probe, proc)
    finally:
        admin.close()
        proc.terminate()
        proc.wait(10)


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


def _refusals(chart_redis: ChartRedis, user: str) -> list[dict[str, Any]]:
    """What Redis refused this user, except CLIENT SETINFO (redis-py sends it
    on connect and ignores the refusal)."""
    entries: list[dict[str, Any]] = chart_redis.admin.acl_log()  # type: ignore[assignment]
    return [e for e in entries if e["username"] == user and "setinfo" not in str(e["object"])]


def test_urls_carry_each_user_and_the_encoded_password(chart_redis: ChartRedis) -> None:
    assert chart_redis.urls["catalog"].startswith("redis://catalog:p%40ss%3Aw%2Fo%23r%3Fd%20%25%2B@")
    assert chart_redis.urls["operator"].startswith("redis://operator:op-pw@")
    with _client(chart_redis.urls["catalog"]) as c:
        assert c.ping()


def test_catalog_replica_serves_reads_and_writes_as_its_user(
        chart_redis: ChartRedis, tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
    seed_database(db, 20)
    chart_redis.admin.acl_log_reset()
    with Cluster(1, database_url=db, redis_url=chart_redis.urls["catalog"],
                 workdir=tmp_path / "replicas",
                 extra_env={"CATALOG_WRITE_TOKEN": WRITE_TOKEN}) as cluster:
        url = cluster.urls[0]
        status, _, product = http_json(url + "/products/3")
        assert status == 200
        assert http_json(url + "/products/3")[0] == 200
        assert http_json(url + "/products?limit=5")[0] == 200
        status, _, _ = http_json(url + "/products/3/price", method="PUT",
                                 body={"price": "12.50"}, token=WRITE_TOKEN)
        assert status == 200
        status, _, after = http_json(url + "/products/3")
        assert status == 200 and after["price"] != product["price"]
        # The cache really is in Redis (written by the catalog user).
        assert chart_redis.admin.exists("hc:nodes")
        assert chart_redis.admin.keys("hc:e:*")
        assert http_json(url + "/readyz")[2]["redis"] == "ok"
    assert _refusals(chart_redis, "catalog") == []


def test_operator_apply_fleet_and_unpublish_as_its_user(chart_redis: ChartRedis) -> None:
    chart_redis.admin.acl_log_reset()
    done = subprocess.run(
        [sys.executable, "-m", "cache_operator", "apply", "-f",
         str(ROOT / "operator/examples/policies.yaml")],
        env=dict(os.environ, REDIS_URL=chart_redis.urls["operator"]),
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert chart_redis.admin.hget("hc:policies", "price") is not None

    from cache_operator.config import Config
    from cache_operator.fleet import FleetMonitor
    from cache_operator.publisher import PolicyPublisher
    from hybridcache.keys import Keys
    from redis.asyncio import Redis

    async def operate() -> tuple[bool, int]:
        client = Redis.from_url(chart_redis.urls["operator"], socket_timeout=5)
        try:
            keys = Keys("hc:")
            publisher = PolicyPublisher(client, keys)
            monitor = FleetMonitor(client, keys, Config(probe_interval=0.2), publisher)
            snap = await monitor.round()
            await publisher.acks("price")
            removed = await publisher.unpublish("country")
            return snap.redis_ok, removed
        finally:
            await client.aclose()

    redis_ok, removed = asyncio.run(operate())
    assert redis_ok and removed == 1
    assert _refusals(chart_redis, "operator") == []


def test_catalog_may_use_the_wire_revision_2_channels(chart_redis: ChartRedis) -> None:
    """A replica subscribes to a key's fill channel while it waits for it and
    to its own acks channel, and publishes acks and fill notices there (the
    single-replica test above never waits for another replica's lease)."""
    with _client(chart_redis.urls["catalog"]) as c:
        pubsub = c.pubsub()
        pubsub.subscribe("hc:fill:product:1", "hc:acks:replica-1")
        confirmed = [pubsub.get_message(timeout=5) for _ in range(2)]
        assert [m["type"] for m in confirmed if m] == ["subscribe", "subscribe"]
        pubsub.unsubscribe("hc:fill:product:1")
        assert c.publish("hc:acks:replica-1", b"{}") == 1
        assert c.publish("hc:fill:product:1", b"product:1") == 0
        pubsub.close()
    for command in (("SUBSCRIBE", "hc:fill:product:1"), ("PUBLISH", "hc:acks:replica-1", "x")):
        verdict = chart_redis.admin.execute_command("ACL", "DRYRUN", "operator", *command)
        assert b"no permissions" in verdict  # the operator's channel is the backplane only


FORBIDDEN = [("FLUSHALL",), ("CONFIG", "GET", "maxmemory"), ("DEBUG", "SLEEP", "0"),
             ("KEYS", "*"), ("FLUSHDB",), ("SHUTDOWN", "NOSAVE"), ("ACL", "LIST")]


@pytest.mark.parametrize("user", ["catalog", "operator"])
@pytest.mark.parametrize("command", FORBIDDEN, ids=lambda c: c[0])
def test_each_user_is_refused_admin_commands(chart_redis: ChartRedis, user: str,
                                             command: tuple[str, ...]) -> None:
    # The ACL's own verdict (DEBUG is also disabled by the server's default
    # enable-debug-command, which answers before the ACL when run for real).
    verdict = chart_redis.admin.execute_command("ACL", "DRYRUN", user, *command)
    assert b"no permissions" in verdict
    if command[0] != "DEBUG":
        with _client(chart_redis.urls[user]) as c, \
                pytest.raises(redis.exceptions.NoPermissionError):
            c.execute_command(*command)
    assert chart_redis.proc.poll() is None


@pytest.mark.parametrize(("user", "command"), [
    ("catalog", ("GET", "other:key")),
    ("catalog", ("SET", "other:key", "x")),
    ("catalog", ("PUBLISH", "other:channel", "x")),
    ("operator", ("GET", "other:key")),
    ("operator", ("GET", "hc:e:product:1")),          # cache entries are not the operator's
    ("operator", ("SET", "hc:clock", "1")),
    ("operator", ("HSET", "hc:stats:replica-1", "l1_hit:price", "1")),  # read-only for it
    ("operator", ("ZADD", "hc:nodes", "1", "fake-replica")),            # read-only for it
    ("operator", ("PUBLISH", "hc:fill", "x")),
])
def test_each_user_is_refused_keys_outside_its_patterns(
        chart_redis: ChartRedis, user: str, command: tuple[str, ...]) -> None:
    with _client(chart_redis.urls[user]) as c, pytest.raises(redis.exceptions.NoPermissionError):
        c.execute_command(*command)


def test_the_probe_authenticates_from_the_environment(chart_redis: ChartRedis) -> None:
    """REDISCLI_AUTH, never a password on the command line."""
    docs = render(None, *PASSWORDS)
    c = container(one(docs, "StatefulSet", "-redis"), "redis")
    assert env_of(c)["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"]["key"] == "redis-password"
    command = [part.replace("-p 6379", f"-p {chart_redis.port}") for part in chart_redis.probe]
    assert " -a " not in " ".join(command) and "admin-pw" not in " ".join(command)
    ok = subprocess.run(command, env=dict(os.environ, REDISCLI_AUTH="admin-pw"), timeout=10)
    assert ok.returncode == 0
    wrong = subprocess.run(command, env=dict(os.environ, REDISCLI_AUTH="wrong"), timeout=10,
                           capture_output=True)
    assert wrong.returncode != 0
    # Nothing on the server's own command line either.
    cmdline = Path(f"/proc/{chart_redis.proc.pid}/cmdline").read_bytes()
    assert b"admin-pw" not in cmdline and b"op-pw" not in cmdline


def test_the_checker_has_no_redis_user() -> None:
    """It talks HTTP only: no Redis URL in its pod, no Redis client in its code."""
    docs = render(None)
    env = env_of(container(one(docs, "Deployment", "-checker"), "checker"))
    assert not {"REDIS_URL", "REDIS_PASSWORD"} & set(env)
    sources = (ROOT / "services/checker/catalog_checker").rglob("*.py")
    assert not [p for p in sources if "import redis" in p.read_text()
                or "from redis" in p.read_text()]
    users = one(docs, "ConfigMap", "-redis-acl")["data"]
    assert sorted(k for k in users if k.endswith(".acl")) == ["catalog.acl", "operator.acl"]
