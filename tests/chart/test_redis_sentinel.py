"""redis.mode sentinel and redis.tls, rendered and run.

Rendered: a StatefulSet of redis + sentinel pods behind a headless Service,
a PodDisruptionBudget, the app's redis+sentinel:// URLs (every pod listed,
the password encoded), TLS wiring, NetworkPolicies opening the sentinel
port to whom needs it. Run: the chart's own start scripts, rules and
passwords start three "pods" (a redis-server and a sentinel each, on
loopback addresses 127.0.0.11-13 in place of pod DNS names); the catalog's
and the operator's users work through the sentinels, may do nothing else
there, and follow a SIGKILL of the master; the killed pod, restarted, asks
the sentinels and rejoins as a replica of the new master.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from hybridcache import CacheOptions, HybridCache
from hybridcache.redis_clients import redis_client
from hybridcache.redis_url import parse_redis_url

from tests.chart.netpol import KUBE_DNS, Endpoint, allowed, namespaces, release_pod
from tests.chart.render import NAMESPACE, VALUE_SETS, container, env_of, find, one, pod_spec, render
from tests.support.ports import free_port
from tests.support.process import ManagedProcess
from tests.support.waiting import eventually, wait_until

CATALOG_PASSWORD = "p@ss:w/o#r?d %+"
PASSWORDS = ("--set-string", f"redis.users.catalog.password={CATALOG_PASSWORD}",
             "--set-string", "redis.users.operator.password=op-pw",
             "--set-string", "redis.password=admin-pw",
             "--set-string", "redis.sentinel.replicationPassword=repl-pw",
             "--set-string", "redis.sentinel.sentinelPassword=sent-pw")
SENTINEL = VALUE_SETS["sentinel-values"]
TLS = VALUE_SETS["redis-tls-values"]
HOST = "t-hybrid-catalog-redis"


def _secret(docs: list[dict[str, Any]]) -> dict[str, str]:
    data = one(docs, "Secret", "-redis")["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_standalone_stays_the_default() -> None:
    docs = render(None)
    sts = one(docs, "StatefulSet", "-redis")
    assert sts["spec"]["replicas"] == 1
    assert [c["name"] for c in pod_spec(sts)["containers"]] == ["redis"]
    assert not find(docs, "PodDisruptionBudget", "-redis")
    assert _secret(docs)["catalog-url"].startswith("redis://catalog:")


def test_sentinel_mode_renders_pods_budget_and_urls() -> None:
    docs = render(SENTINEL, *PASSWORDS)
    sts = one(docs, "StatefulSet", "-redis")
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    spec = pod_spec(sts)
    assert [c["name"] for c in spec["containers"]] == ["redis", "sentinel"]
    service = one(docs, "Service", "-redis")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert {p["port"] for p in service["spec"]["ports"]} == {6379, 26379}
    pdb = one(docs, "PodDisruptionBudget", "-redis")
    assert pdb["spec"]["minAvailable"] == 2
    secret = _secret(docs)
    for user in ("catalog", "operator"):
        target = parse_redis_url(secret[f"{user}-url"])
        assert target.mode == "sentinel" and target.master == "hybridcache"
        assert target.hosts == tuple((f"{HOST}-{i}.{HOST}.{NAMESPACE}.svc", 26379)
                                     for i in range(3))
        assert target.connection["username"] == user
    assert parse_redis_url(secret["catalog-url"]).connection["password"] == CATALOG_PASSWORD
    assert {"replication-password", "sentinel-password"} <= set(secret)
    # The probes authenticate from the environment, never a command line.
    for c in spec["containers"]:
        assert env_of(c)["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"]["key"] == "redis-password"
        probe = " ".join(c["readinessProbe"]["exec"]["command"])
        assert "-a " not in probe and "admin-pw" not in probe and "pw" not in probe
    acl = one(docs, "ConfigMap", "-redis-acl")["data"]
    assert sorted(k for k in acl if k.endswith(".acl")) == [
        "catalog.acl", "operator.acl", "replication.acl", "sentinel.acl"]


def test_existing_secret_composes_a_sentinel_url() -> None:
    docs = render(SENTINEL, "--set", "redis.existingSecret=mine")
    env = env_of(container(one(docs, "Deployment", "-catalog"), "catalog"))
    url = env["REDIS_URL"]["value"]
    assert url.startswith("redis+sentinel://catalog:$(REDIS_PASSWORD)@t-hybrid-catalog-redis-0.")
    assert url.endswith(":26379/hybridcache/0")


def test_tls_mounts_the_ca_and_uses_rediss() -> None:
    docs = render(TLS, *PASSWORDS)
    assert _secret(docs)["catalog-url"].startswith("rediss+sentinel://catalog:")
    for kind, name in (("Deployment", "catalog"), ("Deployment", "operator")):
        workload = one(docs, kind, f"-{name}")
        env = env_of(container(workload, name))
        assert env["REDIS_TLS_CA_FILE"]["value"] == "/etc/hybrid-catalog/redis-ca/ca.crt"
        (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == "redis-ca"]
        assert volume["secret"] == {"secretName": "t-hybrid-catalog-redis-tls",
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    sts = one(docs, "StatefulSet", "-redis")
    redis_args = container(sts, "redis")["args"]
    assert redis_args[:4] == ["--port", "0", "--tls-port", "6379"]
    for c in pod_spec(sts)["containers"]:
        assert "--tls --cacert /etc/redis-tls/ca.crt" in " ".join(
            c["readinessProbe"]["exec"]["command"])
    cert = one(docs, "Certificate", "-redis-tls")
    assert cert["apiVersion"] == "cert-manager.io/v1"
    assert cert["spec"]["secretName"] == "t-hybrid-catalog-redis-tls"
    assert cert["spec"]["issuerRef"] == {"kind": "Issuer", "name": "redis-ca"}
    assert f"*.{HOST}.{NAMESPACE}.svc" in cert["spec"]["dnsNames"]


def test_an_external_sentinel_url_is_passed_whole() -> None:
    url = "redis+sentinel://app:pw@s1.example:26379,s2.example:26379/prod/0"
    escaped = url.replace(",", "\\,")  # --set splits on commas
    docs = render(None, "--set", "redis.enabled=false", "--set", f"redis.external.url={escaped}",
                  "--set", "networkPolicy.externalRedis.ports={6379,26379}")
    secret = {k: base64.b64decode(v).decode()
              for k, v in one(docs, "Secret", "-redis-external")["data"].items()}
    assert secret["redis-url"] == url
    assert not find(docs, "StatefulSet", "-redis")
    catalog = one(docs, "NetworkPolicy", "-catalog")
    ports = {p["port"] for rule in catalog["spec"]["egress"] for p in rule.get("ports", [])}
    assert 26379 in ports


def test_tls_for_a_standalone_redis_from_an_existing_secret() -> None:
    import kubernetes_validate

    docs = render(None, "--set", "redis.tls.enabled=true", "--set",
                  "redis.tls.existingSecret=my-redis-tls", *PASSWORDS)
    assert _secret(docs)["operator-url"].startswith(f"rediss://operator:op-pw@{HOST}:6379/")
    assert not find(docs, "Certificate")
    sts = one(docs, "StatefulSet", "-redis")
    (tls,) = [v for v in pod_spec(sts)["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["secretName"] == "my-redis-tls"
    assert container(sts, "redis")["args"][:4] == ["--port", "0", "--tls-port", "6379"]
    for doc in (sts, one(docs, "Deployment", "-catalog")):
        kubernetes_validate.validate(doc, "1.37.0", strict=True)


def test_tls_needs_a_certificate_source() -> None:
    from tests.chart.render import CHART, run_helm

    done = run_helm("template", "t", str(CHART), "--set", "redis.tls.enabled=true")
    assert done.returncode != 0 and "redis.tls.existingSecret" in done.stderr
    done = run_helm("template", "t", str(CHART), "--set", "redis.mode=sharded")
    assert done.returncode != 0 and "redis" in done.stderr and "mode" in done.stderr


def test_network_policies_open_the_sentinel_port_where_needed() -> None:
    docs = render(SENTINEL)
    policies = find(docs, "NetworkPolicy")
    ns = namespaces(NAMESPACE, "kube-system")

    def pod(component: str, ip: str) -> Endpoint:
        return release_pod(component, NAMESPACE, ip,
                           {"redis": 6379, "sentinel": 26379} if component == "redis" else None)

    redis_a, redis_b = pod("redis", "10.244.1.1"), pod("redis", "10.244.1.2")
    dns = KUBE_DNS
    for source in ("catalog", "operator"):
        for port in (6379, 26379):
            assert allowed(policies, pod(source, "10.244.1.9"), redis_a, port, ns, "TCP")
    for port in (6379, 26379):  # replication, sentinels watching and gossiping
        assert allowed(policies, redis_a, redis_b, port, ns, "TCP")
        for stranger in ("checker", "seed", "test"):
            assert not allowed(policies, pod(stranger, "10.244.1.8"), redis_a, port, ns, "TCP")
    assert allowed(policies, redis_a, dns, 53, ns, "UDP")
    # Standalone keeps its narrower set: nothing towards a sentinel port.
    standalone = find(render(None), "NetworkPolicy")
    assert not allowed(standalone, pod("catalog", "10.244.1.9"), redis_a, 26379, ns, "TCP")


# ------------------------------------------------------------------ run for real


@dataclass
class Pods:
    ips: list[str]
    port: int
    sentinel_port: int
    urls: dict[str, str]
    redis: list[ManagedProcess | None]
    start_redis: Any  # (i) -> ManagedProcess


def _admin(ip: str, port: int) -> redis.Redis:
    return redis.Redis(host=ip, port=port, password="admin-pw", socket_timeout=2)


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    docs = render(SENTINEL, *PASSWORDS)
    sts = one(docs, "StatefulSet", "-redis")
    acl = one(docs, "ConfigMap", "-redis-acl")["data"]
    secret = _secret(docs)
    work = tmp_path_factory.mktemp("sentinel-pods")
    rules, secrets = work / "rules", work / "secrets"
    rules.mkdir()
    secrets.mkdir()
    for name, text in acl.items():
        (rules if name.endswith(".acl") else work).joinpath(name).write_text(text)
    (volume,) = [v for v in pod_spec(sts)["volumes"] if v["name"] == "acl-secrets"]
    for item in volume["secret"]["items"]:
        (secrets / item["path"]).write_text(secret[item["key"]])
    rendered_env = {e["name"]: e.get("value") for e in container(sts, "sentinel")["env"]}
    port, sentinel_port = free_port(), free_port()
    ips = [f"127.0.0.{11 + i}" for i in range(3)]
    processes: list[ManagedProcess] = []

    def env(i: int) -> dict[str, str]:
        (work / str(i)).mkdir(exist_ok=True)
        return dict(
            os.environ, REDISCLI_AUTH="admin-pw", REDIS_ACL_RULES=str(rules),
            REDIS_SECRETS=str(secrets), REDIS_ACL_FILE=str(work / str(i) / "users.acl"),
            SENTINEL_CONF=str(work / str(i) / "sentinel.conf"), POD_NAME=f"{HOST}-{i}",
            REDIS_ME=ips[i], REDIS_FIRST=ips[0], REDIS_PORT=str(port),
            SENTINEL_PORT=str(sentinel_port), SENTINEL_BIND=ips[i],
            SENTINEL_HOSTS=",".join(f"{ip}:{sentinel_port}" for ip in ips),
            MASTER_NAME=rendered_env["MASTER_NAME"] or "",
            SENTINEL_QUORUM=rendered_env["SENTINEL_QUORUM"] or "",
            SENTINEL_DOWN_AFTER_MS="500", SENTINEL_FAILOVER_TIMEOUT_MS="3000")

    def start_redis(i: int) -> ManagedProcess:
        args = list(container(sts, "redis")["args"])
        args[args.index("--port") + 1] = str(port)
        args[args.index("--dir") + 1] = str(work / str(i))
        # Redis's default 5 s wait before a diskless full sync is no part of
        # what is tested here.
        process = ManagedProcess(f"redis-{i}", ["sh", str(work / "start-redis.sh"), *args,
                                                "--bind", ips[i],
                                                "--repl-diskless-sync-delay", "0"],
                                 env=env(i), log_path=work / f"redis-{i}.log").start()
        process.wait_until_ready(lambda: _admin(ips[i], port).ping(), timeout=10)
        processes.append(process)
        return process

    try:
        servers: list[ManagedProcess | None] = [start_redis(i) for i in range(3)]
        for i in range(3):
            sentinel = ManagedProcess(f"sentinel-{i}", ["sh", str(work / "start-sentinel.sh")],
                                      env=env(i), log_path=work / f"sentinel-{i}.log").start()
            processes.append(sentinel)
            sentinel.wait_until_ready(lambda i=i: _admin(ips[i], sentinel_port).ping(),
                                      timeout=10)

        def all_known() -> bool:
            for ip in ips:
                info = _admin(ip, sentinel_port).sentinel_master("hybridcache")
                if info.get("num-other-sentinels") != 2 or info.get("num-slaves") != 2:
                    return False
            return True

        wait_until(all_known, timeout=30, interval=0.2,
                   what="the sentinels to know each other and both replicas")
        local = {f"{HOST}-{i}.{HOST}.{NAMESPACE}.svc:26379": f"{ips[i]}:{sentinel_port}"
                 for i in range(3)}
        urls = {}
        for user in ("catalog", "operator"):
            url = secret[f"{user}-url"]
            for name, here in local.items():
                url = url.replace(name, here)
            urls[user] = url
        yield Pods(ips, port, sentinel_port, urls, servers, start_redis)
    finally:
        for process in processes:
            process.stop(timeout=5)


def _master(pods: Pods) -> str:
    reply = _admin(pods.ips[1], pods.sentinel_port).execute_command(
        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "hybridcache")
    return str(reply[0].decode())


@pytest.mark.slow
async def test_the_chart_sentinels_serve_the_users_and_follow_a_failover(pods: Pods) -> None:
    assert _master(pods) == pods.ips[0]
    # The operator's user through the sentinels, on the master.
    operator = redis_client(pods.urls["operator"], socket_timeout=2)
    assert await operator.hset("hc:policies", "probe", "1") == 1
    await operator.aclose()
    # The users may ask where the master is, and nothing else of a sentinel.
    for user, password in (("catalog", CATALOG_PASSWORD), ("operator", "op-pw")):
        sentinel = redis.Redis(host=pods.ips[0], port=pods.sentinel_port, username=user,
                               password=password, socket_timeout=2)
        assert sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "hybridcache")
        for command in (("SENTINEL", "FAILOVER", "hybridcache"),
                        ("SENTINEL", "SET", "hybridcache", "quorum", "1"),
                        ("SENTINEL", "RESET", "*"), ("SENTINEL", "REMOVE", "hybridcache")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                sentinel.execute_command(*command)
        sentinel.close()
    cache = HybridCache(CacheOptions(redis_url=pods.urls["catalog"], node_id="chart",
                                     heartbeat_interval=0.2, heartbeat_timeout=1.0,
                                     reconnect_backoff_max=0.2, socket_timeout=0.5))
    await cache.start()
    try:
        await cache.wait_connected()
        assert await cache.get_or_create("k", _const("v1")) == "v1"
        old = pods.redis[0]
        assert old is not None
        old.kill()
        await eventually(lambda: _master(pods) != pods.ips[0], timeout=20, interval=0.1,
                         what="the sentinels to promote a replica")
        await eventually(lambda: cache.connected and cache.stats().resyncs, timeout=20,
                         what="the cache on the new master")
        new = _master(pods)
        result = await cache.remove("k", ack_timeout=1.0)
        assert result is not None and not result.missing
        assert await cache.get_or_create("k", _const("v2")) == "v2"
        # Pod 0 comes back: it asks the sentinels and replicates the new master.
        pods.redis[0] = pods.start_redis(0)
        role = _admin(pods.ips[0], pods.port).info("replication")
        assert role["role"] == "slave" and role["master_host"] == new
    finally:
        await cache.close()


def _const(value: object):  # type: ignore[no-untyped-def]
    async def load() -> object:
        return value
    return load


@pytest.mark.slow
def test_no_password_on_a_command_line(pods: Pods) -> None:
    for pid in subprocess.run(["pgrep", "-f", f":{pods.port}|{pods.sentinel_port}|sentinel.conf"],
                              capture_output=True, text=True).stdout.split():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        for secret in (b"admin-pw", b"repl-pw", b"sent-pw", b"op-pw"):
            assert secret not in cmdline
