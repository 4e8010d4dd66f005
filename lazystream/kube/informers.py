"""In-process cluster caches fed by Kubernetes watches, and the fences each change affects.

The worker resolves access-log records and computes fences from a :class:`ClusterState`, an in-process
cache of the cluster in every worker. :class:`ClusterCache` keeps that state, plus the ServiceFences and
Sidecars the sink reads, in step with the API server, and tells the stream side which fences to recompute
when something they depend on changes.

The Kubernetes client is synchronous, and the worker runs faust on the main thread's asyncio loop, so each
watched kind gets its own daemon thread: list (paged), reconcile, then watch from the list's
``resourceVersion`` with bookmarks and a server-side timeout, and again. Errors back off exponentially
(0.5 s to 30 s, with jitter) and re-list; ``410 Gone`` re-lists at once; a periodic full resync re-lists
and reconciles (objects missing from the list are deleted, emitting their deletion). A custom resource
whose CRD is not served counts as synced and empty and is retried later (logged once).

API::

    cache = ClusterCache(api_client, cluster_domain="cluster.local", on_change=callback,
                         resync_seconds=300.0, kinds=ALL_KINDS)
    cache.start()                     # one thread per kind, returns at once; again after stop()
    cache.wait_synced(timeout) -> bool  # every kind listed once (absent CRDs count as synced)
    with cache.reading() as state:    # the lock; hold it briefly around reads of state/fences/sidecars
        state.services_for_ip(ip)
    cache.state                       # the domain ClusterState
    cache.fences                      # ObjectKey -> reduced ServiceFence without status, decoded when read
    cache.fence(key)                  # the reduced ServiceFence with its status, or None
    cache.sidecars                    # ObjectKey -> reduced Sidecar (Kubernetes JSON), decoded when read
    cache.set_fence_hosts(key, hosts) # the sink: every host of the fence's last computed status.domains
    cache.forget_fence(key)
    cache.resync_now(timeout) -> bool # re-list every kind now (tests, operators); True when done
    cache.stop(timeout=5.0) -> bool   # stops and joins every thread; True when none is left
    cache.events_total                # Counter "<Kind>/<TYPE>": ADDED, MODIFIED, DELETED, BOOKMARK, LIST
    cache.errors_total                # Counter by kind: failed requests and unreadable objects

``on_change(keys, reason)`` is called from a watch thread, never with the lock held, with the fences whose
output may have changed (only fences that exist in the cache): for a ServiceFence, that fence; for a
Sidecar, the fence of the same name, when it exists or the Sidecar is owned by a ServiceFence (another
writer may have changed it; the sink re-applies); for Services, VirtualServices and ServiceEntries, what
the domain's rules say (:mod:`lazystream.domain.affected`); Endpoints, EndpointSlices, Pods and Namespaces
change resolution only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from lazystream.domain.affected import FenceIndex
from lazystream.domain.cluster import ClusterObjectError, ClusterState, ObjectKey
from lazystream.domain.fences import fence_from_object
from lazystream.kube.errors import describe
from lazystream.runtime.backoff import Backoff

log = logging.getLogger(__name__)

OnChange = Callable[[set[ObjectKey], str], None]
"""``on_change(fence_keys, reason)``, called from a watch thread."""


@dataclass(frozen=True, slots=True)
class KindInfo:
    """Where one watched kind is served; ``group`` is empty for the core API."""

    kind: str
    group: str
    version: str
    plural: str
    custom: bool = False


KINDS: Final[dict[str, KindInfo]] = {
    info.kind: info
    for info in (
        KindInfo("Namespace", "", "v1", "namespaces"),
        KindInfo("Service", "", "v1", "services"),
        KindInfo("Endpoints", "", "v1", "endpoints"),
        KindInfo("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices"),
        KindInfo("Pod", "", "v1", "pods"),
        KindInfo("VirtualService", "networking.istio.io", "v1alpha3", "virtualservices", custom=True),
        KindInfo("ServiceEntry", "networking.istio.io", "v1alpha3", "serviceentries", custom=True),
        KindInfo("ServiceFence", "microservice.slime.io", "v1alpha1", "servicefences", custom=True),
        KindInfo("Sidecar", "networking.istio.io", "v1alpha3", "sidecars", custom=True),
    )
}
ALL_KINDS: Final[tuple[str, ...]] = tuple(KINDS)

LIST_PAGE = 250
"""Objects per list request. Each page is parsed whole before it is reduced: with 500 learned fences a
page (and the allocator's memory kept after it) was tens of MB. Listing 12.7k fences and 14.9k Services
with the worker's allocator settings: 500 per page 149 MB RSS, 11 s; 250 141 MB, 12-18 s; 100 139 MB,
18 s (a restarted worker waits for this list before it is ready)."""
CONNECT_TIMEOUT_S = 5.0
LIST_READ_TIMEOUT_S = 60.0
WATCH_TIMEOUT_S = 60
"""Server-side watch timeout; the client's read timeout is a little longer, to notice a dead connection."""
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
CRD_RETRY_S = 30.0
HTTP_GONE = 410
HTTP_NOT_FOUND = 404
_UNREADABLE = (ClusterObjectError, AttributeError, TypeError, ValueError)
"""What reading one malformed object may raise: it is logged and skipped, never stops its kind's watch
(a watch that failed on it would re-list and fail again, forever)."""


@dataclass(eq=False)
class _KindWorker:
    """One kind's thread and the flags other threads use to talk to it."""

    info: KindInfo
    lister: Callable[..., Any]
    thread: threading.Thread | None = None
    watch: Any = None
    """The ``kubernetes.watch.Watch`` in progress, so ``stop`` and ``resync_now`` can interrupt it."""
    wake: threading.Event = field(default_factory=threading.Event)
    synced: threading.Event = field(default_factory=threading.Event)
    resync_requested: bool = False
    lists_done: int = 0
    absent: bool = False


def _key(obj: Mapping[str, Any]) -> ObjectKey:
    """The object's key, its strings interned: every event brings fresh copies of them, and a cache of
    10k fences keeps keys of ServiceFences, Sidecars, Services and EndpointSlices in a dozen dicts, most
    of them in one namespace and a fence, its Sidecar and its Service under one name."""
    meta = obj.get("metadata") or {}
    return ObjectKey(sys.intern(str(meta.get("namespace") or "")), sys.intern(str(meta.get("name") or "")))


def _resource_version(obj: Mapping[str, Any]) -> str | None:
    value = (obj.get("metadata") or {}).get("resourceVersion")
    return value if isinstance(value, str) else None


def _pick(mapping: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: mapping[k] for k in keys if mapping.get(k) is not None}


def reduce_fence(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a ServiceFence the sink and fence computation read; the rest (managedFields,
    annotations) is dropped so that a large mesh's fences stay small in memory."""
    meta = _pick(
        obj.get("metadata") or {}, ("name", "namespace", "uid", "labels", "resourceVersion", "generation")
    )
    reduced: dict[str, Any] = {
        "apiVersion": obj.get("apiVersion", "microservice.slime.io/v1alpha1"),
        "kind": "ServiceFence",
        "metadata": meta,
    }
    reduced.update(_pick(obj, ("spec", "status")))
    return reduced


def reduce_sidecar(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a Sidecar the sink compares with the one it wants."""
    meta = _pick(
        obj.get("metadata") or {}, ("name", "namespace", "labels", "ownerReferences", "resourceVersion")
    )
    reduced: dict[str, Any] = {"metadata": meta}
    reduced.update(_pick(obj, ("spec",)))
    return reduced


def _without_version(reduced: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (reduced.get("metadata") or {}).items() if k != "resourceVersion"}
    return {**reduced, "metadata": meta}


def _raw_stream_call(func: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    # A function without a documented return type: Watch then yields the API's JSON (camelCase dicts) and
    # skips building client models we would only convert back.
    return call


def pack(value: Any) -> bytes:
    """Canonical JSON, deflated: equal content gives equal bytes. A learned fence's status or Sidecar
    repeats the same host names and numbers, and shrinks to about a sixth; packing and unpacking one
    takes tens of microseconds."""
    return zlib.compress(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), 1)


def unpack(data: bytes) -> Any:
    return orjson.loads(zlib.decompress(data))


class CompactObjects(Mapping[ObjectKey, dict[str, Any]]):
    """Objects kept :func:`pack`-ed and decoded when read: a learned fence's Sidecar lists every host it
    learned, and as parsed JSON took about 8 KB in every worker (each worker watches all of them); packed,
    a few hundred bytes. Read under the cache's lock, like the rest."""

    def __init__(self) -> None:
        self._data: dict[ObjectKey, bytes] = {}

    def __getitem__(self, key: ObjectKey) -> dict[str, Any]:
        value: dict[str, Any] = unpack(self._data[key])
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[ObjectKey]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def put(self, key: ObjectKey, obj: Mapping[str, Any]) -> None:
        self._data[key] = pack(obj)

    def discard(self, key: ObjectKey) -> bool:
        """Forget ``key``; True when it was there."""
        return self._data.pop(key, None) is not None


def _digest(obj: Mapping[str, Any]) -> bytes:
    """A digest of the canonical JSON of ``obj``: what tells a change apart from a replay."""
    return hashlib.blake2b(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


class ClusterCache:
    """A ClusterState, ServiceFences and Sidecars kept in step with the API server by list-and-watch.

    See the module docstring for the API and the affected-fence rules.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        cluster_domain: str = "cluster.local",
        on_change: OnChange | None = None,
        on_kind_change: Callable[[str], None] | None = None,
        resync_seconds: float = 300.0,
        kinds: Iterable[str] = ALL_KINDS,
        watch_timeout_seconds: int = WATCH_TIMEOUT_S,
        crd_retry_seconds: float = CRD_RETRY_S,
    ) -> None:
        kinds = tuple(dict.fromkeys(kinds))
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; known: {', '.join(ALL_KINDS)}")
        self.api_client = api_client
        self.cluster_domain = cluster_domain
        self.on_change = on_change
        self.on_kind_change = on_kind_change
        """Called (from a watch thread) with the kind of any object that changed, whether or not a fence is
        affected: autoFence reacts to Services and Namespaces that no fence depends on yet."""
        self.resync_seconds = resync_seconds
        self.watch_timeout_seconds = watch_timeout_seconds
        self.crd_retry_seconds = crd_retry_seconds
        self.state = ClusterState(cluster_domain)
        self.fences = CompactObjects()
        """Reduced ServiceFences without ``status`` (see :meth:`fence`), packed: as parsed JSON each took
        1.5 KB, 15 MB of every worker at 10k fences."""
        self._fence_statuses: dict[ObjectKey, bytes] = {}
        """Each fence's ``status``, :func:`pack`-ed: a learned fence's status lists every host twice
        (``domains``, ``metricStatus``) and took about 24 KB per fence as Python objects, 8 KB as JSON."""
        self.sidecars = CompactObjects()
        """Reduced Sidecars (decoded on every read: keep the result rather than read twice)."""
        self._sidecar_digests: dict[ObjectKey, bytes] = {}
        """Per Sidecar, a digest of its reduced form without ``resourceVersion``: whether a change is one
        the sink should look at."""
        self.events_total: Counter[str] = Counter()
        self.errors_total: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._progress = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._versions: dict[str, dict[ObjectKey, str]] = {kind: {} for kind in kinds}
        """Per kind, the resourceVersion of every cached object: what a resync compares with."""
        self.index = FenceIndex(cluster_domain)
        """Fences by what they depend on: which fences a change affects (the domain's rules)."""
        self._workers = {kind: _KindWorker(KINDS[kind], self._lister(KINDS[kind])) for kind in kinds}

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start one daemon thread per kind; returns at once (see :meth:`wait_synced`).

        A stopped cache may be started again: it keeps what it holds, and each kind's first list
        reconciles it with the server (objects deleted meanwhile are deleted, and their deletion emitted).
        """
        if any(w.thread is not None and w.thread.is_alive() for w in self._workers.values()):
            raise RuntimeError("ClusterCache is running already")
        self._stopping.clear()
        for worker in self._workers.values():
            worker.synced.clear()
            worker.wake.clear()
            worker.resync_requested = False
            worker.thread = threading.Thread(
                target=self._run, args=(worker,), name=f"lazystream-informer-{worker.info.kind}", daemon=True
            )
            worker.thread.start()

    def wait_synced(self, timeout: float) -> bool:
        """True once every kind has been listed once (a kind whose CRD is absent counts as synced); False
        after ``timeout``, or soon after :meth:`stop` (a stopping worker must not wait out the timeout)."""
        deadline = time.monotonic() + timeout
        for worker in self._workers.values():
            while not worker.synced.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
                if self._stopping.is_set() or time.monotonic() >= deadline:
                    return False
        return True

    @property
    def synced(self) -> bool:
        return all(w.synced.is_set() for w in self._workers.values())

    def resync_now(self, timeout: float = 30.0) -> bool:
        """Re-list and reconcile every kind now, interrupting the watches; True when all have done so.

        The periodic resync does the same on its own; this is for tests and for an operator's request.
        """
        with self._lock:
            before = {kind: w.lists_done for kind, w in self._workers.items()}
            for worker in self._workers.values():
                worker.resync_requested = True
                worker.wake.set()
        for worker in self._workers.values():
            self._interrupt(worker)
        deadline = time.monotonic() + timeout
        with self._progress:
            while any(w.lists_done <= before[k] for k, w in self._workers.items()):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return False
                for worker in self._workers.values():
                    if (
                        worker.resync_requested
                    ):  # not seen yet: its watch may have started after the call above
                        self._interrupt(worker)
                self._progress.wait(min(remaining, 0.2))
        return True

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop every thread and wait for them (up to ``timeout``); True when none is left running."""
        self._stopping.set()
        for worker in self._workers.values():
            worker.wake.set()
        deadline = time.monotonic() + timeout
        while True:
            alive = [
                (w, w.thread) for w in self._workers.values() if w.thread is not None and w.thread.is_alive()
            ]
            if not alive:
                return True
            if time.monotonic() > deadline:
                kinds = [w.info.kind for w, _ in alive]
                log.warning("informer threads still running after %.1f s: %s", timeout, kinds)
                return False
            for worker, _ in alive:
                # repeated: a watch that starts between two calls is interrupted by the next
                self._interrupt(worker)
            for _, thread in alive:
                thread.join(0.05)

    def __enter__(self) -> ClusterCache:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def reading(self) -> Iterator[ClusterState]:
        """Hold the cache's lock while reading ``state``, ``fences`` or ``sidecars`` (briefly: the watch
        threads wait for it)."""
        with self._lock:
            yield self.state

    # -- the sink's host index ----------------------------------------------------------------------------

    def set_fence_hosts(self, key: ObjectKey, hosts: Iterable[str]) -> None:
        """Record every host of a fence's last computed ``status.domains``, so that a VirtualService or
        ServiceEntry for one of them (or the Service of that FQDN) recomputes exactly that fence."""
        with self._lock:
            self.index.set_hosts(key, hosts)

    def forget_fence(self, key: ObjectKey) -> None:
        """Drop a fence's hosts from the index (the fence is gone or no longer computed)."""
        with self._lock:
            self.index.forget_hosts(key)

    # -- the per-kind thread --------------------------------------------------------------------------

    def _lister(self, info: KindInfo) -> Callable[..., Any]:
        if not info.custom:
            core = client.CoreV1Api(self.api_client)
            listers: dict[str, Callable[..., Any]] = {
                "Namespace": core.list_namespace,
                "Service": core.list_service_for_all_namespaces,
                "Endpoints": core.list_endpoints_for_all_namespaces,
                "Pod": core.list_pod_for_all_namespaces,
                "EndpointSlice": client.DiscoveryV1Api(
                    self.api_client
                ).list_endpoint_slice_for_all_namespaces,
            }
            return listers[info.kind]
        custom = client.CustomObjectsApi(self.api_client)

        def list_custom(**kwargs: Any) -> Any:
            return custom.list_cluster_custom_object(info.group, info.version, info.plural, **kwargs)

        return list_custom

    def _interrupt(self, worker: _KindWorker) -> None:
        current = worker.watch
        if current is not None:
            current.stop()

    def _interrupted(self, worker: _KindWorker) -> bool:
        return self._stopping.is_set() or worker.resync_requested

    def _sleep(self, worker: _KindWorker, seconds: float) -> None:
        worker.wake.wait(seconds)
        worker.wake.clear()

    def _run(self, worker: _KindWorker) -> None:
        kind = worker.info.kind
        backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)
        version: str | None = None
        next_resync = 0.0
        while not self._stopping.is_set():
            try:
                if version is None or worker.resync_requested or time.monotonic() >= next_resync:
                    worker.resync_requested = False
                    worker.wake.clear()
                    version = self._list(worker)
                    next_resync = time.monotonic() + self.resync_seconds
                    backoff.reset()
                    if version is None:  # CRD absent: look again later, or when asked to resync
                        self._sleep(worker, min(self.crd_retry_seconds, self.resync_seconds))
                        continue
                version = self._watch(worker, version, next_resync)
                backoff.reset()
            except ApiException as exc:
                if self._interrupted(worker):
                    continue
                version = None
                if exc.status == HTTP_GONE:
                    log.info("%s: resourceVersion expired (410 Gone), re-listing", kind)
                    self._count_event(kind, "GONE")
                    continue
                self._failed(worker, backoff, exc)
            except Exception as exc:
                if self._interrupted(worker):
                    continue
                version = None
                self._failed(worker, backoff, exc)

    def _failed(self, worker: _KindWorker, backoff: Backoff, exc: BaseException) -> None:
        delay = backoff.next()
        with self._lock:
            self.errors_total[worker.info.kind] += 1
        log.warning(
            "%s list/watch failed (%s); re-listing in %.1f s",
            worker.info.kind,
            describe(exc).strip()[:300],
            delay,
        )
        self._sleep(worker, delay)

    def _list(self, worker: _KindWorker) -> str | None:
        """List every object (paged), reconcile the cache with the list; the list's resourceVersion, or
        None when the kind's CRD is not served.

        Each page is applied as it arrives and then dropped: a cluster's full list of learned fences, as
        parsed JSON, was hundreds of MB at the peak, which the process kept as RSS afterwards."""
        info = worker.info
        seen: set[ObjectKey] = set()
        affected: set[ObjectKey] = set()
        meta: dict[str, Any] = {}
        token: str | None = None
        while True:
            try:
                response = worker.lister(
                    limit=LIST_PAGE,
                    _continue=token,
                    _preload_content=False,
                    _request_timeout=(CONNECT_TIMEOUT_S, LIST_READ_TIMEOUT_S),
                )
            except ApiException as exc:
                if exc.status == HTTP_NOT_FOUND and info.custom:
                    self._absent(worker)
                    return None
                if exc.status == HTTP_GONE and token is not None:  # continue token expired: start over
                    seen, token = set(), None
                    continue
                raise
            try:
                body = orjson.loads(response.data)
            finally:
                response.release_conn()
            affected |= self._apply_page(info.kind, body.get("items") or [], seen)
            meta = body.get("metadata") or {}
            del body
            token = meta.get("continue") or None
            if token is None:
                break
        if worker.absent:
            log.info("%s is served now", info.kind)
            worker.absent = False
        self._finish_list(worker, seen, affected, f"{info.kind} list")
        version = meta.get("resourceVersion")
        return str(version) if version else None

    def _absent(self, worker: _KindWorker) -> None:
        if not worker.absent:
            log.warning(
                "%s (%s/%s) is not served: no CRD; treating as empty, retrying every %.0f s",
                worker.info.kind,
                worker.info.group,
                worker.info.version,
                self.crd_retry_seconds,
            )
            worker.absent = True
        self._finish_list(worker, set(), set(), f"{worker.info.kind} absent")

    def _watch(self, worker: _KindWorker, version: str, next_resync: float) -> str:
        """Watch from ``version`` until the server's timeout, the next resync, an interruption or an error
        (raised); the last resourceVersion seen."""
        kind = worker.info.kind
        timeout = int(max(1.0, min(self.watch_timeout_seconds, next_resync - time.monotonic())))
        current = watch.Watch()
        worker.watch = current
        try:
            if self._interrupted(worker):
                return version
            stream = current.stream(
                _raw_stream_call(worker.lister),
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _request_timeout=(CONNECT_TIMEOUT_S, timeout + 15.0),
            )
            with contextlib.closing(stream):
                for event in stream:
                    if not isinstance(event, dict):
                        continue
                    kind_type = str(event.get("type"))
                    obj = event.get("raw_object")
                    if not isinstance(obj, dict):
                        continue
                    version = _resource_version(obj) or version
                    if kind_type == "BOOKMARK":
                        self._count_event(kind, kind_type)
                    elif kind_type in ("ADDED", "MODIFIED", "DELETED"):
                        self._handle_event(kind, kind_type, obj)
                    if self._interrupted(worker):
                        break
        finally:
            worker.watch = None
        return version

    # -- applying changes -----------------------------------------------------------------------------

    def _count_event(self, kind: str, kind_type: str) -> None:
        with self._lock:
            self.events_total[f"{kind}/{kind_type}"] += 1

    def _handle_event(self, kind: str, kind_type: str, obj: dict[str, Any]) -> None:
        obj["kind"] = kind
        key = _key(obj)
        with self._lock:
            affected = self._remove(kind, key) if kind_type == "DELETED" else self._upsert(kind, key, obj)
        self._notify(affected, f"{kind} {kind_type} {key}")
        self._notify_kind(kind)

    def _apply_page(self, kind: str, items: list[dict[str, Any]], seen: set[ObjectKey]) -> set[ObjectKey]:
        """Apply one page of a list (new and changed objects); the keys go to ``seen``."""
        affected: set[ObjectKey] = set()
        with self._lock:
            for obj in items:
                obj["kind"] = kind
                key = _key(obj)
                seen.add(key)
                affected |= self._upsert(kind, key, obj)
        return affected

    def _finish_list(
        self, worker: _KindWorker, seen: set[ObjectKey], affected: set[ObjectKey], reason: str
    ) -> None:
        """End a list: delete what it did not contain, mark the kind synced, and report the changes."""
        kind = worker.info.kind
        with self._lock:
            for key in [k for k in self._versions[kind] if k not in seen]:
                affected |= self._remove(kind, key)
            self.events_total[f"{kind}/LIST"] += 1
            worker.lists_done += 1
            worker.synced.set()
            self._progress.notify_all()
        self._notify(affected, reason)
        self._notify_kind(kind)

    def _notify_kind(self, kind: str) -> None:
        if self.on_kind_change is not None:
            try:
                self.on_kind_change(kind)
            except Exception:
                log.exception("on_kind_change failed for %s", kind)

    def _notify(self, keys: set[ObjectKey], reason: str) -> None:
        if not keys or self.on_change is None:
            return
        try:
            self.on_change(keys, reason)
        except Exception:
            log.exception("on_change failed for %s", reason)

    def _upsert(self, kind: str, key: ObjectKey, obj: dict[str, Any]) -> set[ObjectKey]:
        """Apply one added or changed object (lock held); the fences it affects."""
        known = self._versions[kind]
        version = _resource_version(obj) or ""
        if key in known and known[key] == version:
            return set()
        self.events_total[f"{kind}/{'MODIFIED' if key in known else 'ADDED'}"] += 1
        known[key] = version
        if kind == "ServiceFence":
            return self._upsert_fence(key, obj)
        if kind == "Sidecar":
            reduced = reduce_sidecar(obj)
            digest = _digest(_without_version(reduced))
            old = self._sidecar_digests.get(key)
            self.sidecars.put(key, reduced)
            self._sidecar_digests[key] = digest
            if old == digest:
                return set()
            return self._sidecar_fence(key, reduced)
        return self._change_state(kind, key, obj)

    def _remove(self, kind: str, key: ObjectKey) -> set[ObjectKey]:
        """Delete one object (lock held); the fences it affects."""
        if self._versions[kind].pop(key, None) is None:
            return set()
        self.events_total[f"{kind}/DELETED"] += 1
        if kind == "ServiceFence":
            self.fences.discard(key)
            self._fence_statuses.pop(key, None)
            self.index.set_spec(key, None)
            self.index.forget_hosts(key)
            self.state.delete(kind, key.namespace, key.name)
            return {key}
        if kind == "Sidecar":
            old = self.sidecars.get(key)
            self.sidecars.discard(key)
            self._sidecar_digests.pop(key, None)
            return self._sidecar_fence(key, old) if old is not None else set()
        return self._change_state(kind, key, None)

    def fence(self, key: ObjectKey) -> dict[str, Any] | None:
        """The reduced ServiceFence with its status (call under :meth:`reading`), or None."""
        reduced = self.fences.get(key)
        if reduced is None:
            return None
        status = self._fence_statuses.get(key)
        return reduced if status is None else {**reduced, "status": unpack(status)}

    def _upsert_fence(self, key: ObjectKey, obj: dict[str, Any]) -> set[ObjectKey]:
        reduced = reduce_fence(obj)
        status = reduced.pop("status", None)
        compact = None if status is None else pack(status)
        old = self.fences.get(key)
        old_status = self._fence_statuses.get(key)
        self.fences.put(key, reduced)
        if compact is None:
            self._fence_statuses.pop(key, None)
        else:
            self._fence_statuses[key] = compact
        if old is not None and old_status == compact and _without_version(old) == _without_version(reduced):
            return set()
        self.state.apply(reduced)
        try:
            self.index.set_spec(key, fence_from_object(reduced).spec)
        except _UNREADABLE as exc:
            # still reported: the sink reports the fence's error; no dependency is derived from it
            self.errors_total["ServiceFence"] += 1
            log.warning("ServiceFence %s: %s", key, exc)
            self.index.set_spec(key, None)
        return {key}

    def _sidecar_fence(self, key: ObjectKey, sidecar: Mapping[str, Any]) -> set[ObjectKey]:
        """The fence a Sidecar belongs to: same key, when that fence exists or a ServiceFence owns it (a
        Sidecar of someone else's, beside no fence, is none of the sink's business)."""
        owners = (sidecar.get("metadata") or {}).get("ownerReferences") or []
        owned = any(isinstance(o, Mapping) and o.get("kind") == "ServiceFence" for o in owners)
        return {key} if key in self.fences or owned else set()

    def _apply(self, kind: str, key: ObjectKey, obj: dict[str, Any] | None) -> None:
        """Apply ``obj`` to the domain state, or delete ``key`` when it is None."""
        if obj is None:
            self.state.delete(kind, key.namespace, key.name)
            return
        try:
            self.state.apply(obj)
        except _UNREADABLE as exc:
            # The object as it is now cannot be read: drop what we had rather than keep a stale record.
            self.errors_total[kind] += 1
            log.warning("%s %s ignored: %s", kind, key, exc)
            self.state.delete(kind, key.namespace, key.name)

    # -- affected fences ------------------------------------------------------------------------------

    def _change_state(self, kind: str, key: ObjectKey, obj: dict[str, Any] | None) -> set[ObjectKey]:
        """Apply or delete one object of a ClusterState kind; the fences whose output the change may alter
        (:class:`~lazystream.domain.affected.FenceIndex`), from the reduced records before and after."""
        state = self.state
        if kind == "Service":
            old_service = state.services.get(key)
            self._apply(kind, key, obj)
            return self.index.service_changed(old_service, state.services.get(key), state, self.fences)
        if kind == "VirtualService":
            old_vs = state.virtual_services.get(key)
            self._apply(kind, key, obj)
            new_vs = state.virtual_services.get(key)
            return self.index.virtual_service_changed(key.namespace, old_vs, new_vs, state, self.fences)
        if kind == "ServiceEntry":
            old_se = state.service_entries.get(key)
            self._apply(kind, key, obj)
            return self.index.service_entry_changed(old_se, state.service_entries.get(key), self.fences)
        self._apply(kind, key, obj)
        return set()
