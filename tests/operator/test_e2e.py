"""End to end: real kubectl -> Kubernetes API (kmock) -> the operator as a real
process (kopf) -> real Redis -> real hybridcache replicas, and back into the
custom resource's status, Events and the operator's /metrics."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import yaml
from hybridcache.keys import Keys
from hybridcache.policy import Policy

from tests.operator.conftest import CIP, ROOT, eventually

pytestmark = pytest.mark.slow

KEYS = Keys("hc:")


def cip(data_type: str, namespace: str = "default", name: str | None = None,
        **spec: Any) -> str:
    """A CacheInvalidationPolicy manifest (YAML)."""
    body = {"dataType": data_type, "strategy": "active", "tags": ["product:{id}"], **spec}
    return yaml.safe_dump({
        "apiVersion": "caching.hybridcache.io/v1alpha1", "kind": "CacheInvalidationPolicy",
        "metadata": {"name": name or data_type, "namespace": namespace}, "spec": body})


def condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return {}


def events(kube: Any, reason: str | None = None) -> list[dict[str, Any]]:
    def collect() -> list[dict[str, Any]]:
        out = []
        for (resource, _ns, _name), obj in list(kube.api.objects.items()):
            if resource.plural == "events" and not obj.deleted:
                raw = dict(obj.last.raw)
                if reason is None or raw.get("reason") == reason:
                    out.append(raw)
        return out
    return list(kube.call(collect))


async def test_apply_update_delete_reaches_replicas_and_status(
        kube: Any, kubectl: Any, start_operator: Any, replicas: Any, redis: Any) -> None:
    r1 = await replicas("replica-1")
    r2 = await replicas("replica-2")
    seen: list[tuple[str, Policy | None]] = []
    r1.policies.add_listener(lambda dt, p: seen.append((dt, p)))
    start_operator()

    # create -> published, applied by every replica, acknowledged, status patched
    await kubectl.apply(cip("price", expiration="10m", localExpiration="30s"))
    for node in (r1, r2):
        policy = await eventually(lambda n=node: n.policies.get("price"), what="policy applied")
        assert policy.generation == 1 and policy.source == "default/price"
        assert policy.tags == ("product:{id}",) and policy.expiration == 600.0
    assert Policy.from_wire(await redis.hget(KEYS.policies, "price")).generation == 1

    def price() -> dict[str, Any] | None:
        return kube.call(kube.api.get, CIP, "default", "price")

    try:
        await eventually(lambda: condition(price(), "Ready").get("reason") == "InSync",
                         what="Ready=InSync")
    except AssertionError:
        print("DEBUG", price())
        raise
    status = price()["status"]
    assert status["observedGeneration"] == 1
    assert status["replicasInSync"] == "2/2"
    assert (status["appliedReplicas"], status["totalReplicas"]) == (2, 2)
    assert condition(price(), "Applied")["status"] == "True"
    assert condition(price(), "Ready")["status"] == "True"
    applied_events = [e for e in events(kube, "Applied") if "generation 1" in e["message"]]
    assert applied_events and applied_events[0]["source"]["component"] == "cache-operator"
    assert applied_events[0]["reportingComponent"] == "cache-operator"
    assert price()["metadata"]["finalizers"] == ["caching.hybridcache.io/cleanup"]

    # kubectl get shows the printer columns, filled from spec and status
    table = (await kubectl.arun("get", "cip")).stdout.splitlines()
    assert table[0].split() == ["NAME", "DATA", "TYPE", "STRATEGY", "EXPIRATION", "IN", "SYNC",
                                "READY", "REASON", "AGE"]
    row = table[1].split()
    assert row[:7] == ["price", "price", "active", "10m", "2/2", "True", "InSync"]

    # update -> a new generation, applied and acknowledged by every replica
    await kubectl.apply(cip("price", expiration="20m", localExpiration="1m"))
    for node in (r1, r2):
        await eventually(lambda n=node: (p := n.policies.get("price")) is not None
                         and p.generation == 2 and p.expiration == 1200.0,
                         what="generation 2 applied")
    acks = await eventually(lambda: _acks(redis, "price", 2), what="acks of generation 2")
    assert acks == {"replica-1": 2, "replica-2": 2}
    await eventually(lambda: (price() or {}).get("status", {}).get("observedGeneration") == 2
                     and condition(price(), "Ready").get("observedGeneration") == 2,
                     what="status of generation 2")
    assert price()["metadata"]["generation"] == 2

    # delete -> the data type returns to the defaults on every replica
    await kubectl.arun("delete", "--wait=false", "cip", "price")
    for node in (r1, r2):
        await eventually(lambda n=node: n.policies.get("price") is None, what="back to defaults")
    assert await redis.hget(KEYS.policies, "price") is None
    assert seen[-1] == ("price", None)
    await eventually(lambda: price() is None, what="finalizer released")


async def _acks(redis: Any, data_type: str, generation: int) -> dict[str, int] | None:
    raw = await redis.hgetall(KEYS.policy_acks(data_type))
    acks = {k.decode(): int(v) for k, v in raw.items()}
    return acks if acks and all(v == generation for v in acks.values()) else None


async def test_api_rejects_invalid_documents_with_the_field(kubectl: Any) -> None:
    bad = cip("country", strategy="ttl", expiration="10s", localExpiration="1m")
    proc = await kubectl.apply(bad, check=False)
    assert proc.returncode != 0
    assert "spec.tags: Forbidden: tags are not allowed when strategy is ttl" in proc.stderr
    assert "spec.localExpiration" in proc.stderr


async def test_invalid_spec_goes_to_status_and_events_without_crashing(
        kube: Any, kubectl: Any, start_operator: Any, redis: Any) -> None:
    # An object the CRD would have stopped (as if stored under an older CRD):
    # put it straight into the API's storage, then start the operator.
    def inject() -> None:
        kube.api.objects[CIP, "default", "broken"] = {
            "apiVersion": "caching.hybridcache.io/v1alpha1",
            "kind": "CacheInvalidationPolicy",
            "metadata": {"name": "broken", "namespace": "default", "generation": 3,
                         "uid": "u-1", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "resourceVersion": "1"},
            "spec": {"dataType": "stock", "strategy": "active", "tags": ["product:{id"]},
        }
    kube.call(inject)
    op = start_operator()

    def broken() -> dict[str, Any] | None:
        return kube.call(kube.api.get, CIP, "default", "broken")

    applied = await eventually(lambda: condition(broken(), "Applied"), what="Applied condition")
    assert applied["status"] == "False" and applied["reason"] == "InvalidSpec"
    assert applied["message"].startswith("spec.tags[0]: ")
    assert broken()["status"]["observedGeneration"] == 3
    warnings = await eventually(lambda: events(kube, "InvalidSpec"), what="Warning event")
    assert warnings[0]["type"] == "Warning" and "spec.tags[0]" in warnings[0]["message"]
    assert await redis.hget(KEYS.policies, "stock") is None

    # the operator is alive and keeps serving other policies
    await kubectl.apply(cip("price"))
    await eventually(lambda: redis.hget(KEYS.policies, "price"), what="price published")
    assert op.proc is not None and op.proc.poll() is None


async def test_duplicate_data_type_is_reported_and_taken_over_when_freed(
        kube: Any, kubectl: Any, start_operator: Any, redis: Any) -> None:
    start_operator()
    await kubectl.apply(cip("price", name="price-a"))

    async def source() -> str | None:
        raw = await redis.hget(KEYS.policies, "price")
        return None if raw is None else Policy.from_wire(raw).source

    await eventually(lambda: _is(source(), "default/price-a"), what="price-a published")
    await kubectl.apply(cip("price", name="price-b", expiration="1h"))

    def b() -> dict[str, Any] | None:
        return kube.call(kube.api.get, CIP, "default", "price-b")

    applied = await eventually(lambda: condition(b(), "Applied"), what="price-b condition")
    assert applied["reason"] == "DuplicateDataType" and applied["status"] == "False"
    assert "already governed by default/price-a" in applied["message"]
    assert "spec.dataType" in applied["message"]
    assert await eventually(lambda: events(kube, "DuplicateDataType"), what="Warning event")
    assert await source() == "default/price-a"

    await kubectl.arun("delete", "--wait=false", "cip", "price-a")
    await eventually(lambda: _is(source(), "default/price-b"), what="price-b takes over")
    await eventually(lambda: condition(b(), "Applied").get("status") == "True",
                     what="price-b applied")


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_metrics_lag_and_hit_ratio_are_measured(
        kube: Any, kubectl: Any, start_operator: Any, replicas: Any, redis: Any) -> None:
    fast = await replicas("replica-fast")
    # A replica whose clock runs 300 ms ahead receives every probe "300 ms late".
    skewed = await replicas("replica-skewed", clock=lambda: time.time() + 0.3)
    op = start_operator()
    await kubectl.apply(cip("price"))

    def scrape() -> Any:
        return _scrape(op)

    def lag(m: dict[str, float], replica: str) -> float | None:
        return m.get(f'cache_operator_backplane_lag_seconds{{replica="{replica}"}}')

    m = await eventually(lambda: _with(scrape(), lambda m: lag(m, "replica-fast") is not None
                                       and lag(m, "replica-skewed") is not None),
                         what="lag of both replicas")
    assert 0.3 <= lag(m, "replica-skewed") < 1.5  # type: ignore[operator]
    assert lag(m, "replica-fast") < 0.25  # type: ignore[operator]

    # Traffic after the operator's first round: 4 misses, then 12 L1 hits -> 0.75.
    async def load(n: int) -> int:
        return n

    for node in (fast, skewed):
        for i in range(2):
            await node.get_or_create(f"price:{i}", lambda i=i: load(i), tags=[f"product:{i}"])
            for _ in range(3):
                await node.get_or_create(f"price:{i}", lambda i=i: load(i),
                                         tags=[f"product:{i}"])
    key = 'cache_operator_l1_hit_ratio{data_type="price"}'
    m = await eventually(lambda: _with(scrape(), lambda m: m.get(key) == 0.75),
                         what="hit ratio 0.75")
    assert m['cache_operator_replicas_in_sync{policy="default/price"}'] == 2.0
    assert m['cache_operator_policy_info{data_type="price",policy="default/price",'
             'strategy="active"}'] == 1.0

    def status() -> dict[str, Any]:
        return (kube.call(kube.api.get, CIP, "default", "price") or {}).get("status") or {}

    # fast-moving figures are metrics only; status keeps the replica counts
    assert "l1HitRatio" not in status() and "backplaneLagP99Seconds" not in status()
    assert m["cache_operator_backplane_lag_p99_seconds"] >= 0.3  # the skewed replica's
    assert m['cache_operator_policy_max_staleness_seconds{data_type="price",'
             'policy="default/price"}'] == 1.0
    assert m['cache_operator_policy_ready{policy="default/price"}'] == 1.0
    assert m['cache_operator_expected_replicas{policy="default/price"}'] == 2.0

    # liveness for Kubernetes
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"http://127.0.0.1:{op.liveness_port}/healthz")
    assert resp.status_code == 200

    # a replica that goes away leaves the metrics and the counts
    await skewed.close()
    await eventually(lambda: _with(scrape(), lambda m: lag(m, "replica-skewed") is None),
                     what="skewed replica dropped")
    await eventually(lambda: status().get("replicasInSync") == "1/1", what="1/1 in sync")


async def _with(value: Any, check: Any) -> Any:
    result = await value
    return result if check(result) else None


async def test_redis_restart_policies_are_republished_by_the_timer(
        kube: Any, kubectl: Any, start_operator: Any, redis_server: Any, redis: Any) -> None:
    op = start_operator(EPOCH_POLL_INTERVAL="3600")  # the epoch watch never sees it
    await kubectl.apply(cip("price"))
    await eventually(lambda: redis.hget(KEYS.policies, "price"), what="published")
    redis_server.restart()  # keeps nothing on disk: every policy is gone
    await eventually(lambda: _hget(redis, "price"), timeout=20, what="republished by the timer")
    m = await eventually(lambda: _with(_scrape(op), lambda m: m.get(TIMER, 0) >= 1),
                         what="counted as the timer's")
    assert m[EPOCH] == 0


TIMER = 'cache_operator_republish_total{reason="timer"}'
EPOCH = 'cache_operator_republish_total{reason="epoch"}'


async def test_new_redis_epoch_republishes_every_policy_at_once(
        kube: Any, kubectl: Any, start_operator: Any, replicas: Any, redis_server: Any,
        redis: Any) -> None:
    # One health round an hour: only the epoch watch can republish in this test.
    op = start_operator(PROBE_INTERVAL="3600", EPOCH_POLL_INTERVAL="0.5")
    first = await replicas("replica-1")
    await kubectl.apply(cip("price"))
    await kubectl.apply(cip("stock", tags=["stock:{id}"]))
    for data_type in ("price", "stock"):
        await eventually(lambda d=data_type: (p := first.policies.get(d)) is not None
                         and p.source == f"default/{d}", what=f"{data_type} applied")
    epoch = await redis.hget(KEYS.state, "epoch")
    assert epoch

    async def republished(n: float) -> dict[str, float] | None:
        """Both policies back in Redis, as the operator's, counted ``n`` times."""
        for data_type in ("price", "stock"):
            raw = await _hget(redis, data_type)
            if raw is None or Policy.from_wire(raw).source != f"default/{data_type}":
                return None
        m = await _scrape(op)
        return m if m.get(EPOCH) == n else None

    # FLUSHALL: policies and invalidation state gone; a new epoch follows
    await redis.flushall()
    m = await eventually(lambda: republished(2), what="republished after FLUSHALL")
    assert m[TIMER] == 0
    # a replica that starts now runs the operator's policies, not the defaults
    second = await replicas("replica-2")
    await eventually(lambda: (p := second.policies.get("price")) is not None
                     and p.source == "default/price", what="new replica has the policy")
    assert (await redis.hget(KEYS.state, "epoch")) not in (None, epoch)
    assert first.policies.get("price").source == "default/price"  # kept throughout

    # a restart of Redis without persistence: the same, once it is back
    redis_server.restart()
    await eventually(lambda: republished(4), what="republished after a restart")
    third = await replicas("replica-3")
    await eventually(lambda: (p := third.policies.get("stock")) is not None
                     and p.source == "default/stock", what="replica after restart")


async def _hget(redis: Any, field: str) -> bytes | None:
    try:
        return await redis.hget(KEYS.policies, field)  # type: ignore[no-any-return]
    except Exception:
        return None


async def test_watch_namespace_limits_what_is_handled(
        kube: Any, kubectl: Any, start_operator: Any, redis: Any) -> None:
    start_operator(WATCH_NAMESPACE="team-a")
    await kubectl.apply(cip("stock", namespace="team-b"))
    await kubectl.apply(cip("price", namespace="team-a"))
    await eventually(lambda: redis.hget(KEYS.policies, "price"), what="team-a published")
    # a second change of team-a's policy, handled end to end, is a later point in
    # the operator's stream than team-b's creation: anything it would do about
    # team-b (finalizer, status, publishing) is done by then
    await kubectl.apply(cip("price", namespace="team-a", expiration="20m"))

    def get(namespace: str, name: str) -> dict[str, Any]:
        return kube.call(kube.api.get, CIP, namespace, name) or {}

    await eventually(lambda: (get("team-a", "price").get("status") or {})
                     .get("observedGeneration") == 2, what="team-a's second generation handled")
    assert get("team-a", "price")["metadata"].get("finalizers")
    assert await redis.hget(KEYS.policies, "stock") is None
    stock = get("team-b", "stock")
    assert not stock.get("status") and not stock["metadata"].get("finalizers")


async def test_redis_outage_is_reported_then_retried(
        kube: Any, kubectl: Any, start_operator: Any, redis_server: Any, redis: Any) -> None:
    start_operator()
    redis_server.stop()
    await kubectl.apply(cip("stock"))

    def stock() -> dict[str, Any] | None:
        return kube.call(kube.api.get, CIP, "default", "stock")

    applied = await eventually(lambda: condition(stock(), "Applied"), what="Applied condition")
    assert applied["status"] == "False" and applied["reason"] == "RedisUnavailable"
    redis_server.start()
    await eventually(lambda: _hget(redis, "stock"), timeout=30, what="published after retry")
    await eventually(lambda: condition(stock(), "Applied").get("status") == "True",
                     what="Applied after retry")


async def test_restarted_operator_resumes_and_republishes(
        kube: Any, kubectl: Any, start_operator: Any, redis: Any) -> None:
    first = start_operator()
    await kubectl.apply(cip("price"))
    await eventually(lambda: redis.hget(KEYS.policies, "price"), what="published")
    assert first.stop() == 0  # a clean shutdown on SIGTERM
    await redis.hdel(KEYS.policies, "price")
    start_operator()  # resume handler: the policy is published again
    raw = await eventually(lambda: redis.hget(KEYS.policies, "price"), what="republished")
    assert Policy.from_wire(raw).source == "default/price"



async def test_examples_are_accepted_by_kubectl_and_applied(
        kube: Any, kubectl: Any, start_operator: Any, replicas: Any) -> None:
    node = await replicas("replica-x")
    start_operator()
    done = await kubectl.arun("apply", "--validate=false", "-f",
                              str(ROOT / "operator" / "examples" / "policies.yaml"))
    assert done.stdout.count(" created") == 5
    await eventually(lambda: len(node.policies.all()) == 5, what="all examples applied")
    assert node.policies.get("country").strategy == "ttl"
    assert node.policies.get("product").tags == ("product:{id}", "category:{category_id}",
                                                 "products")

    async def rows() -> list[list[str]] | None:
        out = (await kubectl.arun("get", "cip", "-o", "wide")).stdout.splitlines()[1:]
        table = [line.split() for line in out]
        return table if len(table) == 5 and all("1/1" in r and "True" in r for r in table) \
            else None

    table = await eventually(rows, what="5 ready rows")
    assert sorted(r[0] for r in table) == ["category", "country", "price", "product", "stock"]


async def test_a_killed_replica_shows_against_the_workload(
        kube: Any, kubectl: Any, start_operator: Any, replicas: Any, redis: Any) -> None:
    """Heartbeats alone would show 2/2 after a replica dies; the Deployment says 3."""
    kube.put_workload("deployment", "shop", "catalog", desired=3, ready=3)
    nodes = [await replicas(f"replica-{i}") for i in range(3)]
    op = start_operator(CATALOG_WORKLOAD="deployment/catalog", REPLICA_TIMEOUT="1")
    await kubectl.apply(cip("price", namespace="shop"))

    def price() -> dict[str, Any]:
        return kube.call(kube.api.get, CIP, "shop", "price") or {}

    await eventually(lambda: condition(price(), "Ready").get("reason") == "InSync",
                     what="Ready=InSync with 3 replicas")
    assert price()["status"]["replicasInSync"] == "3/3"
    writes_before = _status_writes(kube, "shop", "price")

    # one replica dies (no more heartbeats); its pod is no longer ready
    await nodes[2].close()
    kube.put_workload("deployment", "shop", "catalog", desired=3, ready=2)
    ready = await eventually(
        lambda: (c := condition(price(), "Ready")).get("reason") == "ReplicasMissing" and c,
        what="Ready=False ReplicasMissing")
    assert ready["status"] == "False"
    assert "deployment/catalog wants 3, 2 ready, 2 live" in ready["message"]
    assert price()["status"]["replicasInSync"] == "2/3"
    row = (await kubectl.arun("get", "cip", "-n", "shop")).stdout.splitlines()[1].split()
    assert row[4:7] == ["2/3", "False", "ReplicasMissing"]
    metrics = await _scrape(op)
    assert metrics['cache_operator_policy_ready{policy="shop/price"}'] == 0.0
    assert metrics['cache_operator_expected_replicas{policy="shop/price"}'] == 3.0
    assert metrics['cache_operator_replicas_in_sync{policy="shop/price"}'] == 2.0

    # status is written when it changes, not on every probe: further rounds
    # (each leaves its probe hash in Redis) add no writes
    changed = _status_writes(kube, "shop", "price")
    assert changed > writes_before
    probes = len(await redis.keys("hc:probe:*"))
    await eventually(lambda: _at_least(redis.keys("hc:probe:*"), probes + 4),
                     what="four more health rounds")
    assert _status_writes(kube, "shop", "price") == changed


async def _at_least(keys: Any, n: int) -> bool:
    return len(await keys) >= n


def _status_writes(kube: Any, namespace: str, name: str) -> int:
    """How many times the object's status changed, from the API's event log."""
    def count() -> int:
        seen, last = 0, None
        for bus in list(kube.api._buses.values()):
            for _rv, event in bus.history:
                meta = event.get("object", {}).get("metadata", {})
                if (meta.get("namespace"), meta.get("name")) == (namespace, name):
                    status = event["object"].get("status")
                    if status != last:
                        seen, last = seen + 1, status
        return seen
    return int(kube.call(count))


async def _scrape(op: Any) -> dict[str, float]:
    """The operator's own series from its /metrics."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{op.metrics_port}/metrics")).text
    out = {}
    for line in text.splitlines():
        if line.startswith("cache_operator_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def test_delete_without_redis_releases_the_finalizer_with_an_event(
        kube: Any, kubectl: Any, start_operator: Any, redis_server: Any, redis: Any) -> None:
    start_operator(REDIS_RETRY_DELAY="0.2")
    await kubectl.apply(cip("stock"))
    await eventually(lambda: redis.hget(KEYS.policies, "stock"), what="published")
    redis_server.stop()  # e.g. uninstalled before the policies
    await kubectl.arun("delete", "--wait=false", "cip", "stock")

    def stock() -> dict[str, Any] | None:
        return kube.call(kube.api.get, CIP, "default", "stock")

    await eventually(lambda: stock() is None, what="not stuck in Terminating")
    [released] = await eventually(lambda: events(kube, "FinalizerReleased"), what="the event")
    assert released["type"] == "Warning"
    assert "cannot reach Redis after 3 attempts" in released["message"]
    assert "HDEL hc:policies stock" in released["message"]
