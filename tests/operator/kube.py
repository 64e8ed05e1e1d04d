"""A Kubernetes API for tests: kmock's KubernetesEmulator over real HTTP, taught
the few API-server behaviours the operator and kubectl rely on.

kmock keeps objects and streams watch events; on top of it this adds what a
real API server does for a custom resource with a CRD:

- ``metadata.uid``, ``creationTimestamp``, ``resourceVersion`` and
  ``generation`` (bumped when ``spec`` changes, never by status patches);
- the ``status`` subresource: ``PATCH .../status`` changes only ``status``, a
  patch of the main resource never changes ``status``;
- defaulting and validation from the CRD's schema and CEL rules (422 Invalid);
- list kinds (``CacheInvalidationPolicyList``) and server-side printing
  (``Accept: ...;as=Table``) from the CRD's ``additionalPrinterColumns``, so
  ``kubectl get cip`` shows the columns a cluster would;
- Deployments and StatefulSets (``apps/v1``), stored as given, so the
  operator's kubernetes client can read the catalog workload's replicas.

The server runs on its own thread and event loop, so tests may call kubectl
(a blocking subprocess) and run the operator as a separate process.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import jsonpatch
import kmock
from kmock._internal import aiobus, apps, enums, rendering

from tests.operator.crd_tools import CrdValidator

_MUTATING = (enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_diff(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return copy.deepcopy(new)
    out: dict[str, Any] = {}
    for key in old:
        if key not in new:
            out[key] = None
    for key, value in new.items():
        if key not in old:
            out[key] = copy.deepcopy(value)
        elif old[key] != value:
            out[key] = merge_diff(old[key], value)
    return out


def merge_patch(old: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(old) if isinstance(old, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _age(timestamp: str | None) -> str | None:
    if not timestamp:
        return None
    then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = int((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


_FILTER = re.compile(r'^\[\?\(@\.(\w+)==["\']([^"\']*)["\']\)\]')


def jsonpath(obj: Any, path: str) -> Any:
    """The subset of kubectl JSONPath that printer columns use here:
    ``.a.b``, ``.a[0]``, ``.a[?(@.type=="Ready")].status``."""
    rest = path
    value = obj
    while rest:
        if rest.startswith("."):
            match = re.match(r"^\.([A-Za-z0-9_-]+)", rest)
            assert match, path
            value = value.get(match.group(1)) if isinstance(value, dict) else None
            rest = rest[match.end():]
        elif (match := _FILTER.match(rest)) is not None:
            key, wanted = match.groups()
            items = value if isinstance(value, list) else []
            value = next((i for i in items if isinstance(i, dict) and i.get(key) == wanted), None)
            rest = rest[match.end():]
        elif (match := re.match(r"^\[(\d+)\]", rest)) is not None:
            index = int(match.group(1))
            value = value[index] if isinstance(value, list) and index < len(value) else None
            rest = rest[match.end():]
        else:
            raise AssertionError(f"unsupported JSONPath {path!r}")
        if value is None:
            return None
    return value


@attrs.mutable(weakref_slot=True)
class LoggedBus(aiobus.Bus[Any]):
    """kmock's event bus that also keeps every event by resourceVersion."""

    next_rv: Callable[[], str] = attrs.field(kw_only=True)
    history: list[tuple[int, Any]] = attrs.field(factory=list, kw_only=True)

    async def put(self, *items: Any) -> None:
        stamped = []
        for item in items:
            if item.get("type") == "DELETED":  # a deletion is a change of its own
                item = copy.deepcopy(item)
                item["object"].setdefault("metadata", {})["resourceVersion"] = self.next_rv()
            rv = str(item.get("object", {}).get("metadata", {}).get("resourceVersion", "0"))
            self.history.append((int(rv) if rv.isdigit() else 0, item))
            stamped.append(item)
        await super().put(*stamped)


@attrs.define(kw_only=True)
class KubeApi(kmock.KubernetesEmulator):
    """kmock's emulator with generation, status subresource, CRD validation,
    list kinds and server-side printing."""

    _crds: dict[Any, CrdValidator] = attrs.field(factory=dict, init=False)
    _last_rv: int = attrs.field(default=0, init=False)
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._buses = collections.defaultdict(lambda: LoggedBus(next_rv=self._next_rv))

    def _next_rv(self) -> str:
        self._last_rv += 1
        return str(self._last_rv)

    def add_crd(self, crd: dict[str, Any]) -> None:
        """Serve a custom resource as a cluster with this CRD installed would."""
        spec = crd["spec"]
        names = spec["names"]
        for version in spec["versions"]:
            resource = kmock.resource(spec["group"], version["name"], names["plural"])
            self.resources[resource] = kmock.ResourceInfo(
                kind=names["kind"], singular=names.get("singular"),
                namespaced=spec["scope"] == "Namespaced",
                shortnames=set(names.get("shortNames") or []),
                categories=set(names.get("categories") or []),
                verbs={"get", "list", "watch", "create", "update", "patch", "delete",
                       "deletecollection"},
                subresources=set((version.get("subresources") or {}).keys()),
            )
            self._crds[resource] = CrdValidator(crd, version["name"])

    def add_builtin(self, path: str, kind: str, *, namespaced: bool = True) -> None:
        self.resources[path] = kmock.ResourceInfo(
            kind=kind, singular=kind.lower(), namespaced=namespaced,
            verbs={"get", "list", "watch", "create", "patch", "delete"})

    # ------------------------------------------------------------ writes
    async def _handle(self, request: rendering.Request) -> Any:
        if request.resource is None or request.action not in _MUTATING:
            return await super()._handle(request)
        async with self._write_lock:
            try:
                prepared = self._prepare(request)
            except kmock.KubernetesError as exc:
                return await self._render_error(exc)
            if prepared is not request:
                # kmock matches requests to reactions by identity: swap in the new one.
                for i, seen in enumerate(self._requests):
                    if seen is request:
                        self._requests[i] = prepared
            return await super()._handle(prepared)

    def _has_status(self, resource: Any) -> bool:
        return resource in self.resources and "status" in self.resources[resource].subresources

    def _invalid(self, kind: str, group: str, name: str,
                 errors: list[str]) -> kmock.KubernetesError:
        causes = []
        for error in errors:
            field, _, message = error.partition(": ")
            causes.append({"field": field, "message": message,
                           "reason": "FieldValueInvalid"})
        listed = ", ".join(errors)
        return kmock.KubernetesError(
            status=422, reason="Invalid",
            message=f'{kind}.{group} "{name}" is invalid: '
                    + (f"[{listed}]" if len(errors) > 1 else listed),
            details={"name": name, "group": group, "kind": kind, "causes": causes})

    def _prepare(self, request: rendering.Request) -> rendering.Request:
        resource = request.resource
        crd = self._crds.get(resource)
        has_status = self._has_status(resource)
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            data = copy.deepcopy(request.data)
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
            if request.namespace and not meta.get("namespace"):
                meta["namespace"] = request.namespace
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1,
                        resourceVersion=self._next_rv())
            if has_status:
                data.pop("status", None)
            if crd is not None:
                data, errors = crd.admit(data)
                if errors:
                    raise self._invalid(crd.kind, crd.group, str(meta.get("name")), errors)
            return attrs.evolve(request, data=data)

        if request.action == enums.action.UPDATE:
            key = (resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                return request  # kmock answers 404
            old = copy.deepcopy(dict(self.objects[key].last.raw))
            patch = request.data
            if isinstance(patch, list):  # JSON patch
                to_status = request.subresource == "status"
                ops = [op for op in patch
                       if to_status == op.get("path", "").startswith("/status") or not has_status]
                try:
                    new = jsonpatch.apply_patch(old, ops)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                    # e.g. a failed "test" of metadata.resourceVersion: a conflict
                    raise kmock.KubernetesError(status=422, reason="Invalid",
                                                message=f"the patch cannot apply: {exc}") from exc
            elif isinstance(patch, dict):
                if request.subresource == "status":
                    patch = {"status": patch["status"]} if "status" in patch else {}
                elif has_status:
                    patch = {k: v for k, v in patch.items() if k != "status"}
                new = merge_patch(old, patch)
            else:
                return request
            new_meta = new.setdefault("metadata", {})
            for fixed in ("uid", "creationTimestamp", "generation", "namespace", "name"):
                if fixed in old.get("metadata", {}):
                    new_meta[fixed] = old["metadata"][fixed]
            if new.get("spec") != old.get("spec"):
                new_meta["generation"] = int(old.get("metadata", {}).get("generation", 1)) + 1
            if new != old:
                new_meta["resourceVersion"] = self._next_rv()
            if crd is not None:
                spec_unchanged = new.get("spec") == old.get("spec")
                new, errors = crd.admit(new, old)
                # Validation ratcheting (as Kubernetes 1.33+): errors in a part the
                # update did not change (an old invalid spec) do not block it.
                if spec_unchanged:
                    errors = [e for e in errors if not e.startswith("spec")]
                if errors:
                    raise self._invalid(crd.kind, crd.group, str(request.name), errors)
            return attrs.evolve(request, data=merge_diff(old, new))
        return request

    # ------------------------------------------------------------ reads
    def _wants_table(self, request: rendering.Request) -> bool:
        accept = request.headers.get("Accept", "") or request.headers.get("accept", "")
        first = accept.split(",")[0]
        return "as=Table" in first

    def _table(self, resource: Any, objects: list[dict[str, Any]]) -> dict[str, Any]:
        crd = self._crds.get(resource)
        columns = crd.printer_columns if crd is not None else [
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
        definitions = [{"name": "Name", "type": "string", "format": "name", "priority": 0,
                        "description": "Name must be unique within a namespace."}]
        definitions += [{"name": c["name"], "type": c["type"], "format": c.get("format", ""),
                         "priority": c.get("priority", 0),
                         "description": c.get("description", "")} for c in columns]
        rows = []
        for obj in objects:
            cells: list[Any] = [obj.get("metadata", {}).get("name")]
            for c in columns:
                value = jsonpath(obj, c["jsonPath"])
                if c["type"] == "date":
                    value = _age(value)
                cells.append(value)
            rows.append({"cells": cells, "object": {
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata", {})}})
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": str(self._last_rv)},
                "columnDefinitions": definitions, "rows": rows}

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        result = await super()._serve_version(request)
        assert isinstance(result, dict)
        for entry in result["resources"]:
            if "/" in entry["name"]:  # a subresource: no short names or categories of its own
                entry.update(shortNames=[], categories=[], singularName="",
                             verbs=["get", "patch", "update"])
        return result

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        result = await super()._serve_list(request)
        assert isinstance(result, dict)
        if self._wants_table(request):
            return self._table(request.resource, list(result["items"]))
        # not .get(): kmock's ResourcesArray creates missing entries on lookup
        info = self.resources[request.resource] if request.resource in self.resources else None  # noqa: SIM401
        kind = info.kind if info is not None and info.kind else "Unknown"
        resource = request.resource
        assert resource is not None
        api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
        result.update(kind=f"{kind}List", apiVersion=api_version)
        result["metadata"] = {"resourceVersion": str(self._last_rv)}
        for item in result["items"]:
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", api_version)
        return result

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        """A watch from ``?resourceVersion=N`` (what list+watch clients send)
        replays the events after N and then streams, as the API server does;
        kmock alone would re-send every object as ADDED and lose what changed
        between the list and the watch."""
        since = request.params.get("resourceVersion", "")
        if not since.isdigit() or since == "0":
            async for item in super()._serve_watch(request):
                yield item
            return
        yield b""  # send the headers now
        assert request.resource is not None
        bus = self._buses[request.resource]
        assert isinstance(bus, LoggedBus)
        async with self._write_lock:  # no write can slip between backlog and mark
            mark = await bus.mark()
            backlog = [event for rv, event in bus.history if rv > int(since)]
        check = self._KubernetesEmulator__check  # type: ignore[attr-defined]
        for event in backlog:
            meta = event.get("object", {}).get("metadata", {})
            if check(request, request.resource, meta.get("namespace"), meta.get("name"),
                     strict=False):
                yield event
        async for event in mark:
            meta = event.get("object", {}).get("metadata", {})
            if check(request, request.resource, meta.get("namespace"), meta.get("name"),
                     strict=False):
                yield event

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        result = await super()._serve_fetch(request)
        if self._wants_table(request) and isinstance(result, dict):
            return self._table(request.resource, [result])
        return result

    def get(self, resource: Any, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object, or None (for assertions from the test thread)."""
        if isinstance(resource, str):
            resource = kmock.resource(resource)
        key = (resource, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(dict(self.objects[key].last.raw))


class KubeApiServer:
    """KubeApi served over HTTP on 127.0.0.1 from a background thread."""

    def __init__(self, crds: list[dict[str, Any]]) -> None:
        self.crds = crds
        self.api: KubeApi | None = None
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with KubeApi() as api, apps.Server(api) as server:
            for crd in self.crds:
                api.add_crd(crd)
            api.add_builtin("v1/events", "Event")
            api.add_builtin("v1/namespaces", "Namespace", namespaced=False)
            # the catalog workload the operator counts replicas against
            api.add_builtin("apps/v1/deployments", "Deployment")
            api.add_builtin("apps/v1/statefulsets", "StatefulSet")
            self.api = api
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def start(self) -> KubeApiServer:
        self._thread = threading.Thread(target=self._run, name="kube-api", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"kube API emulator did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop (for reads of its state)."""
        assert self._loop is not None
        async def run() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def put_workload(self, kind: str, namespace: str, name: str, *,
                     desired: int, ready: int) -> None:
        """Store a Deployment/StatefulSet as the API server holds it, with the
        replica counts its controller would report (there is no controller here)."""
        resource = {"deployment": "apps/v1/deployments", "statefulset": "apps/v1/statefulsets"}

        def put() -> None:
            assert self.api is not None
            self.api.objects[resource[kind], namespace, name] = {
                "apiVersion": "apps/v1",
                "kind": "Deployment" if kind == "deployment" else "StatefulSet",
                "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                             "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 1,
                             "resourceVersion": "1"},
                "spec": {"replicas": desired, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [{"name": "c", "image": "i"}]}}},
                "status": {"replicas": desired, "readyReplicas": ready,
                           "availableReplicas": ready, "observedGeneration": 1},
            }
        self.call(put)

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: kmock, cluster: {{server: '{self.url}'}}}}]\n"
            "users: [{name: tester, user: {token: test-token}}]\n"
            f"contexts: [{{name: kmock, context: {{cluster: kmock, user: tester, "
            f"namespace: {namespace}}}}}]\n"
            "current-context: kmock\n")
        return path

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
