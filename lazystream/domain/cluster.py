"""The cluster state the resolver reads: the few fields of a few kinds, with the indexes lookups need.

Objects come in as Kubernetes JSON (dicts, as the API server or a YAML file gives them) and are reduced at
once to small frozen records, so a worker's caches hold only what lazystream uses. ``ClusterState`` is
plain data with no I/O: Kubernetes watches feed it in the worker, YAML files in ``lazystream render``, and
builders in tests.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Hashable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar

from lazystream.domain.hosts import service_fqdn, wildcard_matches

GLOBAL_SIDECAR_SERVICE = "global-sidecar"
MEMO_LIMIT = 20_000
"""Derived lookups kept before the memo starts over. Each entry is about 0.5 KB (a resolution-cache key of
the caller's address and the authority, and its outcome): at 100k the memo was the largest structure of a
3k-fence worker (36-53 MB, bench_scale 2026-11-28). Only a worker that sees more distinct (caller, host)
pairs than this between cluster changes resolves some again."""
_T = TypeVar("_T")


class ObjectKey(NamedTuple):
    """A namespaced object's identity, ``namespace/name``."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class ClusterObjectError(ValueError):
    """A Kubernetes object lacks a field lazystream needs, or has it with the wrong type."""


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    protocol: str = "TCP"
    app_protocol: str | None = None
    target_port: int | str | None = None


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    selector: Mapping[str, str] = field(default_factory=dict)
    """Empty for a Service without a selector (never auto-fenced, selects no pod)."""
    ports: tuple[ServicePort, ...] = ()
    key: ObjectKey = field(init=False, repr=False, compare=False)
    """``namespace/name``, stored: it is read for every resolved record."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", ObjectKey(self.namespace, self.name))

    def selects(self, labels: Mapping[str, str]) -> bool:
        """True when the Service has a selector and every pair of it is in ``labels``."""
        return bool(self.selector) and all(labels.get(k) == v for k, v in self.selector.items())


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ips: tuple[str, ...] = ()
    service_account: str | None = None

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VirtualService:
    """Hosts and HTTP route destinations, short names already qualified in the VirtualService's namespace."""

    namespace: str
    name: str
    hosts: tuple[str, ...] = ()
    destinations: tuple[str, ...] = ()

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    namespace: str
    name: str
    hosts: tuple[str, ...] = ()

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Fence:
    """A ServiceFence as the resolver sees it: does it exist, and is it enabled."""

    namespace: str
    name: str
    enabled: bool = True

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class EndpointAddresses:
    """The IPs (ready and not ready) one Endpoints or EndpointSlice object lists for one Service."""

    service: ObjectKey
    ips: frozenset[str]


def _meta(obj: Mapping[str, Any], namespaced: bool = True) -> tuple[str, str]:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        raise ClusterObjectError(f"{obj.get('kind', 'object')} without metadata.name")
    namespace = meta.get("namespace", "default" if namespaced else "")
    if not isinstance(namespace, str):
        raise ClusterObjectError(f"{obj.get('kind')} {meta['name']}: metadata.namespace is not a string")
    # interned: the cache of a 10k-fence cluster holds each namespace thousands of times, and a fence, its
    # Sidecar, its Service and its workload's labels under one name
    return sys.intern(str(namespace)), sys.intern(str(meta["name"]))


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise ClusterObjectError(f"{where}: expected a map of strings")
    return {sys.intern(str(k)): sys.intern(str(v)) for k, v in value.items()}


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ClusterObjectError(f"{where}: expected a list")
    return value


def qualify(host: str, namespace: str, cluster_domain: str) -> str:
    """Istio's reading of a host written in a namespaced object: a single label is a Service there."""
    host = host.lower()
    if "." not in host and host != "*":
        return service_fqdn(host, namespace, cluster_domain)
    return host


def service_from(obj: Mapping[str, Any]) -> Service:
    namespace, name = _meta(obj)
    where = f"Service {namespace}/{name}"
    spec = obj.get("spec") or {}
    ports = []
    for i, port in enumerate(_list(spec.get("ports"), f"{where}: spec.ports")):
        if not isinstance(port, Mapping) or not isinstance(port.get("port"), int):
            raise ClusterObjectError(f"{where}: spec.ports[{i}].port must be an integer")
        ports.append(
            ServicePort(
                name=str(port.get("name") or ""),
                port=port["port"],
                protocol=str(port.get("protocol") or "TCP"),
                app_protocol=port.get("appProtocol"),
                target_port=port.get("targetPort"),
            )
        )
    return Service(
        namespace=namespace,
        name=name,
        labels=_str_map(obj.get("metadata", {}).get("labels"), f"{where}: metadata.labels"),
        selector=_str_map(spec.get("selector"), f"{where}: spec.selector"),
        ports=tuple(ports),
    )


def pod_from(obj: Mapping[str, Any]) -> Pod:
    namespace, name = _meta(obj)
    where = f"Pod {namespace}/{name}"
    status = obj.get("status") or {}
    ips = [status.get("podIP")] + [
        entry.get("ip") for entry in _list(status.get("podIPs"), f"{where}: status.podIPs") if entry
    ]
    return Pod(
        namespace=namespace,
        name=name,
        labels=_str_map(obj.get("metadata", {}).get("labels"), f"{where}: metadata.labels"),
        ips=tuple(dict.fromkeys(ip for ip in ips if isinstance(ip, str) and ip)),
        service_account=(obj.get("spec") or {}).get("serviceAccountName"),
    )


def endpoints_from(obj: Mapping[str, Any]) -> EndpointAddresses:
    namespace, name = _meta(obj)
    ips: set[str] = set()
    for subset in _list(obj.get("subsets"), f"Endpoints {namespace}/{name}: subsets"):
        for key in ("addresses", "notReadyAddresses"):
            ips.update(str(a["ip"]) for a in subset.get(key) or [] if isinstance(a, Mapping) and a.get("ip"))
    return EndpointAddresses(ObjectKey(namespace, name), frozenset(ips))


def endpoint_slice_from(obj: Mapping[str, Any]) -> EndpointAddresses:
    namespace, name = _meta(obj)
    where = f"EndpointSlice {namespace}/{name}"
    labels = _str_map(obj.get("metadata", {}).get("labels"), f"{where}: metadata.labels")
    service = labels.get("kubernetes.io/service-name")
    if not service:
        raise ClusterObjectError(f"{where}: no kubernetes.io/service-name label")
    ips: set[str] = set()
    for endpoint in _list(obj.get("endpoints"), f"{where}: endpoints"):
        ips.update(a for a in endpoint.get("addresses") or [] if isinstance(a, str))
    return EndpointAddresses(ObjectKey(namespace, service), frozenset(ips))


def virtual_service_from(obj: Mapping[str, Any], cluster_domain: str) -> VirtualService:
    namespace, name = _meta(obj)
    where = f"VirtualService {namespace}/{name}"
    spec = obj.get("spec") or {}
    hosts = [qualify(h, namespace, cluster_domain) for h in _list(spec.get("hosts"), f"{where}: spec.hosts")]
    destinations = []
    for http in _list(spec.get("http"), f"{where}: spec.http"):
        for route in (http or {}).get("route") or []:
            host = ((route or {}).get("destination") or {}).get("host")
            if isinstance(host, str) and host:
                destinations.append(qualify(host, namespace, cluster_domain))
    return VirtualService(namespace, name, tuple(hosts), tuple(dict.fromkeys(destinations)))


def service_entry_from(obj: Mapping[str, Any], cluster_domain: str) -> ServiceEntry:
    namespace, name = _meta(obj)
    hosts = _list((obj.get("spec") or {}).get("hosts"), f"ServiceEntry {namespace}/{name}: spec.hosts")
    return ServiceEntry(namespace, name, tuple(qualify(h, namespace, cluster_domain) for h in hosts))


def fence_from(obj: Mapping[str, Any]) -> Fence:
    namespace, name = _meta(obj)
    return Fence(namespace, name, enabled=bool((obj.get("spec") or {}).get("enable", False)))


class _HostIndex:
    """Objects by declared host: exact hosts in a dict, wildcard patterns in a list (few in practice)."""

    def __init__(self) -> None:
        self.exact: dict[str, set[ObjectKey]] = defaultdict(set)
        self.wildcards: dict[str, set[ObjectKey]] = defaultdict(set)

    def add(self, key: ObjectKey, hosts: Iterable[str]) -> None:
        for host in hosts:
            (self.wildcards if host.startswith("*") else self.exact)[host].add(key)

    def remove(self, key: ObjectKey, hosts: Iterable[str]) -> None:
        for host in hosts:
            index = self.wildcards if host.startswith("*") else self.exact
            index[host].discard(key)
            if not index[host]:
                del index[host]

    def lookup(self, host: str) -> set[ObjectKey]:
        found = set(self.exact.get(host, ()))
        for pattern, keys in self.wildcards.items():
            if wildcard_matches(pattern, host):
                found |= keys
        return found


class ClusterState:
    """Services, Endpoints/EndpointSlices, Pods, Namespaces, VirtualServices, ServiceEntries and
    ServiceFences, with indexes IP → Services, labels → Services and host → VirtualServices/ServiceEntries."""

    def __init__(self, cluster_domain: str = "cluster.local") -> None:
        self.cluster_domain = cluster_domain
        self.services: dict[ObjectKey, Service] = {}
        self.pods: dict[ObjectKey, Pod] = {}
        self.namespaces: dict[str, Namespace] = {}
        self.virtual_services: dict[ObjectKey, VirtualService] = {}
        self.service_entries: dict[ObjectKey, ServiceEntry] = {}
        self.fences: dict[ObjectKey, Fence] = {}
        self._endpoints: dict[tuple[str, ObjectKey], EndpointAddresses] = {}
        self._ip_endpoints: dict[str, set[tuple[str, ObjectKey]]] = defaultdict(set)
        self._ip_pods: dict[str, set[ObjectKey]] = defaultdict(set)
        self._service_labels: dict[tuple[str, str], set[ObjectKey]] = defaultdict(set)
        self._fqdns: dict[str, ObjectKey] = {}
        self._vs_hosts = _HostIndex()
        self._se_hosts = _HostIndex()
        self.memo: dict[Hashable, Any] = {}
        """Derived lookups (completion, admission, selectors) cached until the next change."""

    # -- building -------------------------------------------------------------------------------------

    @classmethod
    def from_objects(
        cls, objects: Iterable[Mapping[str, Any]], cluster_domain: str = "cluster.local"
    ) -> ClusterState:
        state = cls(cluster_domain)
        for obj in objects:
            state.apply(obj)
        return state

    def apply(self, obj: Mapping[str, Any]) -> None:
        """Add or replace one object (unknown kinds are ignored); :class:`ClusterObjectError` if malformed."""
        kind = obj.get("kind")
        if kind == "ServiceFence":
            self.put_fence(fence_from(obj))
            return
        self.memo.clear()
        if kind == "Service":
            self.put_service(service_from(obj))
        elif kind == "Pod":
            self.put_pod(pod_from(obj))
        elif kind == "Namespace":
            name = _meta(obj, namespaced=False)[1]
            labels = _str_map(obj.get("metadata", {}).get("labels"), f"Namespace {name}: metadata.labels")
            self.namespaces[name] = Namespace(name, labels)
        elif kind in ("Endpoints", "EndpointSlice"):
            addresses = endpoints_from(obj) if kind == "Endpoints" else endpoint_slice_from(obj)
            self.put_endpoints(kind, ObjectKey(*_meta(obj)), addresses)
        elif kind == "VirtualService":
            self.put_virtual_service(virtual_service_from(obj, self.cluster_domain))
        elif kind == "ServiceEntry":
            self.put_service_entry(service_entry_from(obj, self.cluster_domain))

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Remove one object; removing an absent object is a no-op."""
        key = ObjectKey(namespace, name)
        if kind == "ServiceFence":
            if self.fences.pop(key, None) is not None:
                self.memo.clear()
            return
        self.memo.clear()
        if kind == "Service":
            self._drop_service(key)
        elif kind == "Pod":
            self._drop_pod(key)
        elif kind == "Namespace":
            self.namespaces.pop(name, None)
        elif kind in ("Endpoints", "EndpointSlice"):
            self._drop_endpoints(kind, key)
        elif kind == "VirtualService" and key in self.virtual_services:
            self._vs_hosts.remove(key, self.virtual_services.pop(key).hosts)
        elif kind == "ServiceEntry" and key in self.service_entries:
            self._se_hosts.remove(key, self.service_entries.pop(key).hosts)

    def put_service(self, service: Service) -> None:
        self.memo.clear()
        self._drop_service(service.key)
        self.services[service.key] = service
        self._fqdns[self.fqdn(service.key)] = service.key
        for pair in service.labels.items():
            self._service_labels[pair].add(service.key)

    def put_pod(self, pod: Pod) -> None:
        self.memo.clear()
        self._drop_pod(pod.key)
        self.pods[pod.key] = pod
        for ip in pod.ips:
            self._ip_pods[ip].add(pod.key)

    def put_endpoints(self, kind: str, key: ObjectKey, addresses: EndpointAddresses) -> None:
        self.memo.clear()
        self._drop_endpoints(kind, key)
        self._endpoints[(kind, key)] = addresses
        for ip in addresses.ips:
            self._ip_endpoints[ip].add((kind, key))

    def put_virtual_service(self, vs: VirtualService) -> None:
        self.memo.clear()
        self.delete("VirtualService", vs.namespace, vs.name)
        self.virtual_services[vs.key] = vs
        self._vs_hosts.add(vs.key, vs.hosts)

    def put_service_entry(self, se: ServiceEntry) -> None:
        self.memo.clear()
        self.delete("ServiceEntry", se.namespace, se.name)
        self.service_entries[se.key] = se
        self._se_hosts.add(se.key, se.hosts)

    def put_fence(self, fence: Fence) -> None:
        """Add or replace a fence. Resolution reads only whether it exists and is enabled: the status
        writes that follow every learned host leave the resolution memo alone."""
        if self.fences.get(fence.key) != fence:
            self.memo.clear()
            self.fences[fence.key] = fence

    def _drop_service(self, key: ObjectKey) -> None:
        old = self.services.pop(key, None)
        if old is None:
            return
        self._fqdns.pop(self.fqdn(key), None)
        for pair in old.labels.items():
            self._service_labels[pair].discard(key)
            if not self._service_labels[pair]:
                del self._service_labels[pair]

    def _drop_pod(self, key: ObjectKey) -> None:
        old = self.pods.pop(key, None)
        for ip in old.ips if old else ():
            self._ip_pods[ip].discard(key)
            if not self._ip_pods[ip]:
                del self._ip_pods[ip]

    def _drop_endpoints(self, kind: str, key: ObjectKey) -> None:
        old = self._endpoints.pop((kind, key), None)
        for ip in old.ips if old else ():
            self._ip_endpoints[ip].discard((kind, key))
            if not self._ip_endpoints[ip]:
                del self._ip_endpoints[ip]

    # -- lookups --------------------------------------------------------------------------------------

    def fqdn(self, key: ObjectKey) -> str:
        return service_fqdn(key.name, key.namespace, self.cluster_domain)

    def service_by_fqdn(self, host: str) -> Service | None:
        key = self._fqdns.get(host)
        return None if key is None else self.services.get(key)

    def has_service(self, namespace: str, name: str) -> bool:
        return ObjectKey(namespace, name) in self.services

    def services_for_ip(self, ip: str) -> list[Service]:
        """Services whose Endpoints or EndpointSlices list ``ip`` (ready or not), sorted by key."""
        memo_key = ("ip", ip)
        found: list[Service] | None = self.memo.get(memo_key)
        if found is None:
            keys = {self._endpoints[ref].service for ref in self._ip_endpoints.get(ip, ())}
            found = self.remember(memo_key, [self.services[k] for k in sorted(keys) if k in self.services])
        return found

    def pods_for_ip(self, ip: str) -> list[Pod]:
        return [self.pods[k] for k in sorted(self._ip_pods.get(ip, ()))]

    def services_selecting(self, namespace: str, labels: Mapping[str, str]) -> list[Service]:
        """Services in ``namespace`` whose selector matches a pod with ``labels``, sorted by name."""
        memo_key = ("selecting", namespace, tuple(sorted(labels.items())))
        found: list[Service] | None = self.memo.get(memo_key)
        if found is None:
            matching = (s for s in self.services.values() if s.namespace == namespace and s.selects(labels))
            found = self.remember(memo_key, sorted(matching, key=lambda s: s.name))
        return found

    def remember(self, key: Hashable, value: _T) -> _T:
        """Cache a derived lookup until the next change; bounded, since keys may come from hostile input."""
        if len(self.memo) >= MEMO_LIMIT:
            self.memo.clear()
        self.memo[key] = value
        return value

    def services_for_service_account(self, namespace: str, account: str) -> list[Service]:
        """Services selecting the pods that run as ServiceAccount ``namespace/account``."""
        found: dict[ObjectKey, Service] = {}
        for pod in self.pods.values():
            if pod.namespace == namespace and pod.service_account == account:
                found.update((s.key, s) for s in self.services_selecting(namespace, pod.labels))
        return [found[k] for k in sorted(found)]

    def services_with_label(self, key: str, value: str) -> set[ObjectKey]:
        return set(self._service_labels.get((key, value), ()))

    def virtual_services_for(self, host: str) -> list[VirtualService]:
        return [self.virtual_services[k] for k in sorted(self._vs_hosts.lookup(host))]

    def service_entries_for(self, host: str) -> list[ServiceEntry]:
        return [self.service_entries[k] for k in sorted(self._se_hosts.lookup(host))]

    def iter_services(self) -> Iterator[Service]:
        return iter(sorted(self.services.values(), key=lambda s: s.key))


class ClusterView(Protocol):
    """The cluster as everything but the watches reads it: a :class:`ClusterState` and the ServiceFences,
    behind a lock (the Kubernetes watches update them from threads). The watch cache
    (``lazystream.kube.informers.ClusterCache``) is the one; the stream agents, the admin API, autoFence,
    the fallback keeper and the Prometheus poller read it through this, and tests pass stand-ins."""

    state: ClusterState

    @property
    def fences(self) -> Mapping[ObjectKey, dict[str, Any]]: ...

    def fence(self, key: ObjectKey, /) -> dict[str, Any] | None: ...

    def reading(self) -> AbstractContextManager[Any]: ...
