"""redis.mode cluster, rendered and run.

Rendered: a StatefulSet of masters x (1 + replicas) pods with a volume each
(nodes.conf), the cluster bus port, a PodDisruptionBudget, the forming Job
(a post-install/post-upgrade hook), redis+cluster:// URLs listing every pod
with the password encoded, TLS for clients, replication and the bus, and
NetworkPolicies that open the bus between Redis pods only. The size is
validated by values.schema.json.

Run: the chart's own start script, ACL rules and passwords start six "pods"
on loopback addresses 127.0.0.21-26 (in place of pod IPs and DNS names), the
chart's forming Job script forms the cluster (every slot covered, state ok)
and is a no-op when run again; each app user is allowed what a cluster client
uses (redis-py's cluster client on keys across every shard, the slot map,
READONLY, sharded pub/sub on its channels) and refused the admin and
cluster-admin commands on every node; a SIGKILL of a master promotes its
replica, and the killed pod, restarted with its nodes.conf, rejoins as a
replica under the same identity; the preStop script hands a stopping
master's slots to its replica. A second cluster of six TLS-only "pods"
(127.0.0.31-36, a CA made by trustme) is formed, replicates and serves over
TLS. The nodes.conf IP refresh of the start script runs with stand-ins for
getent and redis-server. This needs no library support for redis+cluster://
(built separately): the clients here are redis-py's.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import redis
from hybridcache import CacheOptions, HybridCache
from hybridcache.redis_url import with_tls_env
from redis.cluster import ClusterNode, RedisCluster

from tests.chart.netpol import KUBE_DNS, Endpoint, allowed, namespaces, release_pod
from tests.chart.render import (
    CHART,
    NAMESPACE,
    VALUE_SETS,
    container,
    env_of,
    find,
    one,
    pod_spec,
    render,
    run_helm,
)
from tests.support.ports import free_port
from tests.support.process import ManagedProcess
from tests.support.waiting import eventually, wait_until

CATALOG_PASSWORD = "p@ss:w/o#r?d %+"
PASSWORDS = ("--set-string", f"redis.users.catalog.password={CATALOG_PASSWORD}",
             "--set-string", "redis.users.operator.password=op-pw",
             "--set-string", "redis.password=admin-pw",
             "--set-string", "redis.cluster.replicationPassword=repl-pw")
CLUSTER = VALUE_SETS["cluster-values"]
HOST = "t-hybrid-catalog-redis"
SLOTS = 16384


def _secret(docs: list[dict[str, Any]]) -> dict[str, str]:
    data = one(docs, "Secret", "-redis")["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _pod_names(n: int) -> list[str]:
    return [f"{HOST}-{i}.{HOST}.{NAMESPACE}.svc" for i in range(n)]


def test_cluster_mode_renders_pods_volumes_budget_job_and_urls() -> None:
    docs = render(CLUSTER, *PASSWORDS)
    sts = one(docs, "StatefulSet", "-redis")
    assert sts["spec"]["replicas"] == 6 and sts["spec"]["podManagementPolicy"] == "Parallel"
    # nodes.conf survives a restart even without redis.persistence.
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert not [v for v in pod_spec(sts)["volumes"] if v["name"] == "data"]
    redis_c = container(sts, "redis")
    assert {p["name"]: p["containerPort"] for p in redis_c["ports"]} == {
        "redis": 6379, "cluster-bus": 16379}
    env = env_of(redis_c)
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["CLUSTER_NODE_TIMEOUT"]["value"] == "2000"
    assert env["CLUSTER_NODES"]["value"] == ",".join(f"{n}:6379" for n in _pod_names(6))
    service = one(docs, "Service", "-redis")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    pdb = one(docs, "PodDisruptionBudget", "-redis")
    assert pdb["spec"] == {"maxUnavailable": 1,
                           "selector": sts["spec"]["selector"]}
    job = one(docs, "Job", "-redis-init")
    hooks = job["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "post-install,post-upgrade"
    assert int(hooks["helm.sh/hook-weight"]) < 0  # before the seed Job
    form = container(job, "form")
    assert form["command"] == ["sh", "/etc/redis-acl/form-cluster.sh"]
    assert env_of(form)["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"]["key"] == "redis-password"
    secret = _secret(docs)
    for user in ("catalog", "operator"):
        url = urlsplit(secret[f"{user}-url"])
        assert url.scheme == "redis+cluster" and url.path == ""
        assert url.username == user
        hosts = url.netloc.rsplit("@", 1)[1].split(",")
        assert hosts == [f"{n}:6379" for n in _pod_names(6)]
    catalog_url = urlsplit(secret["catalog-url"])
    assert catalog_url.password and unquote(catalog_url.password) == CATALOG_PASSWORD
    assert secret["replication-password"] == "repl-pw" and "sentinel-password" not in secret
    acl = one(docs, "ConfigMap", "-redis-acl")["data"]
    assert sorted(k for k in acl if k.endswith(".acl")) == [
        "catalog.acl", "operator.acl", "replication.acl"]
    for c in (redis_c, form):
        text = " ".join(c.get("readinessProbe", {}).get("exec", {}).get("command", []))
        assert "-a " not in text and "admin-pw" not in text


def test_the_size_is_configurable_and_validated() -> None:
    docs = render(CLUSTER, "--set", "redis.cluster.masters=4",
                  "--set", "redis.cluster.replicasPerMaster=2")
    assert one(docs, "StatefulSet", "-redis")["spec"]["replicas"] == 12
    form = env_of(container(one(docs, "Job", "-redis-init"), "form"))
    assert form["CLUSTER_REPLICAS"]["value"] == "2"
    assert len(form["CLUSTER_NODES"]["value"].split(",")) == 12
    for setting, where in (("redis.cluster.masters=2", "/redis/cluster/masters"),
                           ("redis.cluster.replicasPerMaster=0",
                            "/redis/cluster/replicasPerMaster")):
        done = run_helm("template", "t", str(CHART), "-f", str(CLUSTER), "--set", setting)
        assert done.returncode != 0 and where in done.stderr, done.stderr


def test_other_modes_render_no_cluster_objects() -> None:
    for values in (None, VALUE_SETS["sentinel-values"]):
        docs = render(values)
        assert not find(docs, "Job", "-redis-init")
        acl = one(docs, "ConfigMap", "-redis-acl")["data"]
        assert "form-cluster.sh" not in acl and "cluster-enabled" not in acl["start-redis.sh"]
        assert "cluster|" not in acl["catalog.acl"] and "spublish" not in acl["catalog.acl"]


def test_tls_covers_clients_replication_and_the_bus() -> None:
    import kubernetes_validate

    docs = render(CLUSTER, "--set", "redis.tls.enabled=true",
                  "--set", "redis.tls.existingSecret=my-redis-tls", *PASSWORDS)
    assert _secret(docs)["catalog-url"].startswith("rediss+cluster://catalog:")
    sts = one(docs, "StatefulSet", "-redis")
    args = container(sts, "redis")["args"]
    assert args[:4] == ["--port", "0", "--tls-port", "6379"]
    for flag in ("--tls-replication", "--tls-cluster"):
        assert args[args.index(flag) + 1] == "yes"
    job = one(docs, "Job", "-redis-init")
    (tls,) = [v for v in pod_spec(job)["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["secretName"] == "my-redis-tls"
    assert env_of(container(job, "form"))["REDIS_TLS_DIR"]["value"] == "/etc/redis-tls"
    catalog = one(docs, "Deployment", "-catalog")
    assert env_of(container(catalog, "catalog"))["REDIS_TLS_CA_FILE"]["value"] == (
        "/etc/hybrid-catalog/redis-ca/ca.crt")
    for doc in (sts, job, catalog):
        kubernetes_validate.validate(doc, "1.37.0", strict=True)


def test_existing_secret_composes_a_cluster_url() -> None:
    docs = render(CLUSTER, "--set", "redis.existingSecret=mine")
    env = env_of(container(one(docs, "Deployment", "-catalog"), "catalog"))
    url = env["REDIS_URL"]["value"]
    assert url.startswith(f"redis+cluster://catalog:$(REDIS_PASSWORD)@{HOST}-0.")
    assert url.endswith(f"{HOST}-5.{HOST}.{NAMESPACE}.svc:6379")
    volume = next(v for v in pod_spec(one(docs, "StatefulSet", "-redis"))["volumes"]
                  if v["name"] == "acl-secrets")
    assert {"key": "replication-password", "path": "replication-password"} in (
        volume["secret"]["items"])


def test_an_external_cluster_url_is_passed_whole() -> None:
    url = "redis+cluster://app:pw@r1.example:7000,r2.example:7001,r3.example:7002"
    docs = render(None, "--set", "redis.enabled=false",
                  "--set", f"redis.external.url={url.replace(',', chr(92) + ',')}",
                  "--set", "redis.mode=cluster")
    secret = {k: base64.b64decode(v).decode()
              for k, v in one(docs, "Secret", "-redis-external")["data"].items()}
    assert secret["redis-url"] == url
    assert not find(docs, "StatefulSet", "-redis") and not find(docs, "Job", "-redis-init")


def test_network_policies_open_the_bus_between_redis_pods_only() -> None:
    policies = find(render(CLUSTER), "NetworkPolicy")
    ns = namespaces(NAMESPACE, "kube-system")

    def pod(component: str, ip: str) -> Endpoint:
        return release_pod(component, NAMESPACE, ip,
                           {"redis": 6379, "cluster-bus": 16379} if component == "redis" else None)

    redis_a, redis_b = pod("redis", "10.244.1.1"), pod("redis", "10.244.1.2")
    dns = KUBE_DNS
    for port in (6379, 16379):  # replication and clients; gossip and failover votes
        assert allowed(policies, redis_a, redis_b, port, ns, "TCP")
    for source in ("catalog", "operator", "redis-init"):
        client = pod(source, "10.244.1.9")
        assert allowed(policies, client, redis_a, 6379, ns, "TCP")
        assert not allowed(policies, client, redis_a, 16379, ns, "TCP")
    assert allowed(policies, pod("redis-init", "10.244.1.9"), dns, 53, ns, "UDP")
    assert allowed(policies, redis_a, dns, 53, ns, "UDP")  # nodes.conf peers by name
    for stranger in ("checker", "seed", "test"):
        for port in (6379, 16379):
            assert not allowed(policies, pod(stranger, "10.244.1.8"), redis_a, port, ns, "TCP")
    # The forming Job exists only in cluster mode, and so does its policy.
    assert not find(find(render(None), "NetworkPolicy"), "NetworkPolicy", "-redis-init")


# ------------------------------------------------------------------ run for real


@dataclass
class Pods:
    ips: list[str]
    port: int
    secret: dict[str, str]
    redis: list[ManagedProcess | None]
    start: Any  # (i) -> ManagedProcess
    form: Any  # () -> CompletedProcess
    work: Path
    tls: Path | None  # the directory with ca.crt, tls.crt, tls.key


def _admin(ip: str, port: int, tls: Path | None = None) -> redis.Redis:
    extra: dict[str, Any] = ({} if tls is None else
                             {"ssl": True, "ssl_ca_certs": str(tls / "ca.crt")})
    return redis.Redis(host=ip, port=port, password="admin-pw", socket_timeout=2, **extra)


def _info(ip: str, port: int, section: str, tls: Path | None = None) -> dict[str, Any]:
    with _admin(ip, port, tls) as admin:
        if section == "cluster":
            text = admin.execute_command("CLUSTER", "INFO").decode()
            return dict(line.split(":", 1) for line in text.split() if ":" in line)
        return admin.info(section)  # type: ignore[no-any-return]


@contextmanager
def _chart_pods(work: Path, ips: list[str], *values: str,
                tls: Path | None = None) -> Iterator[Pods]:
    """Start one "pod" per address with the chart's rendered start script,
    rules, passwords and arguments (TLS paths pointed at ``tls``)."""
    docs = render(CLUSTER, *PASSWORDS, *values)
    sts = one(docs, "StatefulSet", "-redis")
    job = one(docs, "Job", "-redis-init")
    acl = one(docs, "ConfigMap", "-redis-acl")["data"]
    secret = _secret(docs)
    rules, secrets = work / "rules", work / "secrets"
    rules.mkdir()
    secrets.mkdir()
    for name, text in acl.items():
        (rules if name.endswith(".acl") else work).joinpath(name).write_text(text)
    (volume,) = [v for v in pod_spec(sts)["volumes"] if v["name"] == "acl-secrets"]
    for item in volume["secret"]["items"]:
        (secrets / item["path"]).write_text(secret[item["key"]])
    port, bus = free_port(), free_port()
    nodes = ",".join(f"{ip}:{port}" for ip in ips)
    processes: list[ManagedProcess] = []

    def start(i: int) -> ManagedProcess:
        (work / str(i)).mkdir(exist_ok=True)
        env = dict(os.environ, REDIS_ACL_RULES=str(rules), REDIS_SECRETS=str(secrets),
                   REDIS_ACL_FILE=str(work / str(i) / "users.acl"),
                   REDIS_DATA_DIR=str(work / str(i)), POD_NAME=f"{HOST}-{i}",
                   REDIS_ME=ips[i], POD_IP=ips[i], CLUSTER_BUS_PORT=str(bus),
                   CLUSTER_NODE_TIMEOUT="500")
        args = list(container(sts, "redis")["args"])
        args[args.index("--tls-port" if tls else "--port") + 1] = str(port)
        args[args.index("--dir") + 1] = str(work / str(i))
        if tls is not None:
            args = [a.replace("/etc/redis-tls", str(tls)) for a in args]
        process = ManagedProcess(f"cluster-redis-{i}",
                                 ["sh", str(work / "start-redis.sh"), *args, "--bind", ips[i],
                                  "--repl-diskless-sync-delay", "0"],
                                 env=env, log_path=work / f"redis-{i}.log").start()
        process.wait_until_ready(lambda: _admin(ips[i], port, tls).ping(), timeout=10)
        processes.append(process)
        return process

    form_env = {e["name"]: e.get("value") for e in container(job, "form")["env"]}

    def form() -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, REDISCLI_AUTH="admin-pw", CLUSTER_NODES=nodes,
                   CLUSTER_REPLICAS=form_env["CLUSTER_REPLICAS"] or "",
                   CLUSTER_FORM_TIMEOUT="30")
        if tls is not None:
            assert form_env["REDIS_TLS_DIR"] == "/etc/redis-tls"
            env["REDIS_TLS_DIR"] = str(tls)
        return subprocess.run(["sh", str(work / "form-cluster.sh")], env=env,
                              capture_output=True, text=True, timeout=60)

    try:
        servers: list[ManagedProcess | None] = [start(i) for i in range(len(ips))]
        yield Pods(ips, port, secret, servers, start, form, work, tls)
    finally:
        for process in processes:
            process.stop(timeout=5)


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    with _chart_pods(tmp_path_factory.mktemp("cluster-pods"),
                     [f"127.0.0.{21 + i}" for i in range(6)]) as started:
        yield started


async def _two_caches_invalidate_each_other(url: str) -> None:
    """Two library nodes on one TLS cluster: an entry one loaded is an L2 hit
    for the other, and a removal on one reaches the other's L1."""
    loads: list[str] = []

    async def load() -> str:
        loads.append("db")
        return f"v{len(loads)}"

    async with HybridCache(CacheOptions(redis_url=url, node_id="tls-a")) as a, \
            HybridCache(CacheOptions(redis_url=url, node_id="tls-b")) as b:
        await a.wait_connected()
        await b.wait_connected()
        assert await a.get_or_create("product:1", load) == "v1"
        assert await b.get_or_create("product:1", load) == "v1"  # from L2
        assert loads == ["db"]
        await a.remove("product:1")
        await eventually(lambda: b.inspect("product:1") is None,
                         what="b dropped product:1 on a's removal")
        assert await b.get_or_create("product:1", load) == "v2"
    assert a.stats().l2_errors == 0 and b.stats().l2_errors == 0


def _cluster_client(pods: Pods, user: str) -> RedisCluster:
    url = urlsplit(pods.secret[f"{user}-url"])
    assert url.password is not None
    extra: dict[str, Any] = ({} if pods.tls is None else
                             {"ssl": True, "ssl_ca_certs": str(pods.tls / "ca.crt")})
    return RedisCluster(startup_nodes=[ClusterNode(ip, pods.port) for ip in pods.ips[:3]],
                        username=user, password=unquote(url.password), socket_timeout=2,
                        **extra)


def _node_ids(pods: Pods) -> set[str]:
    with _admin(pods.ips[0], pods.port) as admin:
        text = admin.execute_command("CLUSTER", "NODES").decode()
    return {line.split()[0] for line in text.splitlines() if line}


@pytest.fixture(scope="module")
def formed(pods: Pods) -> Pods:
    done = pods.form()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "forming the cluster" in done.stdout
    return pods


@pytest.mark.slow
def test_the_job_forms_the_cluster_and_is_a_no_op_when_run_again(formed: Pods) -> None:
    pods = formed
    for ip in pods.ips:
        info = _info(ip, pods.port, "cluster")
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_assigned"]) == SLOTS == int(info["cluster_slots_ok"])
        assert info["cluster_known_nodes"] == "6" and info["cluster_size"] == "3"
    # Three masters, each with one replica linked as the `replication` user.
    roles = [_info(ip, pods.port, "replication") for ip in pods.ips]
    assert sorted(r["role"] for r in roles) == ["master"] * 3 + ["slave"] * 3
    wait_until(lambda: all(_info(ip, pods.port, "replication").get("master_link_status") == "up"
                           for ip, r in zip(pods.ips, roles, strict=True) if r["role"] == "slave"),
               timeout=10, interval=0.1, what="every replica's link to its master")
    # Clients are told stable names (here the addresses stand in for them).
    with _admin(pods.ips[0], pods.port) as admin:
        slots = admin.execute_command("CLUSTER", "SHARDS")
        assert b"hostname" in str(slots).encode()
    ids, epoch = _node_ids(pods), _info(pods.ips[0], pods.port, "cluster")["cluster_current_epoch"]
    again = pods.form()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already formed" in again.stdout and "forming" not in again.stdout
    assert _node_ids(pods) == ids
    assert _info(pods.ips[0], pods.port, "cluster")["cluster_current_epoch"] == epoch


@pytest.mark.slow
def test_the_app_users_can_do_what_a_cluster_client_does(formed: Pods) -> None:
    pods = formed
    for ip in pods.ips:
        with _admin(ip, pods.port) as admin:
            admin.acl_log_reset()
    client = _cluster_client(pods, "catalog")
    try:
        keys = [f"hc:e:product:{i}" for i in range(60)]
        for key in keys:
            assert client.set(key, "v", ex=60)
        assert [client.get(k) for k in keys] == [b"v"] * len(keys)
        spread = {client.keyslot(k) // (SLOTS // 3 + 1) for k in keys}
        assert spread == {0, 1, 2}  # entries land on every shard
        assert client.spublish("hc:backplane", "x") == 0
        # The library's cluster layout: shared names under the hash tag
        # {prefix}, per-key names tagged by key.
        assert client.hincrby("{hc:}state", "clock", 1) >= 1
        assert client.set("hc:e{k:product:1}", "v", ex=60)
        assert client.spublish("{hc:}backplane", "x") == 0
        pubsub = client.pubsub()
        pubsub.ssubscribe("hc:fill:product:1")
        message = pubsub.get_sharded_message(timeout=5)
        assert message and message["type"] == "ssubscribe"
        pubsub.close()
    finally:
        client.close()
    operator = _cluster_client(pods, "operator")
    try:
        assert operator.hset("hc:policies", "price", "{}") == 1
        assert operator.spublish("hc:backplane", "x") == 0
        # Store and announce a policy in one script on the state slot.
        publish = operator.register_script(
            "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
            "return redis.call('SPUBLISH', KEYS[2], ARGV[3])")
        assert publish(keys=["{hc:}policies", "{hc:}backplane"], args=["price", "{}", "m"]) == 0
    finally:
        operator.close()
    # The slot map, replica reads and redirections, on a plain connection.
    for user, password in (("catalog", CATALOG_PASSWORD), ("operator", "op-pw")):
        with redis.Redis(host=pods.ips[0], port=pods.port, username=user,
                         password=password, socket_timeout=2) as c:
            for command in (("CLUSTER", "SLOTS"), ("CLUSTER", "SHARDS"), ("CLUSTER", "NODES"),
                            ("CLUSTER", "INFO"), ("READONLY",), ("READWRITE",), ("ASKING",)):
                c.execute_command(*command)
    # Nothing the cluster clients sent was refused on any node, but CLIENT
    # SETINFO (redis-py ignores the refusal).
    refused = []
    for ip in pods.ips:
        with _admin(ip, pods.port) as admin:
            refused += [(ip, e["username"], e["object"]) for e in admin.acl_log()
                        if "setinfo" not in str(e["object"])]
    assert refused == []
    operator = _cluster_client(pods, "operator")
    try:
        for command in (("GET", "hc:e:product:1"), ("HGET", "{hc:}state", "clock"),
                        ("HSET", "{hc:}nodes", "fake", "1"), ("SPUBLISH", "{hc:}fill:x", "m")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                operator.execute_command(*command)
    finally:
        operator.close()


FORBIDDEN = [("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "maxmemory"), ("DEBUG", "SLEEP", "0"),
             ("KEYS", "*"), ("SHUTDOWN", "NOSAVE"), ("ACL", "LIST"),
             ("CLUSTER", "FAILOVER"), ("CLUSTER", "RESET"), ("CLUSTER", "FORGET", "x"),
             ("CLUSTER", "MEET", "127.0.0.1", "1"), ("CLUSTER", "ADDSLOTS", "1"),
             ("CLUSTER", "DELSLOTS", "1"), ("CLUSTER", "SETSLOT", "1", "STABLE"),
             ("CLUSTER", "REPLICATE", "x"), ("CLUSTER", "SAVECONFIG"),
             ("CLUSTER", "FLUSHSLOTS"), ("CLUSTER", "BUMPEPOCH"), ("PSYNC", "?", "-1")]


@pytest.mark.slow
def test_every_node_refuses_the_app_users_admin_and_cluster_admin_commands(
        formed: Pods) -> None:
    pods = formed
    for ip in pods.ips:  # the ACL is each node's own: check them all
        with _admin(ip, pods.port) as admin:
            assert {u.decode() for u in admin.execute_command("ACL", "USERS")} == {
                "default", "catalog", "operator", "replication"}
            for user in ("catalog", "operator"):
                for command in FORBIDDEN:
                    verdict = admin.execute_command("ACL", "DRYRUN", user, *command)
                    assert b"no permissions" in verdict, (ip, user, command)
                assert admin.execute_command("ACL", "DRYRUN", user, "CLUSTER", "SLOTS") == b"OK"
            # The replicas' user may sync and nothing else.
            for command in (("GET", "hc:x"), ("CLUSTER", "NODES"), ("FLUSHALL",)):
                assert b"no permissions" in admin.execute_command(
                    "ACL", "DRYRUN", "replication", *command)
    # And for real, on one node (DEBUG is also off by the server's default).
    with redis.Redis(host=pods.ips[1], port=pods.port, username="catalog",
                     password=CATALOG_PASSWORD, socket_timeout=2) as c:
        for command in FORBIDDEN:
            if command[0] != "DEBUG":
                with pytest.raises(redis.exceptions.NoPermissionError):
                    c.execute_command(*command)
    assert all(p is None or p.alive() for p in pods.redis)


def _masters_and_replicas(pods: Pods) -> dict[str, tuple[str, str | None]]:
    """node id -> (its address, its master's id or None for a master)."""
    with _admin(pods.ips[0], pods.port) as admin:
        lines = admin.execute_command("CLUSTER", "NODES").decode().splitlines()
    return {f[0]: (f[1].split("@")[0], None if f[3] == "-" else f[3])
            for f in (line.split() for line in lines if line) if "fail" not in f[2]}


@pytest.mark.slow
def test_a_stopping_master_hands_its_slots_to_its_replica_first(formed: Pods) -> None:
    """The redis container's preStop (prestop-cluster.sh): run on a master,
    it returns once that node is a replica and its replica the master, with
    every slot served; run on a replica, it changes nothing."""
    pods = formed
    docs = render(CLUSTER, *PASSWORDS)
    redis_c = container(one(docs, "StatefulSet", "-redis"), "redis")
    assert redis_c["lifecycle"]["preStop"]["exec"]["command"] == [
        "sh", "/etc/redis-acl/prestop-cluster.sh"]
    nodes = _masters_and_replicas(pods)
    master_id = next(i for i, (_, m) in nodes.items() if m is None)
    replica_id = next(i for i, (_, m) in nodes.items() if m == master_id)

    def prestop(address: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, REDISCLI_AUTH="admin-pw", REDIS_SELF=address,
                   REDIS_PORT=str(pods.port))
        return subprocess.run(["sh", str(pods.work / "prestop-cluster.sh")], env=env,
                              capture_output=True, text=True, timeout=60)

    done = prestop(nodes[replica_id][0])  # a replica: nothing to hand over
    assert done.returncode == 0 and "handing" not in done.stdout
    done = prestop(nodes[master_id][0])
    assert done.returncode == 0, done.stderr
    assert f"handing the slots to {nodes[replica_id][0]}" in done.stdout
    # What the two nodes say of themselves (others hear it by gossip).
    assert _info(nodes[master_id][0].split(":")[0], pods.port, "replication")["role"] == "slave"
    assert _info(nodes[replica_id][0].split(":")[0], pods.port, "replication")["role"] == "master"

    def swapped_everywhere() -> bool:
        after = _masters_and_replicas(pods)
        info = _info(pods.ips[0], pods.port, "cluster")
        return (after[master_id][1] == replica_id and after[replica_id][1] is None
                and info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == SLOTS)

    wait_until(swapped_everywhere, timeout=10, interval=0.1, what="the swap known cluster-wide")


@pytest.mark.slow
def test_a_killed_master_is_replaced_by_its_replica_and_rejoins_as_one(formed: Pods) -> None:
    pods = formed
    with _admin(pods.ips[0], pods.port) as admin:
        nodes = admin.execute_command("CLUSTER", "NODES").decode().splitlines()
    by_id = {line.split()[0]: line.split() for line in nodes if line}
    (master_id, master) = next((i, f) for i, f in by_id.items() if "master" in f[2])
    victim = pods.ips.index(master[1].split(":")[0])
    (replica_id,) = [i for i, f in by_id.items() if f[3] == master_id]
    promoted = pods.ips.index(by_id[replica_id][1].split(":")[0])
    process = pods.redis[victim]
    assert process is not None
    process.kill()
    pods.redis[victim] = None
    survivor = pods.ips[(victim + 1) % 6 if (victim + 1) % 6 != promoted else (victim + 2) % 6]

    def promoted_and_whole() -> bool:
        info = _info(survivor, pods.port, "cluster")
        return (_info(pods.ips[promoted], pods.port, "replication")["role"] == "master"
                and info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == SLOTS)

    wait_until(promoted_and_whole, timeout=20, interval=0.1,
               what="the replica promoted and every slot served again")
    # Back with its nodes.conf: the same node, now a replica of the promoted one.
    pods.redis[victim] = pods.start(victim)

    def rejoined() -> bool:
        role = _info(pods.ips[victim], pods.port, "replication")
        return bool(role["role"] == "slave" and role.get("master_host") == pods.ips[promoted]
                    and role.get("master_link_status") == "up")

    wait_until(rejoined, timeout=20, interval=0.1, what="the old master to rejoin as a replica")
    with _admin(pods.ips[victim], pods.port) as admin:
        assert admin.execute_command("CLUSTER", "MYID").decode() == master_id
    assert _info(survivor, pods.port, "cluster")["cluster_known_nodes"] == "6"


@pytest.mark.slow
def test_a_stranger_is_named_not_merged(formed: Pods, tmp_path: Path) -> None:
    """A formed cluster plus a pod that is not in it (a scale-up): the Job
    refuses and names it rather than forming a second cluster."""
    stranger = ManagedProcess("cluster-stranger", [
        "redis-server", "--port", str(formed.port), "--bind", "127.0.0.27", "--save", "",
        "--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf"),
        "--cluster-port", str(free_port()),  # the default (port + 10000) may not exist
        "--dir", str(tmp_path), "--requirepass", "admin-pw"],
        log_path=tmp_path / "stranger.log").start()
    try:
        stranger.wait_until_ready(lambda: _admin("127.0.0.27", formed.port).ping(), timeout=10)
        env = dict(os.environ, REDISCLI_AUTH="admin-pw", CLUSTER_REPLICAS="1",
                   CLUSTER_FORM_TIMEOUT="30",
                   CLUSTER_NODES=",".join(f"{ip}:{formed.port}"
                                          for ip in [*formed.ips, "127.0.0.27"]))
        done = subprocess.run(["sh", str(formed.work / "form-cluster.sh")], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert f"127.0.0.27:{formed.port}" in done.stderr and "add-node" in done.stderr
        assert _info("127.0.0.27", formed.port, "cluster")["cluster_known_nodes"] == "1"
    finally:
        stranger.stop(timeout=5)


@pytest.mark.slow
def test_no_password_on_a_command_line(formed: Pods) -> None:
    for process in formed.redis:
        if process is None:
            continue
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        for secret in (b"admin-pw", b"repl-pw", b"op-pw"):
            assert secret not in cmdline
    conf = (formed.work / "0" / "redis.conf").stat()
    assert conf.st_mode & 0o077 == 0  # the config with masterauth: owner only


def test_the_start_script_refreshes_peer_ips_from_their_names(tmp_path: Path) -> None:
    """Every pod restarted, every IP changed: before redis-server reads
    nodes.conf, each peer's IP is replaced by what its DNS name resolves to
    now (getent), in both the 7.0 and the 7.2+ (aux fields) line formats;
    names that do not resolve (yet) and the vars line are left alone.
    getent and redis-server are stand-ins on PATH here."""
    docs = render(CLUSTER, *PASSWORDS)
    acl = one(docs, "ConfigMap", "-redis-acl")["data"]
    secret = _secret(docs)
    rules, secrets, data, bin_dir = (tmp_path / d for d in ("rules", "secrets", "data", "bin"))
    for d in (rules, secrets, data, bin_dir):
        d.mkdir()
    for name, text in acl.items():
        (rules if name.endswith(".acl") else tmp_path).joinpath(name).write_text(text)
    for key in ("redis-password", "catalog-password", "operator-password", "replication-password"):
        (secrets / key).write_text(secret[key])
    a, b, c = _pod_names(3)
    (bin_dir / "getent").write_text(
        f'#!/bin/sh\ncase "$2" in {a}) echo "10.9.0.1 {a}";; {b}) echo "10.9.0.2 {b}";;'
        ' *) exit 2;; esac\n')
    (bin_dir / "redis-server").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("getent", "redis-server"):
        (bin_dir / tool).chmod(0o755)
    (data / "nodes.conf").write_text(
        f"aaa 10.1.0.1:6379@16379,{a} myself,master - 0 0 1 connected 0-5460\n"
        f"bbb 10.1.0.2:6379@16379,{b},shard-id=f00,nodename= slave aaa 0 9 1 connected\n"
        f"ccc 10.1.0.3:6379@16379,{c} master - 0 9 2 connected 5461-10922\n"
        "ddd 10.1.0.4:6379@16379 master - 0 9 3 connected 10923-16383\n"
        "vars currentEpoch 3 lastVoteEpoch 0\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", REDIS_ACL_RULES=str(rules),
               REDIS_SECRETS=str(secrets), REDIS_ACL_FILE=str(tmp_path / "users.acl"),
               REDIS_DATA_DIR=str(data), POD_NAME=f"{HOST}-0",
               REDIS_DOMAIN=f"{HOST}.{NAMESPACE}.svc",
               POD_IP="10.9.0.1", CLUSTER_BUS_PORT="16379", CLUSTER_NODE_TIMEOUT="5000")
    done = subprocess.run(["sh", str(tmp_path / "start-redis.sh")], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert (data / "nodes.conf").read_text().splitlines() == [
        f"aaa 10.9.0.1:6379@16379,{a} myself,master - 0 0 1 connected 0-5460",
        f"bbb 10.9.0.2:6379@16379,{b},shard-id=f00,nodename= slave aaa 0 9 1 connected",
        f"ccc 10.1.0.3:6379@16379,{c} master - 0 9 2 connected 5461-10922",
        "ddd 10.1.0.4:6379@16379 master - 0 9 3 connected 10923-16383",
        "vars currentEpoch 3 lastVoteEpoch 0"]
    conf = (tmp_path / "redis.conf").read_text()
    assert f"cluster-announce-hostname {a}\n" in conf and "cluster-announce-ip 10.9.0.1\n" in conf
    assert "cluster-enabled yes\n" in conf and "masterauth repl-pw\n" in conf


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Secret's three files, from a CA made here (IP names: the test's
    "pods" are addresses; Redis itself checks no names)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(*(f"127.0.0.{31 + i}" for i in range(6)))
    tls = tmp_path_factory.mktemp("cluster-tls")
    ca.cert_pem.write_to_path(str(tls / "ca.crt"))
    cert.cert_chain_pems[0].write_to_path(str(tls / "tls.crt"))
    cert.private_key_pem.write_to_path(str(tls / "tls.key"))
    return tls


@pytest.mark.slow
def test_a_cluster_over_tls_forms_replicates_and_serves(
        tmp_path: Path, tls_dir: Path) -> None:
    """redis.tls in cluster mode, run: TLS only (no plain-text port), the Job
    forms the cluster over TLS, replicas sync over TLS, the bus runs over TLS
    (the nodes could not agree on the cluster otherwise)."""
    ips = [f"127.0.0.{31 + i}" for i in range(6)]
    with _chart_pods(tmp_path, ips, "--set", "redis.tls.enabled=true",
                     "--set", "redis.tls.existingSecret=redis-tls", tls=tls_dir) as pods:
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host=ips[0], port=pods.port, password="admin-pw",
                        socket_timeout=2).ping()
        done = pods.form()
        assert done.returncode == 0, done.stdout + done.stderr
        for ip in ips:
            info = _info(ip, pods.port, "cluster", tls_dir)
            assert info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == SLOTS
        assert pods.secret["catalog-url"].startswith("rediss+cluster://")
        client = _cluster_client(pods, "catalog")
        try:
            for i in range(30):
                assert client.set(f"hc:e:product:{i}", "v", ex=60)
            assert client.get("hc:e:product:7") == b"v"
        finally:
            client.close()

        def replicas_linked() -> bool:
            roles = [_info(ip, pods.port, "replication", tls_dir) for ip in ips]
            return all(r.get("master_link_status") == "up" for r in roles if r["role"] == "slave")

        wait_until(replicas_linked, timeout=10, interval=0.1, what="replicas synced over TLS")
        # The library on rediss+cluster://, trusting the CA by REDIS_TLS_CA_FILE.
        password = urlsplit(pods.secret["catalog-url"]).password
        assert password is not None
        seeds = ",".join(f"{ip}:{pods.port}" for ip in ips[:3])
        url = with_tls_env(f"rediss+cluster://catalog:{password}@{seeds}",
                           {"REDIS_TLS_CA_FILE": str(tls_dir / "ca.crt")})
        assert url is not None
        asyncio.run(_two_caches_invalidate_each_other(url))
