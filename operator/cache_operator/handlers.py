"""The kopf handlers for CacheInvalidationPolicy resources.

``register(registry, runtime)`` adds them to a kopf registry; ``runtime`` holds
the Redis client, the policy store, the fleet monitor and the metrics. The
runtime is started before kopf and stopped after it (:func:`operate`), so its
background round never outlives or blocks kopf's own shutdown.

- create / update / resume -> :func:`reconcile`: validate (schema-equivalent
  checks, the library's rules, tag template syntax, one policy per dataType in
  a namespace), compile, publish to Redis and the backplane, record
  ``observedGeneration`` and the ``Applied`` / ``Ready`` conditions. Errors end
  up in status and as Events, never as a crash loop.
- delete -> the data type returns to the service's defaults (only if the
  policy in Redis is still this resource's).
- timer (every PROBE_INTERVAL) -> fleet health in status and metrics; it also
  re-publishes a policy Redis lost (Redis restarted) or that became this
  resource's to apply (the duplicate it lost to was deleted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from hybridcache.keys import Keys
from hybridcache.policy import Policy
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .config import Config
from .fleet import FleetMonitor, in_sync
from .metrics import Metrics
from .status import (
    APPLIED,
    READY,
    changed_fields,
    find_condition,
    health_fields,
    ready_condition,
    with_condition,
)
from .store import PolicyStore
from .validation import GROUP, PLURAL, VERSION, PolicyError, compile_spec

INDEX = "cip_by_data_type"
REDIS_RETRY_DELAY = 5.0


class Runtime:
    """What the handlers share: configuration, Redis, the store, the monitor."""

    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.keys = Keys(config.key_prefix)
        self.redis: Redis | None = None
        self._store: PolicyStore | None = None
        self._monitor: FleetMonitor | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def store(self) -> PolicyStore:
        assert self._store is not None, "Runtime.start() first"
        return self._store

    @property
    def monitor(self) -> FleetMonitor:
        assert self._monitor is not None, "Runtime.start() first"
        return self._monitor

    def lock(self, ref: str) -> asyncio.Lock:
        return self._locks.setdefault(ref, asyncio.Lock())

    async def start(self) -> None:
        self.redis = Redis.from_url(
            self.config.redis_url, socket_timeout=5, socket_connect_timeout=5,
            health_check_interval=30)
        self._store = PolicyStore(self.redis, self.keys)
        self._monitor = FleetMonitor(self.redis, self.keys, self.config, self._store, self.metrics)
        self._monitor.start()

    async def stop(self) -> None:
        if self._monitor is not None:
            await self._monitor.stop()
        if self.redis is not None:
            await self.redis.aclose()

    async def policy_health(self, policy: Policy, *, wait: float = 0.0) -> dict[str, Any]:
        """Health fields for one policy; with ``wait``, poll up to that long for
        every live replica to acknowledge the policy's generation."""
        deadline = time.monotonic() + wait
        while True:
            live = await self.monitor.live_replicas()
            acks = await self.store.acks(policy.data_type)
            if in_sync(live, acks, policy.generation) >= len(live) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        return health_fields(self.monitor.snapshot, live, acks, policy.data_type,
                             policy.generation)


def _quiet_success(record: logging.LogRecord) -> bool:
    """Drop kopf's per-tick "Timer 'health' succeeded." / "Indexer ... succeeded." lines."""
    if record.levelno != logging.INFO:
        return True
    text = record.getMessage()
    return not (text.endswith("succeeded.") and text.startswith(("Timer 'health'", "Indexer ")))


def owner_of(index: Mapping[Any, Iterable[Any]], namespace: str | None,
             data_type: str) -> str | None:
    """The resource that governs a data type in a namespace: the oldest one
    (then the first by name) among those that name it."""
    entries = [tuple(e) for e in index.get((namespace, data_type), [])]
    if not entries:
        return None
    return str(min(entries)[1])


def _set_conditions(patch: kopf.Patch, status: Mapping[str, Any], generation: int,
                    *updates: tuple[str, bool, str, str]) -> None:
    conditions: list[dict[str, Any]] = list((status or {}).get("conditions") or [])
    for ctype, ok, reason, message in updates:
        conditions = with_condition(conditions, ctype, ok, reason, message, generation)
    if conditions != list((status or {}).get("conditions") or []):
        patch.status["conditions"] = conditions


def _same_conditions(status: Mapping[str, Any], ctype: str, ok: bool, reason: str,
                     generation: int) -> bool:
    cond = find_condition(status, ctype)
    return bool(cond and cond.get("status") == ("True" if ok else "False")
                and cond.get("reason") == reason and cond.get("observedGeneration") == generation)


def register(registry: kopf.OperatorRegistry, rt: Runtime) -> None:
    """Register every handler of the operator in ``registry``."""
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(id="configure", registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Keep kopf's bookkeeping in annotations under our own group (no status.kopf,
        # which the CRD's status schema would prune), and post handler logs as events.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration")
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

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config.
        info = kopf.login_with_service_account(**kwargs)
        return info if info is not None else kopf.login_with_kubeconfig(**kwargs)

    @kopf.index(*resource, id=INDEX, registry=registry)
    def cip_by_data_type(namespace: str | None, name: str, spec: Mapping[str, Any],
                         meta: Mapping[str, Any], **_: Any) -> dict[Any, Any]:
        data_type = spec.get("dataType")
        if not isinstance(data_type, str) or meta.get("deletionTimestamp"):
            return {}
        return {(namespace, data_type): (str(meta.get("creationTimestamp") or ""), name)}

    @kopf.on.resume(*resource, id="reconcile", backoff=REDIS_RETRY_DELAY, registry=registry)
    @kopf.on.create(*resource, id="reconcile", backoff=REDIS_RETRY_DELAY, registry=registry)
    @kopf.on.update(*resource, id="reconcile", backoff=REDIS_RETRY_DELAY, registry=registry)
    async def reconcile(body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta,
                        status: kopf.Status, namespace: str | None, name: str,
                        patch: kopf.Patch, logger: kopf.Logger,
                        old: Any = None, **kwargs: Any) -> None:
        ref = f"{namespace}/{name}"
        generation = int(meta.get("generation") or 0)
        index = kwargs[INDEX]
        async with rt.lock(ref):
            try:
                policy = compile_spec(dict(spec), generation=generation, source=ref)
            except PolicyError as exc:
                message = f"{exc}; the last valid generation (if any) stays applied"
                _set_conditions(patch, status, generation,
                                (APPLIED, False, exc.reason, message),
                                (READY, False, exc.reason, message))
                patch.status["observedGeneration"] = generation
                kopf.event(body, type="Warning", reason=exc.reason, message=str(exc))
                logger.warning("invalid policy %s: %s", ref, exc)
                return

            old_type = ((old or {}).get("spec") or {}).get("dataType")
            try:
                if isinstance(old_type, str) and old_type != policy.data_type:
                    # The CRD makes dataType immutable; without it, move the policy.
                    await rt.store.unpublish(old_type, source=ref)

                owner = owner_of(index, namespace, policy.data_type)
                if owner is not None and owner != name:
                    message = (f"spec.dataType: {policy.data_type!r} is already governed by "
                               f"{namespace}/{owner}; this policy is not applied")
                    _set_conditions(patch, status, generation,
                                    (APPLIED, False, "DuplicateDataType", message),
                                    (READY, False, "DuplicateDataType", message))
                    patch.status["observedGeneration"] = generation
                    kopf.event(body, type="Warning", reason="DuplicateDataType", message=message)
                    rt.metrics.forget_policy(ref)
                    return

                await rt.store.publish(policy)
            except RedisError as exc:
                message = f"cannot reach Redis: {exc}"
                _set_conditions(patch, status, generation,
                                (APPLIED, False, "RedisUnavailable", message))
                raise kopf.TemporaryError(message, delay=REDIS_RETRY_DELAY) from exc

            kopf.event(body, type="Normal", reason="Applied",
                      message=f"published {policy.data_type} ({policy.strategy}) "
                              f"generation {generation}")
            rt.metrics.set_policy(ref, policy.data_type, policy.strategy)
            try:
                fields = await rt.policy_health(policy, wait=rt.config.probe_wait)
            except RedisError:
                fields = None
            applied = (APPLIED, True, "Published",
                       f"generation {generation} published to {rt.keys.policies}")
            if fields is None:
                _set_conditions(patch, status, generation, applied)
            else:
                rt.metrics.replicas_in_sync.labels(ref).set(fields["appliedReplicas"])
                ok, reason, message = ready_condition(fields, generation)
                _set_conditions(patch, status, generation, applied, (READY, ok, reason, message))
                patch.status.update(changed_fields(status, fields))
            patch.status["observedGeneration"] = generation

    @kopf.on.delete(*resource, id="forget", backoff=REDIS_RETRY_DELAY, registry=registry)
    async def forget(spec: kopf.Spec, namespace: str | None, name: str,
                     logger: kopf.Logger, **_: Any) -> None:
        ref = f"{namespace}/{name}"
        data_type = spec.get("dataType")
        async with rt.lock(ref):
            rt.metrics.forget_policy(ref)
            if not isinstance(data_type, str):
                return
            try:
                result = await rt.store.unpublish(data_type, source=ref)
            except RedisError as exc:
                raise kopf.TemporaryError(f"cannot reach Redis: {exc}",
                                          delay=REDIS_RETRY_DELAY) from exc
        if result == 1:
            logger.info("data type %s returned to the service's defaults", data_type)
        elif result == -1:
            logger.info("policy for %s in Redis belongs to another source; left alone", data_type)

    @kopf.timer(*resource, id="health", interval=rt.config.probe_interval,
                backoff=REDIS_RETRY_DELAY, registry=registry)
    async def health(body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta,
                     status: kopf.Status, namespace: str | None, name: str,
                     patch: kopf.Patch, logger: kopf.Logger, **kwargs: Any) -> None:
        if meta.get("deletionTimestamp"):
            return
        ref = f"{namespace}/{name}"
        generation = int(meta.get("generation") or 0)
        try:
            policy = compile_spec(dict(spec), generation=generation, source=ref)
        except PolicyError:
            return  # reconcile already put the error in status
        owner = owner_of(kwargs[INDEX], namespace, policy.data_type)
        if owner is not None and owner != name:
            rt.metrics.forget_policy(ref)
            if not _same_conditions(status, APPLIED, False, "DuplicateDataType", generation):
                message = (f"spec.dataType: {policy.data_type!r} is already governed by "
                           f"{namespace}/{owner}; this policy is not applied")
                _set_conditions(patch, status, generation,
                                (APPLIED, False, "DuplicateDataType", message),
                                (READY, False, "DuplicateDataType", message))
            return
        async with rt.lock(ref):
            try:
                stored = await rt.store.stored(policy.data_type)
                stale_view = (stored is not None and stored.source == ref
                              and stored.generation > generation)
                if stale_view:
                    return  # a newer generation was applied meanwhile; next tick
                reconciled = status.get("observedGeneration") == generation
                if stored != policy and reconciled:
                    # Redis lost it (restart), another source overwrote it, or it just
                    # became ours (the duplicate we lost to was deleted).
                    await rt.store.publish(policy)
                    held = "nothing" if stored is None else stored.source
                    kopf.event(body, type="Normal", reason="Republished",
                              message=f"published {policy.data_type} generation {generation} "
                                      f"(Redis held {held})")
                    _set_conditions(patch, status, generation,
                                    (APPLIED, True, "Published",
                                     f"generation {generation} published to {rt.keys.policies}"))
                    patch.status["observedGeneration"] = generation
                fields = await rt.policy_health(policy)
            except RedisError as exc:
                logger.warning("fleet health of %s: cannot reach Redis: %s", ref, exc)
                return
        rt.metrics.set_policy(ref, policy.data_type, policy.strategy)
        rt.metrics.replicas_in_sync.labels(ref).set(fields["appliedReplicas"])
        ok, reason, message = ready_condition(fields, generation)
        if not _same_conditions(status, READY, ok, reason, generation) or \
                (find_condition(status, READY) or {}).get("message") != message:
            base = dict(status or {})
            if "conditions" in patch.status:
                base["conditions"] = patch.status["conditions"]
            _set_conditions(patch, base, generation, (READY, ok, reason, message))
        patch.status.update(changed_fields(status, fields))


async def operate(config: Config, metrics: Metrics | None = None, *,
                  stop_flag: asyncio.Event | None = None) -> None:
    """Run the operator until it is stopped (SIGINT/SIGTERM or ``stop_flag``)."""
    rt = Runtime(config, metrics)
    registry = kopf.OperatorRegistry()
    register(registry, rt)
    await rt.start()
    try:
        await kopf.operator(
            registry=registry,
            standalone=True,  # no peering: needs no extra CRDs or RBAC
            clusterwide=config.clusterwide,
            namespaces=config.namespaces,
            liveness_endpoint=config.liveness_endpoint,
            stop_flag=stop_flag,
        )
    finally:
        await rt.stop()
