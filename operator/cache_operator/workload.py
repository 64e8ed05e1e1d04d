"""The catalog workload (a Deployment or StatefulSet) read through the
Kubernetes API with the official ``kubernetes`` client.

Heartbeats in Redis only show the replicas that are alive: a killed replica
simply stops being counted. The workload's desired and ready replicas say how
many there should be, so ``kubectl get cip`` shows 2/3 instead of 2/2.

The client is synchronous (urllib3); its calls run in a worker thread
(:func:`asyncio.to_thread`) so the event loop kopf shares is never blocked.
The official client is used rather than ``kubernetes_asyncio`` because it is
the one the Kubernetes project maintains and releases with each minor
version; one GET per namespace and round does not need an async transport.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Final

KINDS: Final = {"deployment": "Deployment", "statefulset": "StatefulSet"}
ANNOTATION: Final = "caching.hybridcache.io/workload"


@dataclass(frozen=True, slots=True)
class Workload:
    """The catalog Deployment or StatefulSet as the Kubernetes API reports it."""

    ref: str  # "deployment/catalog"
    desired: int  # spec.replicas
    ready: int  # status.readyReplicas


class WorkloadError(RuntimeError):
    """The workload could not be read (missing, forbidden, API unreachable)."""


@dataclass(frozen=True, slots=True)
class WorkloadRef:
    """``deployment/<name>`` or ``statefulset/<name>`` in the policy's namespace."""

    kind: str
    name: str

    @classmethod
    def parse(cls, text: str) -> WorkloadRef:
        kind, sep, name = text.strip().partition("/")
        kind = kind.lower()
        if not sep or kind not in KINDS or not name:
            raise ValueError(f"expected deployment/<name> or statefulset/<name>, got {text!r}")
        return cls(kind, name)

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


def workload_of(default: WorkloadRef | None, annotations: Any) -> WorkloadRef | None:
    """The workload a policy is counted against: its own annotation
    (``caching.hybridcache.io/workload: statefulset/catalog``) or the
    operator's configured default."""
    value = (annotations or {}).get(ANNOTATION)
    return WorkloadRef.parse(value) if isinstance(value, str) and value.strip() else default


class WorkloadReader:
    """Reads workloads, remembering each answer for ``ttl`` seconds so that one
    round of per-policy timers costs one API call per workload."""

    def __init__(self, api_client: Any = None, *, ttl: float = 1.0) -> None:
        from kubernetes import client

        self._api = client.AppsV1Api(api_client)
        self._exception = client.ApiException
        self._ttl = ttl
        self._cache: dict[tuple[str, WorkloadRef], tuple[float, Workload]] = {}

    @classmethod
    def from_environment(cls, *, ttl: float = 1.0) -> WorkloadReader:
        """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config
        (as kopf's login does)."""
        from .kubeclient import api_client

        return cls(api_client(), ttl=ttl)

    async def read(self, namespace: str, ref: WorkloadRef) -> Workload:
        key = (namespace, ref)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        workload = await asyncio.to_thread(self._read, namespace, ref)
        self._cache[key] = (now, workload)
        return workload

    def _read(self, namespace: str, ref: WorkloadRef) -> Workload:
        read = (self._api.read_namespaced_deployment if ref.kind == "deployment"
                else self._api.read_namespaced_stateful_set)
        try:
            obj = read(ref.name, namespace, _request_timeout=10)
        except self._exception as exc:
            if exc.status == 404:
                raise WorkloadError(f"{ref} not found in namespace {namespace}") from None
            raise WorkloadError(f"cannot read {ref} in {namespace}: "
                                f"{exc.status} {exc.reason}") from None
        except OSError as exc:  # urllib3's errors derive from it
            raise WorkloadError(f"cannot read {ref} in {namespace}: {exc}") from None
        desired = obj.spec.replicas if obj.spec and obj.spec.replicas is not None else 1
        ready = (obj.status.ready_replicas or 0) if obj.status else 0
        return Workload(ref=str(ref), desired=int(desired), ready=int(ready))

    def close(self) -> None:
        self._api.api_client.close()
