"""``cleanup``: delete the CacheInvalidationPolicies of some namespaces before
the operator goes away, so none is left in Terminating.

Every policy the operator has seen carries its finalizer
(``caching.hybridcache.io/cleanup``); only the operator's delete handler
removes it. ``helm uninstall`` deletes the operator's Deployment and the
chart's policies together, in no useful order; a policy deleted after the
operator is gone (by the uninstall, or later with its namespace) would wait
for it forever. The chart runs this command as a ``pre-delete`` hook, while
the operator still runs:

1. delete every policy in the namespaces (those already being deleted are
   waited for too);
2. wait, up to ``timeout`` seconds, for the operator to process them: its
   handler returns each data type to the service's defaults in Redis and
   releases the finalizer;
3. after the timeout (no operator, or one that cannot finish), remove the
   finalizer itself from what is left, with a ``Warning`` Event
   ``FinalizerReleased`` on each such policy saying which ``HDEL`` would
   remove its data from Redis.

Synchronous, with the official ``kubernetes`` client: it runs alone in a Job.
Needs exactly: ``list``, ``delete``, ``patch`` on cacheinvalidationpolicies
and ``create`` on events.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from hybridcache.keys import Keys

from .config import FINALIZER, NODE_NAME
from .validation import GROUP, KIND, PLURAL, VERSION

REQUEST_TIMEOUT: Final = 10  # seconds, per API call


class CleanupError(RuntimeError):
    """An API call the cleanup needs failed (forbidden, unreachable)."""


@dataclass
class CleanupReport:
    """What happened, for the command's output and for tests."""

    deleted: list[str] = field(default_factory=list)  # namespace/name
    gone: list[str] = field(default_factory=list)  # finalizer released by the operator
    released_here: list[str] = field(default_factory=list)
    crd_missing: bool = False


def _ref(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace')}/{meta['name']}"


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cleanup:
    """One run of the command against an API (``kubernetes.client.ApiClient``)."""

    def __init__(self, api_client: Any, namespaces: Sequence[str], *,
                 key_prefix: str = "hc:", poll: float = 1.0,
                 say: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        import urllib3
        from kubernetes import client

        # urllib3's connection errors (MaxRetryError...) are not OSErrors
        self._unreachable = (OSError, urllib3.exceptions.HTTPError)
        self._objects = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._exception = client.ApiException
        self.namespaces = list(namespaces)
        self.keys = Keys(key_prefix)
        self.poll = poll
        self.say = say
        self.clock = clock
        self.sleep = sleep

    # ----------------------------------------------------------- API calls
    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except self._exception as exc:
            if exc.status == 404:
                return None
            raise CleanupError(f"{what}: {exc.status} {exc.reason}") from None
        except self._unreachable as exc:
            raise CleanupError(f"{what}: {exc}") from None

    def _list(self) -> list[dict[str, Any]] | None:
        """The policies in the namespaces; None if the API does not serve them."""
        found: list[dict[str, Any]] = []
        for ns in self.namespaces:
            listed = self._call(f"list {PLURAL} in {ns}",
                                self._objects.list_namespaced_custom_object,
                                GROUP, VERSION, ns, PLURAL)
            if listed is None:
                return None
            found.extend(listed.get("items") or [])
        return found

    def _delete(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self._call(f"delete {_ref(obj)}", self._objects.delete_namespaced_custom_object,
                   GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])

    def _release(self, obj: dict[str, Any]) -> bool:
        """Remove our finalizer, only from the version we looked at (a JSON patch
        that tests resourceVersion): False if the object changed meanwhile."""
        meta = obj["metadata"]
        kept = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        patch = [{"op": "test", "path": "/metadata/resourceVersion",
                  "value": meta["resourceVersion"]},
                 {"op": "replace", "path": "/metadata/finalizers", "value": kept}]
        try:
            self._objects.patch_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch,
                _request_timeout=REQUEST_TIMEOUT)
        except self._exception as exc:
            if exc.status in (404, 409, 422):  # gone, or changed: look again
                return bool(exc.status == 404)
            raise CleanupError(f"patch {_ref(obj)}: {exc.status} {exc.reason}") from None
        except self._unreachable as exc:
            raise CleanupError(f"patch {_ref(obj)}: {exc}") from None
        return True

    def _event(self, obj: dict[str, Any], message: str) -> None:
        meta = obj["metadata"]
        now = _now()
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                               "name": meta["name"], "namespace": meta["namespace"],
                               "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "reason": "FinalizerReleased", "message": message, "type": "Warning",
            "source": {"component": NODE_NAME}, "reportingComponent": NODE_NAME,
            "reportingInstance": os.environ.get("HOSTNAME") or NODE_NAME,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        # An event is a courtesy: failing to post one does not fail the cleanup.
        try:
            self._call(f"create event for {_ref(obj)}", self._core.create_namespaced_event,
                       meta["namespace"], body)
        except CleanupError as exc:
            self.say(f"warning: {exc}")

    # ----------------------------------------------------------- the run
    def run(self, timeout: float) -> CleanupReport:
        report = CleanupReport()
        policies = self._list()
        if policies is None:
            report.crd_missing = True
            self.say(f"{KIND} is not served (CRD not installed?): nothing to clean up")
            return report
        for obj in policies:
            if not obj["metadata"].get("deletionTimestamp"):
                self._delete(obj)
            report.deleted.append(_ref(obj))
        waiting = set(report.deleted)
        self.say(f"deleted {len(waiting)} {PLURAL} in {', '.join(self.namespaces)}; "
                 f"waiting up to {timeout:g}s for the operator")
        deadline = self.clock() + timeout
        while True:
            held = self._held()
            for ref in sorted(waiting - set(held)):
                report.gone.append(ref)
            waiting &= set(held)
            if not waiting or self.clock() >= deadline:
                break
            self.sleep(self.poll)
        for _attempt in range(5):
            if not waiting:
                break
            held = self._held()
            for ref, obj in sorted(held.items()):
                if ref in waiting and self._release(obj):
                    waiting.discard(ref)
                    report.released_here.append(ref)
                    data_type = (obj.get("spec") or {}).get("dataType")
                    message = (f"the operator did not process the deletion within "
                               f"{timeout:g}s; finalizer {FINALIZER} released by the cleanup "
                               f"command")
                    if isinstance(data_type, str):
                        message += (f"; the policy for {data_type} may stay in Redis: "
                                    f"remove it with HDEL {self.keys.policies} {data_type}")
                    self._event(obj, message)
                    self.say(f"released {ref}: {message}")
            waiting &= set(held)
        if waiting:
            raise CleanupError(f"could not release {', '.join(sorted(waiting))} "
                               "(changed on every attempt)")
        return report

    def _held(self) -> dict[str, dict[str, Any]]:
        """The policies still carrying our finalizer, by namespace/name."""
        return {_ref(o): o for o in self._list() or []
                if FINALIZER in (o["metadata"].get("finalizers") or [])}
