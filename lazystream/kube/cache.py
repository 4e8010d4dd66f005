"""In-process cluster caches fed by Kubernetes watches.

One thread per kind lists, then watches from the list's resourceVersion; on an expired resourceVersion
(410) it lists again at once, on other errors after an exponential backoff, and every ``resync_seconds`` it
lists anyway and reconciles (objects gone from the listing are deleted). Objects are reduced on arrival:
the domain's ``ClusterState`` keeps only what resolution and fence computation read, and ServiceFences and
Sidecars keep only metadata, spec and status.

Every change reports the fences it affects (decisions §6: fences are recomputed when what they depend on
changes) through ``on_change(keys, reason)``, called from the watch thread.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from lazystream.domain.cluster import ClusterState, ObjectKey, qualify
from lazystream.domain.hosts import service_fqdn, wildcard_matches
from lazystream.kube.client import dynamic_client

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Kind:
    api_version: str
    kind: str


ALL_KINDS = (
    Kind("v1", "Namespace"),
    Kind("v1", "Service"),
    Kind("v1", "Endpoints"),
    Kind("discovery.k8s.io/v1", "EndpointSlice"),
    Kind("v1", "Pod"),
    Kind("networking.istio.io/v1alpha3", "VirtualService"),
    Kind("networking.istio.io/v1alpha3", "ServiceEntry"),
    Kind("microservice.slime.io/v1alpha1", "ServiceFence"),
    Kind("networking.istio.io/v1alpha3", "Sidecar"),
)
WATCH_TIMEOUT = 5
"""Server-side watch timeout, seconds: also how long ``stop()`` may wait for a thread."""

OnChange = Callable[[set[ObjectKey], str], None]


def _key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return ObjectKey(str(meta.get("namespace") or ""), str(meta.get("name")))


def _reduce_meta(obj: Mapping[str, Any], *fields: str) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {k: meta[k] for k in ("name", "namespace", *fields) if k in meta}


def reduce_fence(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": "ServiceFence",
        "metadata": _reduce_meta(obj, "uid", "labels", "resourceVersion", "generation"),
        "spec": obj.get("spec") or {},
        "status": obj.get("status") or {},
    }


def reduce_sidecar(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "metadata": _reduce_meta(obj, "labels", "ownerReferences", "resourceVersion"),
        "spec": obj.get("spec"),
    }


class ClusterCache:
    """The worker's view of the cluster (see the module docstring).

    Use ``start()``, then ``wait_synced(timeout)``; read ``state``, ``fences`` and ``sidecars`` inside
    ``with cache.reading():``; ``stop()`` ends every thread.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        cluster_domain: str = "cluster.local",
        on_change: OnChange | None = None,
        resync_seconds: float = 300.0,
        kinds: Iterable[Kind] = ALL_KINDS,
    ) -> None:
        self.api = api
        self.cluster_domain = cluster_domain
        self.on_change = on_change or (lambda keys, reason: None)
        self.resync_seconds = resync_seconds
        self.kinds = tuple(kinds)
        self.state = ClusterState(cluster_domain)
        self.fences: dict[ObjectKey, dict[str, Any]] = {}
        self.sidecars: dict[ObjectKey, dict[str, Any]] = {}
        self.events_total: Counter[str] = Counter()
        self.errors_total: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._synced = {k.kind: threading.Event() for k in self.kinds}
        self._threads: list[threading.Thread] = []
        self._known: dict[str, dict[ObjectKey, Any]] = defaultdict(dict)
        """Per kind, the reduced fields change detection compares (labels, selector, hosts, ...)."""
        self._host_fences: dict[str, set[ObjectKey]] = defaultdict(set)
        self._fence_hosts: dict[ObjectKey, set[str]] = {}

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        for kind in self.kinds:
            thread = threading.Thread(
                target=self._watch_loop, args=(kind,), name=f"watch-{kind.kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def wait_synced(self, timeout: float) -> bool:
        return all(event.wait(timeout) for event in self._synced.values())

    def stop(self, timeout: float = WATCH_TIMEOUT + 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._lock:
            yield

    # -- the sink's index of fence hosts ----------------------------------------------------------------

    def set_fence_hosts(self, key: ObjectKey, hosts: Iterable[str]) -> None:
        with self._lock:
            self.forget_fence(key)
            self._fence_hosts[key] = set(hosts)
            for host in self._fence_hosts[key]:
                self._host_fences[host].add(key)

    def forget_fence(self, key: ObjectKey) -> None:
        with self._lock:
            for host in self._fence_hosts.pop(key, ()):
                self._host_fences[host].discard(key)
                if not self._host_fences[host]:
                    del self._host_fences[host]

    # -- watching -------------------------------------------------------------------------------------

    def _watch_loop(self, kind: Kind) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                resource = dynamic_client(self.api).resources.get(
                    api_version=kind.api_version, kind=kind.kind
                )
                listing = resource.get()
                self._replace(kind.kind, [item for item in listing.to_dict().get("items") or []])
                self._synced[kind.kind].set()
                self._watch(resource, kind.kind, listing.metadata.resourceVersion)
                backoff = 0.5
            except ResourceNotFoundError:
                self._synced[kind.kind].set()  # no such CRD (yet): nothing to cache
                self._stop.wait(10.0)
            except ApiException as exc:
                if exc.status == 410:
                    continue  # resourceVersion expired: list again now
                self._failed(kind.kind, f"http {exc.status}", backoff)
                backoff = min(30.0, backoff * 2)
            except Exception as exc:
                self._failed(kind.kind, type(exc).__name__, backoff)
                backoff = min(30.0, backoff * 2)

    def _failed(self, kind: str, what: str, backoff: float) -> None:
        self.errors_total[f"{kind}:{what}"] += 1
        log.warning("watching %s failed (%s); retrying in %.1f s", kind, what, backoff)
        self._stop.wait(backoff * (0.5 + random.random()))  # noqa: S311

    def _watch(self, resource: Any, kind: str, resource_version: str) -> None:
        remaining = self.resync_seconds
        while remaining > 0 and not self._stop.is_set():
            timeout = int(min(WATCH_TIMEOUT, max(1, remaining)))
            remaining -= timeout
            for event in resource.watch(
                resource_version=resource_version, timeout=timeout, allow_watch_bookmarks=True
            ):
                if self._stop.is_set():
                    return
                obj = event.get("raw_object") or {}
                kind_of_event = event.get("type")
                if kind_of_event == "ERROR":
                    raise ApiException(status=int(obj.get("code") or 500), reason=str(obj.get("message")))
                resource_version = (obj.get("metadata") or {}).get("resourceVersion") or resource_version
                if kind_of_event != "BOOKMARK":
                    self._event(kind, str(kind_of_event), obj)

    def _replace(self, kind: str, items: list[dict[str, Any]]) -> None:
        """A full listing: apply every object, delete the ones that disappeared."""
        listed = {_key(obj) for obj in items}
        for obj in items:
            self._event(kind, "LISTED", obj)
        with self._lock:
            gone = [key for key in self._known[kind] if key not in listed]
        for key in gone:
            self._event(kind, "DELETED", {"metadata": {"namespace": key.namespace, "name": key.name}})

    def resync_now(self) -> None:
        """List every kind once more and reconcile (tests; the threads also do it periodically)."""
        for kind in self.kinds:
            try:
                resource = dynamic_client(self.api).resources.get(
                    api_version=kind.api_version, kind=kind.kind
                )
            except ResourceNotFoundError:
                continue
            self._replace(kind.kind, resource.get().to_dict().get("items") or [])

    # -- applying events ------------------------------------------------------------------------------

    def _event(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        self.events_total[f"{kind}:{event_type}"] += 1
        key = _key(obj)
        deleted = event_type == "DELETED"
        with self._lock:
            old = self._known[kind].get(key)
            new = None if deleted else self._fingerprint(kind, obj)
            if deleted:
                self._known[kind].pop(key, None)
            else:
                self._known[kind][key] = new
            self._store(kind, key, obj, deleted)
            affected = set() if old == new else self._affected(kind, key, old, new)
        if affected:
            self.on_change(affected, f"{kind} {key}")

    def _store(self, kind: str, key: ObjectKey, obj: dict[str, Any], deleted: bool) -> None:
        if kind == "ServiceFence":
            self.state.delete(kind, *key) if deleted else self.state.apply(obj)
            if deleted:
                self.fences.pop(key, None)
            else:
                self.fences[key] = reduce_fence(obj)
        elif kind == "Sidecar":
            if deleted:
                self.sidecars.pop(key, None)
            else:
                self.sidecars[key] = reduce_sidecar(obj)
        elif deleted:
            self.state.delete(kind, key.namespace, key.name)
        else:
            self.state.apply({**obj, "kind": kind})

    def _fingerprint(self, kind: str, obj: Mapping[str, Any]) -> Any:
        """What change detection compares; resourceVersion-only updates compare equal."""
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        if kind == "Service":
            return (
                tuple(sorted((meta.get("labels") or {}).items())),
                repr(spec.get("selector")),
                repr(spec.get("ports")),
            )
        if kind in ("VirtualService", "ServiceEntry"):
            namespace = str(meta.get("namespace") or "default")
            hosts = tuple(qualify(h, namespace, self.cluster_domain) for h in spec.get("hosts") or [])
            http = repr(spec.get("http")) if kind == "VirtualService" else ""
            return (hosts, http)
        if kind == "ServiceFence":
            return repr((spec, obj.get("status"), meta.get("labels"), meta.get("uid")))
        if kind == "Sidecar":
            return repr((spec, meta.get("labels"), meta.get("ownerReferences")))
        return None  # Namespaces, Endpoints, EndpointSlices, Pods: they change resolution, not fences

    def _affected(self, kind: str, key: ObjectKey, old: Any, new: Any) -> set[ObjectKey]:
        if kind == "ServiceFence":
            return {key}
        if kind == "Sidecar":
            return {key} if key in self.fences else set()
        if kind == "Service":
            return self._affected_by_service(key, old, new)
        if kind in ("VirtualService", "ServiceEntry"):
            hosts = set((old or ((),))[0]) | set((new or ((),))[0])
            return self._fences_with_hosts(hosts) | self._fences_with_namespace(key.namespace)
        return set()

    def _affected_by_service(self, key: ObjectKey, old: Any, new: Any) -> set[ObjectKey]:
        labels = [dict(f[0]) for f in (old, new) if f is not None]
        found = {key} if key in self.fences else set()
        for fence_key, fence in self.fences.items():
            spec = fence.get("spec") or {}
            for item in spec.get("labelSelector") or []:
                selector = (item or {}).get("selector") or {}
                if selector and any(all(ls.get(k) == v for k, v in selector.items()) for ls in labels):
                    found.add(fence_key)
        found |= self._fences_with_namespace(key.namespace)
        return found | self._fences_with_hosts({service_fqdn(key.name, key.namespace, self.cluster_domain)})

    def _fences_with_namespace(self, namespace: str) -> set[ObjectKey]:
        found = set()
        for fence_key, fence in self.fences.items():
            spec = fence.get("spec") or {}
            if f"{namespace}/*" in (spec.get("host") or {}) or namespace in (
                spec.get("namespaceSelector") or []
            ):
                found.add(fence_key)
        return found

    def _fences_with_hosts(self, hosts: set[str]) -> set[ObjectKey]:
        found: set[ObjectKey] = set()
        for host in hosts:
            if host.startswith("*"):
                for fence_host, keys in self._host_fences.items():
                    if wildcard_matches(host, fence_host):
                        found |= keys
            else:
                found |= self._host_fences.get(host, set())
        return found
