"""Fixtures for the operator's tests: a Kubernetes API (kmock over HTTP), the
operator as a real process, real kubectl, and real hybridcache replicas."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hybridcache import CacheOptions, HybridCache
from redis.asyncio import Redis

from tests.operator.crd_tools import load_crd
from tests.operator.kube import KubeApiServer
from tests.operator.kubectl import Kubectl
from tests.support.ports import free_port
from tests.support.process import ManagedProcess
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually  # noqa: F401 (re-exported)

ROOT = Path(__file__).resolve().parents[2]
CIP = "caching.hybridcache.io/v1alpha1/cacheinvalidationpolicies"


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeApiServer]:
    with KubeApiServer([load_crd()]) as server:
        server.kubeconfig(tmp_path / "kubeconfig")
        yield server


@pytest.fixture
def kubectl(kube: KubeApiServer, tmp_path: Path) -> Kubectl:
    return Kubectl(tmp_path / "kubeconfig")


class OperatorProcess(ManagedProcess):
    """``python -m cache_operator run`` as a child process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        super().__init__("operator", [sys.executable, "-m", "cache_operator", "run", "--verbose"],
                         log_path=log, env=env, cwd=ROOT)
        self.log = log
        self.metrics_port = int(env["METRICS_PORT"])
        self.liveness_port = int(env["LIVENESS_ENDPOINT"].split(":")[2].split("/")[0])

    def start(self, *, detach: bool = False) -> OperatorProcess:
        super().start(detach=detach)
        try:
            self.wait_until_ready(self._listening, timeout=30.0, interval=0.1)
        except RuntimeError as exc:
            raise AssertionError(f"operator did not start: {exc}") from None
        return self

    def _listening(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.liveness_port), 0.2):
            return True

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        return super().stop(sig, timeout)


@pytest.fixture
def start_operator(kube: KubeApiServer, redis_server: RedisServer,
                   tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(**extra: str) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(tmp_path / "kubeconfig"),
            "REDIS_URL": redis_server.url,
            "CACHE_KEY_PREFIX": "hc:",
            "PROBE_INTERVAL": "0.5",
            "METRICS_PORT": str(free_port()),
            "LIVENESS_ENDPOINT": f"http://127.0.0.1:{free_port()}/healthz",
            "WATCH_NAMESPACE": "",
            **extra,
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)
        op = OperatorProcess(env, tmp_path / f"operator-{len(started)}.log").start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[Callable[..., Any]]:
    """Factory of real hybridcache replicas on the test's Redis."""
    made: list[HybridCache] = []

    async def make(node_id: str, **options: Any) -> HybridCache:
        opts = CacheOptions(redis_url=redis_server.url, key_prefix="hc:", node_id=node_id,
                            heartbeat_interval=0.2, stats_interval=0.2, **options)
        cache = HybridCache(opts)
        await cache.start()
        await cache.wait_connected(10)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.close()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


