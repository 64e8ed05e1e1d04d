"""``python -m cache_operator cleanup``, the chart's pre-delete hook, against
the Kubernetes API emulator with the real kubectl and the operator as a real
process: with the operator running it releases the finalizers (and cleans
Redis); with the operator gone the command releases them after its timeout,
with an Event."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hybridcache.keys import Keys

from tests.operator.conftest import CIP, ROOT, eventually
from tests.operator.kube import KubeApiServer
from tests.operator.test_e2e import cip, events

pytestmark = pytest.mark.slow

KEYS = Keys("hc:")
FINALIZER = "caching.hybridcache.io/cleanup"


def cleanup(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "CACHE_KEY_PREFIX": "hc:"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run([sys.executable, "-m", "cache_operator", "cleanup", *args],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)


def stored(kube: Any, namespace: str, name: str) -> dict[str, Any] | None:
    return kube.call(kube.api.get, CIP, namespace, name)  # type: ignore[no-any-return]


async def handled(kube: Any, redis: Any, namespace: str, name: str, data_type: str) -> None:
    """The operator has seen the policy: it holds our finalizer and is in Redis."""
    await eventually(lambda: FINALIZER in ((stored(kube, namespace, name) or {})
                                           .get("metadata", {}).get("finalizers") or []),
                     what=f"finalizer on {namespace}/{name}")
    await eventually(lambda: redis.hexists(KEYS.policies, data_type), what="published")


async def test_with_the_operator_running_it_releases_the_finalizers(
        kube: Any, kubectl: Any, start_operator: Any, redis: Any, tmp_path: Path) -> None:
    start_operator()
    for data_type in ("price", "stock"):
        await kubectl.apply(cip(data_type, namespace="shop"))
        await handled(kube, redis, "shop", data_type, data_type)
    await kubectl.apply(cip("country", namespace="other"))
    await handled(kube, redis, "other", "country", "country")

    proc = await asyncio.to_thread(cleanup, tmp_path / "kubeconfig", "--namespace", "shop",
                                   "--timeout", "60", "--poll", "0.2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == (
        "done: 2 released by the operator, 0 released by this command")
    assert stored(kube, "shop", "price") is None and stored(kube, "shop", "stock") is None
    # the operator's delete handler ran: the data types are back to the defaults
    assert not await redis.hexists(KEYS.policies, "price")
    assert not await redis.hexists(KEYS.policies, "stock")
    assert events(kube, "FinalizerReleased") == []
    # another namespace is left alone
    assert stored(kube, "other", "country") is not None
    assert await redis.hexists(KEYS.policies, "country")


async def test_with_the_operator_gone_it_releases_them_itself_with_an_event(
        kube: Any, kubectl: Any, start_operator: Any, redis: Any, tmp_path: Path) -> None:
    operator = start_operator()
    await kubectl.apply(cip("price", namespace="shop"))
    await handled(kube, redis, "shop", "price", "price")
    # a policy with someone else's finalizer too: only ours is removed
    await kubectl.apply(cip("stock", namespace="shop"))
    await handled(kube, redis, "shop", "stock", "stock")
    operator.stop()
    await kubectl.arun("patch", "-n", "shop", "cip", "stock", "--type=json", "-p",
                       '[{"op": "add", "path": "/metadata/finalizers/-", '
                       '"value": "example.com/keep"}]')

    proc = await asyncio.to_thread(cleanup, tmp_path / "kubeconfig", "-n", "shop",
                                   "--timeout", "1", "--poll", "0.2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == (
        "done: 0 released by the operator, 2 released by this command")
    assert stored(kube, "shop", "price") is None
    stock = stored(kube, "shop", "stock")
    assert stock is not None and stock["metadata"]["finalizers"] == ["example.com/keep"]
    assert stock["metadata"].get("deletionTimestamp")

    released = {e["involvedObject"]["name"]: e for e in events(kube, "FinalizerReleased")}
    assert set(released) == {"price", "stock"}
    event = released["price"]
    assert event["type"] == "Warning" and event["involvedObject"]["namespace"] == "shop"
    assert event["involvedObject"]["kind"] == "CacheInvalidationPolicy"
    assert event["source"]["component"] == "cache-operator"
    assert event["reportingComponent"] == "cache-operator"
    assert "did not process the deletion within 1s" in event["message"]
    assert event["message"].endswith("remove it with HDEL hc:policies price")
    # nobody cleaned Redis: the event says how
    assert await redis.hexists(KEYS.policies, "price")


def test_nothing_to_do_and_a_cluster_without_the_crd(tmp_path: Path) -> None:
    with KubeApiServer([]) as server:
        kubeconfig = server.kubeconfig(tmp_path / "kubeconfig")
        proc = cleanup(kubeconfig, "-n", "shop", "--timeout", "1")
    assert proc.returncode == 0, proc.stderr
    assert "CacheInvalidationPolicy is not served (CRD not installed?)" in proc.stdout


def test_an_unreachable_api_is_a_readable_failure(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n")
    proc = cleanup(kubeconfig, "-n", "shop", "--timeout", "1")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: list cacheinvalidationpolicies in shop: ")
    assert "Traceback" not in proc.stderr
