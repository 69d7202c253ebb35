"""A Kubernetes API *emulator* over real HTTP for the operator tests: KMock plus the API semantics the
operator relies on. It is NOT kube-apiserver: no admission, no schema validation, no RBAC.

KMock (by Kopf's author) serves discovery, list, watch, create, merge-patch and delete from memory.
On top of it this module adds what real clusters do and the operator depends on:
- metadata the server owns: uid, creationTimestamp, resourceVersion, generation (bumped on spec
  changes only), generateName;
- graceful pod deletion: DELETE sets deletionTimestamp and keeps the pod until a DELETE with
  gracePeriodSeconds=0 (which the kubelet sends once the containers are gone);
- status subresource semantics: /status patches change only status, main-resource patches ignore it;
- label selectors and field selectors on list and watch (equality based);
- the garbage collector: deleting an object deletes its dependents (ownerReferences).
And one thing real watches do now and then: lose an event. `EmulatorThread.lose_deletion()` makes
every watch miss the DELETED event of one object (what a client sees when its watch broke and the
object was deleted before it re-listed), so tests can check that clients heal by re-listing.
The emulator runs in its own thread with its own event loop; tests talk to it over HTTP (the
kubernetes client) as the operator does.
"""

import asyncio
import datetime
import itertools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp.web
import kmock
import kubernetes
import pytest
from kmock._internal import enums, rendering

# (group/version/plural, kind, has status subresource, namespaced)
RESOURCES = (
    ("v1/pods", "Pod", True, True),
    ("v1/events", "Event", False, True),
    ("v1/namespaces", "Namespace", True, False),
    ("v1/nodes", "Node", True, False),
    ("coordination.k8s.io/v1/leases", "Lease", False, True),
    ("apps/v1/deployments", "Deployment", True, True),
    ("k8s.cni.cncf.io/v1/network-attachment-definitions", "NetworkAttachmentDefinition", False, True),
    ("flexsfc.io/v1alpha1/servicefunctionchains", "ServiceFunctionChain", True, True),
    ("flexsfc.io/v1alpha1/crossconnections", "CrossConnection", True, True),
    ("kopf.dev/v1/clusterkopfpeerings", "ClusterKopfPeering", False, False),
)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _lookup(obj: dict[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def label_selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_selector_matches(selector: str, obj: dict[str, Any]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        path, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        actual = _lookup(obj, path)
        if (str(actual) if actual is not None else "") == value:
            if negate:
                return False
        elif not negate:
            return False
    return True


class FlexsfcKubeEmulator(kmock.KubernetesEmulator):
    """KMock's KubernetesEmulator with server-owned metadata, selectors, /status and GC."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1)
        # (resource, namespace, name) whose DELETED event no watch is sent (see lose_deletion).
        self.lost_deletions: set[tuple[Any, str | None, str]] = set()
        for key, kind, has_status, namespaced in RESOURCES:
            self.resources[key] = kmock.ResourceInfo(
                kind=kind,
                namespaced=namespaced,
                verbs={"get", "list", "watch", "create", "patch", "delete"},
                subresources={"status"} if has_status else set(),
            )

    def _has_status(self, resource: Any) -> bool:
        return "status" in self.resources[resource].subresources

    async def _handle(self, request: rendering.Request) -> Any:
        if request.resource is None:
            return await super()._handle(request)
        deleted_uid = None
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            self._on_create(request)
        elif (
            request.action == enums.action.UPDATE
            and request.name is not None
            and isinstance(request.data, dict)
        ):
            self._on_update(request)
        elif request.action == enums.action.DELETE and request.name is not None:
            key = (request.resource, request.namespace, request.name)
            if key in self.objects and not self.objects[key].deleted:
                if self._graceful(request, self.objects[key].raw):
                    return await self._start_graceful_deletion(request)
                deleted_uid = self.objects[key].raw.get("metadata", {}).get("uid")
        response = await super()._handle(request)
        if deleted_uid is not None:
            key = (request.resource, request.namespace, request.name)
            if self.objects[key].deleted:
                await self._collect_garbage(deleted_uid)
        return response

    @staticmethod
    def _graceful(request: rendering.Request, obj: dict[str, Any]) -> bool:
        """Pods are deleted gracefully unless gracePeriodSeconds=0 (what the kubelet sends at the end)."""
        if request.resource != kmock.resource("v1/pods") or obj.get("metadata", {}).get("deletionTimestamp"):
            return False
        body = request.data if isinstance(request.data, dict) else {}
        grace = (request.params or {}).get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
        return str(grace) != "0"

    async def _start_graceful_deletion(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            obj = self.objects[key]
            obj.patch(
                {
                    "metadata": {
                        "deletionTimestamp": _now(),
                        "deletionGracePeriodSeconds": 30,
                        "resourceVersion": str(next(self._versions)),
                    }
                }
            )
            raw = obj.raw
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
        return aiohttp.web.json_response(raw)

    def _on_create(self, request: rendering.Request) -> None:
        meta = request.data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta["generation"] = 1
        meta["resourceVersion"] = str(next(self._versions))
        request.data.pop("status", None) if self._has_status(request.resource) else None

    def _on_update(self, request: rendering.Request) -> None:
        key = (request.resource, request.namespace, request.name)
        data = request.data
        if request.subresource == "status":
            for field in list(data):
                if field not in ("status", "metadata"):
                    del data[field]
            data["metadata"] = {}
        elif self._has_status(request.resource):
            data.pop("status", None)
        meta = data.setdefault("metadata", {}) if isinstance(data.get("metadata"), dict) else {}
        data["metadata"] = meta
        for owned in ("uid", "creationTimestamp", "generation"):
            meta.pop(owned, None)
        meta["resourceVersion"] = str(next(self._versions))
        if "spec" in data and request.subresource != "status" and key in self.objects:
            current = self.objects[key]
            if not current.deleted:
                meta["generation"] = int(current.raw.get("metadata", {}).get("generation", 1)) + 1

    async def _collect_garbage(self, owner_uid: str) -> None:
        """Cascading deletion of dependents, as kube-controller-manager's GC does (there: later)."""
        dependents = []
        async with self._lock:
            for (resource, _namespace, _name), obj in list(self.objects.items()):
                if obj.deleted:
                    continue
                owners = obj.raw.get("metadata", {}).get("ownerReferences") or []
                if any(o.get("uid") == owner_uid for o in owners):
                    dependents.append((resource, obj.raw.get("metadata", {}).get("uid")))
                    raw = obj.raw
                    obj.delete()
                    await self._buses[resource].put({"type": "DELETED", "object": raw})
        for _, uid in dependents:
            if uid:
                await self._collect_garbage(uid)

    def _selected(self, request: rendering.Request, obj: dict[str, Any]) -> bool:
        params = request.params or {}
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if params.get("labelSelector") and not label_selector_matches(params["labelSelector"], labels):
            return False
        return not (params.get("fieldSelector") and not field_selector_matches(params["fieldSelector"], obj))

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        result = await super()._serve_list(request)
        result["items"] = [item for item in result["items"] if self._selected(request, item)]
        result["metadata"] = {"resourceVersion": str(next(self._versions))}
        return result

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        async for item in super()._serve_watch(request):
            if isinstance(item, dict) and not self._selected(request, item.get("object") or {}):
                continue
            if isinstance(item, dict) and item.get("type") == "DELETED":
                meta = (item.get("object") or {}).get("metadata") or {}
                if (request.resource, meta.get("namespace"), meta.get("name")) in self.lost_deletions:
                    continue
            yield item


class EmulatorThread:
    """The emulator served on 127.0.0.1 (random port) from a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.handler: FlexsfcKubeEmulator | None = None
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="kube-emulator", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with FlexsfcKubeEmulator() as handler, kmock.Server(handler) as server:
            self.handler = handler
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def start(self) -> "EmulatorThread":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Kubernetes API emulator did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def objects(self, resource: str) -> Iterator[dict[str, Any]]:
        """Live objects of one resource ("v1/pods", "flexsfc.io/v1alpha1/crossconnections")."""
        assert self.handler is not None
        wanted = kmock.resource(resource)
        for (res, _ns, _name), obj in list(self.handler.objects.items()):
            if res == wanted and not obj.deleted:
                yield obj.raw

    def lose_deletion(self, resource: str, namespace: str | None, name: str) -> None:
        """Every watch misses the DELETED event of this object from now on (list still tells)."""
        assert self.handler is not None
        self.handler.lost_deletions.add((kmock.resource(resource), namespace, name))

    def requests_to(self, resource: str, action: str) -> list[Any]:
        """Requests the emulator served for one resource and action ("update", "create", ...)."""
        assert self.handler is not None
        wanted = kmock.resource(resource)
        return [
            r
            for r in list(self.handler._requests)
            if r.resource == wanted and r.action == enums.action(action)
        ]


@pytest.fixture(name="kube")
def kube_fixture() -> Iterator[EmulatorThread]:
    """A running emulator, stopped at teardown (the fixture of tests/unit and tests/kernel operator)."""
    emulator = EmulatorThread().start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(name="kube_api")
def kube_api_fixture(kube: EmulatorThread) -> Iterator[kubernetes.client.ApiClient]:
    """A kubernetes client of the `kube` emulator, closed at teardown."""
    configuration = kubernetes.client.Configuration()
    configuration.host = kube.url
    client = kubernetes.client.ApiClient(configuration)
    try:
        yield client
    finally:
        client.close()


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll until ``condition()`` is truthy and return its value; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
