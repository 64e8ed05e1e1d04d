"""The kopf handlers for CacheInvalidationPolicy resources: thin adapters.

Each handler reads what it needs (its kwargs, Redis, the Kubernetes API),
asks :mod:`cache_operator.reconciler` what to do, and does it: publish,
patch status (only what changed), post events, set metrics. Shared state (a
:class:`~cache_operator.runtime.Runtime`) reaches them through kopf's
``memo``, never through module globals.

- create / update / resume -> :func:`reconcile`: judge the spec (valid? the
  governing policy of its data type?), publish, record ``observedGeneration``
  and the ``Applied`` / ``Ready`` conditions. Errors end up in status and as
  Events, never as a crash loop.
- delete -> :func:`forget`: the data type returns to the service's defaults
  (only if the policy in Redis is still this resource's). If Redis stays
  unreachable the finalizer is released after ``DELETE_RETRIES`` attempts,
  with a Warning event, so a policy is never stuck in Terminating.
- timer (every PROBE_INTERVAL) -> :func:`health`: Ready and replica counts,
  re-publication of a policy Redis lost or that became this resource's.
- outside kopf, the runtime's epoch watcher republishes every policy the
  handlers recorded as published (``Runtime.own``) within about a second of
  Redis losing its state (:mod:`cache_operator.epoch`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf
from redis.exceptions import RedisClusterException, RedisError

from .config import FINALIZER, NODE_NAME, Config
from .metrics import Metrics
from .reconciler import (
    Duplicate,
    Health,
    Invalid,
    Republish,
    health_fields,
    judge,
    policy_ref,
    published,
    ready,
    redis_unavailable,
    rejected,
    republish,
    status_patch,
    without_legacy_finalizer,
)
from .redaction import redact
from .runtime import Runtime
from .status import READY
from .validation import GROUP, PLURAL, VERSION
from .workload import WorkloadReader

INDEX = "cip_by_data_type"
RESOURCE = (GROUP, VERSION, PLURAL)
DELETE_RETRIES = 3  # then the finalizer is released without Redis


def _quiet_success(record: logging.LogRecord) -> bool:
    """Drop kopf's per-tick "Timer 'health' succeeded." / "Indexer ... succeeded." lines."""
    if record.levelno != logging.INFO:
        return True
    text = record.getMessage()
    return not (text.endswith("succeeded.") and text.startswith(("Timer 'health'", "Indexer ")))


async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Keep kopf's bookkeeping in annotations under our own group (no status.kopf,
    # which the CRD's status schema would prune), with our own finalizer.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = FINALIZER
    # Events say who wrote them (`kubectl describe`'s "From" column).
    settings.posting.reporting_component = NODE_NAME
    settings.posting.reporting_instance = os.environ.get("HOSTNAME") or NODE_NAME
    # Our own events are posted explicitly; of kopf's log lines only problems are.
    settings.posting.level = logging.WARNING
    logging.getLogger("kopf.objects").addFilter(_quiet_success)
    # Bounded watches and requests: a silently dead connection is replaced.
    settings.watching.reconnect_backoff = 1.0
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 30
    # No dynamic scanning: the namespaces are taken as given and the CRD is
    # discovered once, so no RBAC on namespaces or CRDs is needed.
    settings.scanning.disabled = True


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config.
    info = kopf.login_with_service_account(**kwargs)
    return info if info is not None else kopf.login_with_kubeconfig(**kwargs)


def cip_by_data_type(namespace: str | None, name: str, spec: Mapping[str, Any],
                     meta: Mapping[str, Any], **_: Any) -> dict[Any, Any]:
    data_type = spec.get("dataType")
    if not isinstance(data_type, str) or meta.get("deletionTimestamp"):
        return {}
    return {(namespace, data_type): (str(meta.get("creationTimestamp") or ""), name)}


def _reject(rt: Runtime, verdict: Invalid | Duplicate, ref: str, status: Mapping[str, Any],
            patch: kopf.Patch, generation: int, *, observe: bool) -> bool:
    """Status and metrics of a policy that is not published; True if status changed."""
    if isinstance(verdict, Duplicate):
        rt.metrics.forget_policy(ref)
    rt.metrics.policy_ready.labels(ref).set(0)
    fields = {"observedGeneration": generation} if observe else None
    changes = status_patch(status, generation, *rejected(verdict), fields=fields)
    patch.status.update(changes)
    return bool(changes)


def _record_health(rt: Runtime, ref: str, health: Health, generation: int,
                   ) -> tuple[bool, str, str]:
    ok, reason, message = ready(health, generation)
    rt.metrics.set_readiness(ref, ready=ok, expected=health.expected, in_sync=health.in_sync)
    return ok, reason, message


async def reconcile(body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta, status: kopf.Status,
                    namespace: str | None, name: str, patch: kopf.Patch, logger: kopf.Logger,
                    memo: kopf.Memo, old: Any = None, **kwargs: Any) -> None:
    rt: Runtime = memo.runtime
    ref = policy_ref(namespace, name)
    generation = int(meta.get("generation") or 0)
    finalizers = without_legacy_finalizer(meta.get("finalizers"))
    if finalizers is not None:
        patch.meta["finalizers"] = finalizers
    verdict = judge(spec, namespace=namespace, name=name, generation=generation,
                    index=kwargs[INDEX])
    async with rt.lock(ref):
        if isinstance(verdict, Invalid):
            _reject(rt, verdict, ref, status, patch, generation, observe=True)
            kopf.event(body, type="Warning", reason=verdict.reason, message=str(verdict.error))
            logger.warning("invalid policy %s: %s", ref, verdict.error)
            return
        policy = verdict.policy
        old_type = ((old or {}).get("spec") or {}).get("dataType")
        try:
            if isinstance(old_type, str) and old_type != policy.data_type:
                # The CRD makes dataType immutable; without it, move the policy.
                await rt.publisher.unpublish(old_type, source=ref)
            if isinstance(verdict, Duplicate):
                rt.disown(ref)
                _reject(rt, verdict, ref, status, patch, generation, observe=True)
                kopf.event(body, type="Warning", reason=verdict.reason, message=verdict.message)
                return
            await rt.publisher.publish(policy)
            rt.own(ref, policy)
        except (RedisError, RedisClusterException) as exc:
            patch.status.update(status_patch(status, generation, redis_unavailable(exc)))
            raise kopf.TemporaryError(f"cannot reach Redis: {redact(str(exc))}",
                                      delay=rt.config.redis_retry_delay) from exc
        kopf.event(body, type="Normal", reason="Applied",
                   message=f"published {policy.data_type} ({policy.strategy}) "
                           f"generation {generation}")
        rt.metrics.set_policy(ref, policy.data_type, policy.strategy)
        rt.metrics.set_staleness(ref, policy.data_type, policy.max_staleness)
        updates = [published(generation, rt.keys.policies)]
        fields: dict[str, Any] = {"observedGeneration": generation}
        try:
            health = await rt.health(policy, namespace, meta.get("annotations"),
                                     wait=rt.config.probe_wait)
        except (RedisError, RedisClusterException):
            health = None
        if health is not None:
            ok, reason, message = _record_health(rt, ref, health, generation)
            updates.append((READY, ok, reason, message))
            fields.update(health_fields(health))
        patch.status.update(status_patch(status, generation, *updates, fields=fields))


async def forget(body: kopf.Body, spec: kopf.Spec, namespace: str | None, name: str,
                 logger: kopf.Logger, memo: kopf.Memo, retry: int, **_: Any) -> None:
    rt: Runtime = memo.runtime
    ref = policy_ref(namespace, name)
    data_type = spec.get("dataType")
    async with rt.lock(ref):
        rt.disown(ref)
        rt.metrics.forget_policy(ref)
        if not isinstance(data_type, str):
            return
        try:
            result = await rt.publisher.unpublish(data_type, source=ref)
        except (RedisError, RedisClusterException) as exc:
            if retry + 1 < DELETE_RETRIES:
                raise kopf.TemporaryError(f"cannot reach Redis: {redact(str(exc))}",
                                          delay=rt.config.redis_retry_delay) from exc
            message = (f"cannot reach Redis after {retry + 1} attempts "
                       f"({redact(str(exc))}); the finalizer is released and the policy "
                       f"for {data_type} may stay in Redis: "
                       f"remove it with HDEL {rt.keys.policies} {data_type}")
            kopf.event(body, type="Warning", reason="FinalizerReleased", message=message)
            logger.warning("%s: %s", ref, message)
            return
    if result == 1:
        logger.info("data type %s returned to the service's defaults", data_type)
    elif result == -1:
        logger.info("policy for %s in Redis belongs to another source; left alone", data_type)


async def health(body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta, status: kopf.Status,
                 namespace: str | None, name: str, patch: kopf.Patch, logger: kopf.Logger,
                 memo: kopf.Memo, **kwargs: Any) -> None:
    if meta.get("deletionTimestamp"):
        return
    rt: Runtime = memo.runtime
    ref = policy_ref(namespace, name)
    generation = int(meta.get("generation") or 0)
    verdict = judge(spec, namespace=namespace, name=name, generation=generation,
                    index=kwargs[INDEX])
    if isinstance(verdict, Invalid):
        return  # reconcile already put the error in status
    if isinstance(verdict, Duplicate):
        async with rt.lock(ref):
            rt.disown(ref)
        _reject(rt, verdict, ref, status, patch, generation, observe=False)
        return
    policy = verdict.policy
    updates = []
    async with rt.lock(ref):
        try:
            stored = await rt.publisher.stored(policy.data_type)
            action = republish(stored, policy, status.get("observedGeneration"))
            if action is Republish.WAIT:
                return  # a newer generation was applied meanwhile; next tick
            if status.get("observedGeneration") == generation:
                rt.own(ref, policy)  # e.g. after an operator restart: resume is done
            if action is Republish.PUBLISH:
                await rt.publisher.publish(policy)
                rt.metrics.republished.labels("timer").inc()
                held = "nothing" if stored is None else stored.source
                kopf.event(body, type="Normal", reason="Republished",
                           message=f"published {policy.data_type} generation {generation} "
                                   f"(Redis held {held})")
                updates.append(published(generation, rt.keys.policies))
            fleet = await rt.health(policy, namespace, meta.get("annotations"))
        except (RedisError, RedisClusterException) as exc:
            logger.warning("fleet health of %s: cannot reach Redis: %s", ref, redact(str(exc)))
            return
    rt.metrics.set_policy(ref, policy.data_type, policy.strategy)
    rt.metrics.set_staleness(ref, policy.data_type, policy.max_staleness)
    ok, reason, message = _record_health(rt, ref, fleet, generation)
    updates.append((READY, ok, reason, message))
    patch.status.update(status_patch(status, generation, *updates,
                                     fields=health_fields(fleet)))


def register(registry: kopf.OperatorRegistry, config: Config) -> None:
    """Register every handler of the operator in ``registry``."""
    kopf.on.startup(id="configure", registry=registry)(configure)
    kopf.on.login(id="login", registry=registry)(login)
    kopf.index(*RESOURCE, id=INDEX, registry=registry)(cip_by_data_type)
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(*RESOURCE, id="reconcile", backoff=config.redis_retry_delay,
           registry=registry)(reconcile)
    kopf.on.delete(*RESOURCE, id="forget", backoff=config.redis_retry_delay,
                   registry=registry)(forget)
    kopf.timer(*RESOURCE, id="health", interval=config.probe_interval,
               backoff=config.redis_retry_delay, registry=registry)(health)


async def operate(config: Config, metrics: Metrics | None = None, *,
                  stop_flag: asyncio.Event | None = None,
                  workloads: WorkloadReader | None = None) -> None:
    """Run the operator until it is stopped (SIGINT/SIGTERM or ``stop_flag``).
    The workload reader is made from the environment when a workload is
    configured and none is given."""
    if workloads is None and config.catalog_workload is not None:
        workloads = WorkloadReader.from_environment(ttl=config.probe_interval / 2)
    rt = Runtime(config, metrics, workloads=workloads)
    registry = kopf.OperatorRegistry()
    register(registry, config)
    await rt.start()
    try:
        await kopf.operator(
            registry=registry,
            standalone=True,  # no peering: needs no extra CRDs or RBAC
            clusterwide=config.clusterwide,
            namespaces=config.namespaces,
            liveness_endpoint=config.liveness_endpoint,
            memo=kopf.Memo(runtime=rt),
            stop_flag=stop_flag,
        )
    finally:
        await rt.stop()
