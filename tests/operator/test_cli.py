"""``python -m cache_operator apply|validate``: the same validation and
publishing as the operator, without Kubernetes, against a real Redis."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from hybridcache.keys import Keys
from hybridcache.policy import Policy
from hybridcache.wire import decode_message

from tests.operator.conftest import ROOT, eventually
from tests.operator.crd_tools import EXAMPLES

KEYS = Keys("hc:")


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cache_operator", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


async def acli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, *args, stdin=stdin)


async def test_apply_publishes_every_example(redis_server: Any, redis: Any) -> None:
    pubsub = redis.pubsub()
    await pubsub.subscribe(KEYS.channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    proc = await acli("apply", "-f", str(EXAMPLES), "--redis-url", redis_server.url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("published ") == 5

    stored = {k.decode(): Policy.from_wire(v)
              for k, v in (await redis.hgetall(KEYS.policies)).items()}
    assert set(stored) == {"price", "stock", "product", "country", "category"}
    product = stored["product"]
    assert product.tags == ("product:{id}", "category:{category_id}", "products")
    assert product.source == f"cli:{EXAMPLES}" and product.generation == 1
    assert stored["country"].strategy == "ttl" and stored["country"].expiration == 3600.0

    messages = []
    while len(messages) < 5:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert msg is not None, "missing backplane message"
        messages.append(decode_message(msg["data"]))
    assert [m.id for m in messages] == ["price", "stock", "product", "country", "category"]
    assert {m.op for m in messages} == {"policy"} and {m.node for m in messages} == {
        "cache-operator"}
    seqs = [m.seq for m in messages]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    await pubsub.aclose()


async def test_reapply_bumps_generation_only_on_change(
        redis_server: Any, redis: Any, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    text = EXAMPLES.read_text()
    path.write_text(text)
    for _ in range(2):
        assert (await acli("apply", "-f", str(path), "--redis-url", redis_server.url)
                ).returncode == 0
    assert Policy.from_wire(await redis.hget(KEYS.policies, "price")).generation == 1
    path.write_text(text.replace("expiration: 10m\n  localExpiration: 30s",
                                 "expiration: 20m\n  localExpiration: 30s"))
    assert (await acli("apply", "-f", str(path), "--redis-url", redis_server.url)
            ).returncode == 0
    price = Policy.from_wire(await redis.hget(KEYS.policies, "price"))
    assert (price.generation, price.expiration) == (2, 1200.0)
    assert Policy.from_wire(await redis.hget(KEYS.policies, "stock")).generation == 1


async def test_invalid_file_publishes_nothing(redis_server: Any, redis: Any,
                                              tmp_path: Path) -> None:
    pubsub = redis.pubsub()
    await pubsub.subscribe(KEYS.channel)
    await pubsub.get_message(timeout=1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLES.read_text().replace("localExpiration: 1m\n  maxStaleness: 10m",
                                                "localExpiration: 1h\n  maxStaleness: 10m"))
    proc = await acli("apply", "-f", str(bad), "--redis-url", redis_server.url)
    assert proc.returncode == 2
    assert "document 5 (category): spec.localExpiration: must not be longer than " \
           "spec.expiration" in proc.stderr
    assert "nothing was published" in proc.stderr
    assert await redis.hlen(KEYS.policies) == 0
    assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
    await pubsub.aclose()


async def test_apply_from_stdin_with_prefix_and_dry_run(redis_server: Any, redis: Any) -> None:
    doc = ("apiVersion: caching.hybridcache.io/v1alpha1\nkind: CacheInvalidationPolicy\n"
           "metadata: {name: stock, namespace: shop}\n"
           "spec: {dataType: stock, tags: ['product:{id}'], consistency: acknowledged}\n")
    proc = await acli("apply", "-f", "-", "--redis-url", redis_server.url, "--dry-run",
                      stdin=doc)
    assert proc.returncode == 0 and "valid: shop/stock" in proc.stdout
    assert await redis.hlen(KEYS.policies) == 0
    proc = await acli("apply", "-f", "-", "--redis-url", redis_server.url,
                      "--key-prefix", "team:", stdin=doc)
    assert proc.returncode == 0, proc.stderr
    body = orjson.loads(await redis.hget("team:policies", "stock"))
    assert body["consistency"] == "acknowledged" and body["source"] == "cli:-"


async def test_validate_and_errors() -> None:
    ok = await acli("validate", "-f", str(EXAMPLES))
    assert ok.returncode == 0 and ok.stdout.count("valid: ") == 5
    bad = await acli("validate", "-f", "-", stdin="apiVersion: v1\nkind: ConfigMap\n")
    assert bad.returncode == 2 and "apiVersion: must be caching.hybridcache.io/v1alpha1" \
        in bad.stderr
    missing = await acli("validate", "-f", "/nonexistent.yaml")
    assert missing.returncode == 2 and "/nonexistent.yaml" in missing.stderr


async def test_redis_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    from tests.support.ports import free_port

    proc = await acli("apply", "-f", str(EXAMPLES), "--redis-url",
                      f"redis://127.0.0.1:{free_port()}/0")
    assert proc.returncode == 3 and "cannot publish" in proc.stderr


async def test_a_replica_applies_what_apply_published(redis_server: Any, replicas: Any) -> None:
    node = await replicas("replica-cli")
    proc = await acli("apply", "-f", str(EXAMPLES), "--redis-url", redis_server.url)
    assert proc.returncode == 0
    await eventually(lambda: len(node.policies.all()) == 5, what="5 policies applied")
    assert node.policies.get("price").tags == ("price:{id}", "product:{id}")


def test_run_without_a_cluster_exits_with_an_error(tmp_path: Path, redis_server: Any) -> None:
    import os

    env = {k: v for k, v in os.environ.items()
           if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env.update(HOME=str(tmp_path), METRICS_PORT="0", LIVENESS_ENDPOINT="",
               REDIS_URL=redis_server.url, PROBE_INTERVAL="0.2")
    for _ in range(3):  # it used to hang now and then while stopping its background round
        proc = subprocess.run([sys.executable, "-m", "cache_operator", "run"], env=env,
                              capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert proc.returncode != 0
        assert "credentials" in proc.stderr


def test_bad_environment_is_reported() -> None:
    import os

    proc = subprocess.run([sys.executable, "-m", "cache_operator", "run"],
                          env={**os.environ, "PROBE_INTERVAL": "often"},
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 2 and "PROBE_INTERVAL" in proc.stderr


OVERSIZED = [
    ("expiration: " + "9" * 400 + "s",
     "document 1 (price): spec.expiration: '" + "9" * 40 + "'... is 401 characters; at most 32"),
    ("expiration: " + "9" * 30 + "h",
     "document 1 (price): spec.expiration: '" + "9" * 30 + "h' is longer than the maximum,"
     " 8760h"),
    ("tags: [" + ", ".join(f"t{i}" for i in range(65)) + "]",
     "document 1 (price): spec.tags: at most 64 items, got 65"),
]


async def test_unbounded_values_are_refused_and_never_reach_redis(
        redis_server: Any, redis: Any) -> None:
    """A 400-digit duration used to become infinity, be stored as null and be
    reported as published; a 65-tag policy made every read of its type fail."""
    for field, message in OVERSIZED:
        doc = ("apiVersion: caching.hybridcache.io/v1alpha1\nkind: CacheInvalidationPolicy\n"
               "metadata: {name: price}\nspec:\n  dataType: price\n  tags: ['product:{id}']\n"
               f"  {field}\n").replace("  tags: ['product:{id}']\n  tags:", "  tags:")
        for command in (("validate",), ("apply", "--redis-url", redis_server.url)):
            proc = await acli(*command, "-f", "-", stdin=doc)
            assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
            assert message in proc.stderr, proc.stderr
            assert "published" not in proc.stdout
    assert await redis.hlen(KEYS.policies) == 0
