"""From one access record and the cluster state to edges ``fence -> host``, or a precise reason why not.

The upstream cluster says what a record is (fallback, direct, or ignored); the source is
the caller's Services (from the peer IP or the writing pod's metadata); the destination is the authority,
completed to an FQDN and *admitted* only when the cluster declares it (a Service, a ServiceEntry or a
VirtualService host). Every outcome carries a reason, for "explain" and for metrics.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Protocol

from lazystream.domain.autofence import AutoFenceOptions, would_create
from lazystream.domain.cluster import GLOBAL_SIDECAR_SERVICE, ClusterState, ObjectKey, Service
from lazystream.domain.hosts import HostProblem, ip_of, is_loopback, normalize_authority, service_fqdn
from lazystream.domain.records import AccessRecord, RecordFormat
from lazystream.domain.workloads import WorkloadFences


class ObservationKind(StrEnum):
    FALLBACK = "fallback"
    """The call went through the global-sidecar: the dependency is missing from the caller's Sidecar."""
    DIRECT = "direct"
    """The caller's sidecar routed the call itself: the dependency is known and in use."""


class Outcome(StrEnum):
    """What became of a record. ``learned`` yields edges; ``ignored_*`` and ``rejected_*`` are counted."""

    LEARNED = "learned"
    IGNORED_PASSTHROUGH = "ignored_passthrough"
    IGNORED_BLACKHOLE = "ignored_blackhole"
    IGNORED_INBOUND = "ignored_inbound_of_ordinary_pod"
    IGNORED_UNKNOWN_CLUSTER = "ignored_unknown_cluster"
    IGNORED_EMPTY_AUTHORITY = "ignored_empty_authority"
    IGNORED_IP_AUTHORITY = "ignored_ip_authority"
    IGNORED_NO_SOURCE = "ignored_no_source"
    IGNORED_OUT_OF_SCOPE = "ignored_out_of_scope"
    """The caller has no fence and its namespace is outside the namespace scope (``whiteNamespaceList``,
    ``blackNamespaceList``): no fence of this controller's can ever want its edges."""
    HELD_NO_FENCE = "held_no_fence"
    """The caller has no enabled fence, and autoFence would not create one: its edges are kept anyway,
    under the key of the fence it would have (``<namespace>/<Service>``), so that a fence created or
    enabled later starts with every dependency recorded since (Slime's cache keeps them the same way)."""
    REJECTED_INVALID_HOST = "rejected_invalid_host"
    REJECTED_GLOBAL_SIDECAR = "rejected_global_sidecar_host"
    REJECTED_NOT_ADMITTED = "rejected_not_admitted"


@dataclass(frozen=True, slots=True)
class ResolveOptions:
    """The configuration the resolver reads (from ``general``/``fence`` of lazystream's config)."""

    cluster_domain: str = "cluster.local"
    global_sidecar_namespaces: frozenset[str] = frozenset({"mesh-operator"})
    """Namespaces holding a global-sidecar Service (cluster mode: one; namespace mode: the listed ones)."""
    global_sidecar_service: str = GLOBAL_SIDECAR_SERVICE
    enable_short_domain: bool = False
    """Also learn the short form of a host written short (Slime's ``enableShortDomain``)."""
    workload_fences: WorkloadFences | None = None
    """``fenceLabelKeyAlias``: calls are also charged to the caller pod's workload fence."""
    autofence: AutoFenceOptions | None = None
    """With autoFence on, a fence that autoFence would create counts as existing (it is due)."""
    white_namespaces: frozenset[str] = frozenset()
    """The namespace scope: callers outside it are never held for a later fence (empty: every one)."""
    black_namespaces: frozenset[str] = frozenset()
    global_sidecar_hosts: frozenset[str] = field(init=False, repr=False, compare=False)
    """The FQDNs of the global-sidecar Services, derived from the fields above."""
    _hash: int = field(init=False, repr=False, compare=False)

    def __hash__(self) -> int:  # hashed once per record as part of the resolution cache key
        return self._hash

    def __post_init__(self) -> None:
        hosts = {
            service_fqdn(self.global_sidecar_service, ns, self.cluster_domain)
            for ns in self.global_sidecar_namespaces
        }
        object.__setattr__(self, "global_sidecar_hosts", frozenset(hosts))
        fields = (self.cluster_domain, self.global_sidecar_namespaces, self.global_sidecar_service)
        extra = (self.enable_short_domain, self.workload_fences, repr(self.autofence))
        scope = (self.white_namespaces, self.black_namespaces)
        object.__setattr__(self, "_hash", hash((*fields, *extra, *scope)))


class Edge(NamedTuple):
    """One learned dependency: the fence ``namespace/name`` calls ``host``."""

    fence: ObjectKey
    host: str
    kind: ObservationKind
    source: ObjectKey
    """The caller's Service the edge was charged to (it names the fence)."""


class Resolution(NamedTuple):
    outcome: Outcome
    edges: tuple[Edge, ...] = ()
    detail: str = ""
    host: str | None = None
    """The destination host, when the record got that far (for "recently rejected hosts")."""
    sources: tuple[ObjectKey, ...] = ()
    event_time: float | None = None
    """The record's event time (its edges' observation time)."""


@dataclass(frozen=True, slots=True)
class UpstreamCluster:
    """Envoy's cluster name, ``direction|port|subset|host``."""

    direction: str
    port: str
    subset: str
    host: str


_SPIFFE = re.compile(r"spiffe://[^/]+/ns/([^/]+)/sa/([^/]+)")
_STAT_NAME = re.compile(r"^(inbound|outbound)_\.(\d*)_\.([^.]*)_\.(.*)$")


def parse_cluster(name: str) -> UpstreamCluster | None:
    """Both spellings: ``outbound|9080||details.default.svc.cluster.local`` (``%UPSTREAM_CLUSTER_RAW%``,
    Istio ≥ 1.23, and the usual ``%UPSTREAM_CLUSTER%``) and the ``alt_stat_name`` form
    ``outbound_.9080_._.details.default.svc.cluster.local`` that ``%UPSTREAM_CLUSTER%`` gives in some
    releases (with a trailing ``;`` in some JSON encodings)."""
    name = name.rstrip(";")
    parts = name.split("|")
    if len(parts) == 4 and parts[0] in ("inbound", "outbound"):
        return UpstreamCluster(*parts)
    match = _STAT_NAME.match(name)
    if match:
        return UpstreamCluster(*match.groups())
    return None


def resolve(record: AccessRecord, cluster: ClusterState, options: ResolveOptions) -> Resolution:
    """Edges for one record, with the record's event time; never raises."""
    cached = resolve_cached(record, cluster, options)
    if record.event_time is None:
        return cached
    return cached._replace(event_time=record.event_time)


def resolve_cached(record: AccessRecord, cluster: ClusterState, options: ResolveOptions) -> Resolution:
    """What :func:`resolve` returns, without the event time: the shared cached outcome.

    Records repeat (the same caller, the same host): the outcome is cached in the cluster state, keyed by
    every record field the outcome depends on, until the cluster changes. The ingest stage calls this and
    takes the event time from the record, saving a tuple per record.
    """
    pod = record.pod
    address = record.downstream_remote_address
    key = (
        "resolve",
        options,
        record.format is RecordFormat.GLOBAL_SIDECAR,
        record.upstream_cluster,
        address.rsplit(":", 1)[0] if address else None,
        (pod.namespace, tuple(pod.labels.items())) if pod else None,
        record.peer_principal,
        record.authority,
    )
    cached: Resolution | None = cluster.memo.get(key)
    if cached is None:
        cached = cluster.remember(key, _resolve(record, cluster, options))
    return cached


def _resolve(record: AccessRecord, cluster: ClusterState, options: ResolveOptions) -> Resolution:
    kind = _classify(record, cluster, options)
    if isinstance(kind, Resolution):
        return kind
    sources: list[Caller] = [*_sources(record, kind, cluster)]
    if options.workload_fences is not None:
        sources += _workload_sources(record, kind, cluster, options.workload_fences)
    if not sources:
        return Resolution(
            Outcome.IGNORED_NO_SOURCE, detail=f"no Service for {_peer_ip(record) or 'the caller'}"
        )
    host = normalize_authority(record.authority)
    if host is HostProblem.EMPTY:
        return Resolution(Outcome.IGNORED_EMPTY_AUTHORITY, sources=_keys(sources))
    if host is HostProblem.IP_LITERAL:
        return Resolution(
            Outcome.IGNORED_IP_AUTHORITY, detail=str(record.authority)[:80], sources=_keys(sources)
        )
    if isinstance(host, HostProblem):
        return Resolution(
            Outcome.REJECTED_INVALID_HOST, detail=repr(str(record.authority)[:80]), sources=_keys(sources)
        )
    return _edges(record, kind, host, sources, cluster, options)


def _classify(
    record: AccessRecord, cluster: ClusterState, options: ResolveOptions
) -> ObservationKind | Resolution:
    if record.format is RecordFormat.GLOBAL_SIDECAR:
        return ObservationKind.FALLBACK
    name = record.upstream_cluster or ""
    if name == "PassthroughCluster":
        return Resolution(Outcome.IGNORED_PASSTHROUGH)
    if name == "BlackHoleCluster":
        return Resolution(Outcome.IGNORED_BLACKHOLE)
    upstream = parse_cluster(name)
    if upstream is None:
        return Resolution(Outcome.IGNORED_UNKNOWN_CLUSTER, detail=name[:120])
    if upstream.direction == "inbound":
        if record.pod is None or _is_global_sidecar_pod(record, cluster, options):
            return ObservationKind.FALLBACK
        return Resolution(Outcome.IGNORED_INBOUND)
    if _is_global_sidecar_host(upstream.host, options):
        return ObservationKind.FALLBACK
    if not upstream.host or "|" in upstream.host:
        return Resolution(Outcome.IGNORED_UNKNOWN_CLUSTER, detail=name[:120])
    return ObservationKind.DIRECT


def _is_global_sidecar_host(host: str, options: ResolveOptions) -> bool:
    return host in options.global_sidecar_hosts


def _is_global_sidecar_pod(record: AccessRecord, cluster: ClusterState, options: ResolveOptions) -> bool:
    pod = record.pod
    if pod is None or pod.namespace not in options.global_sidecar_namespaces:
        return False
    service = cluster.services.get(ObjectKey(pod.namespace, options.global_sidecar_service))
    return service is not None and service.selects(pod.labels)


def _peer_ip(record: AccessRecord) -> str | None:
    address = record.downstream_remote_address
    return ip_of(address) if address else None


class Caller(Protocol):
    """Whom an edge is charged to: a Service (its same-named fence) or a workload fence."""

    @property
    def key(self) -> ObjectKey: ...

    @property
    def namespace(self) -> str: ...


class WorkloadCaller(NamedTuple):
    key: ObjectKey
    namespace: str


def _caller_side(record: AccessRecord, kind: ObservationKind) -> bool:
    return record.format is not RecordFormat.GLOBAL_SIDECAR and not (
        kind is ObservationKind.FALLBACK and (record.upstream_cluster or "").startswith("inbound")
    )


def _workload_sources(
    record: AccessRecord, kind: ObservationKind, cluster: ClusterState, workloads: WorkloadFences
) -> list[Caller]:
    """The caller pod's workload fence: from its own metadata on caller-side records, else by its IP."""
    if _caller_side(record, kind) and record.pod is not None:
        key = workloads.fence_of(record.pod.namespace, record.pod.labels)
        keys = [key] if key is not None else []
    else:
        ip = _peer_ip(record)
        keys = workloads.fences_for_ip(ip, cluster) if ip is not None and not is_loopback(ip) else []
    return [WorkloadCaller(key, key.namespace) for key in keys]


def _sources(record: AccessRecord, kind: ObservationKind, cluster: ClusterState) -> list[Service]:
    """Who is calling. A global-sidecar's own metadata is never the source."""
    if _caller_side(record, kind) and record.pod is not None:
        return cluster.services_selecting(record.pod.namespace, record.pod.labels)
    ip = _peer_ip(record)
    if ip is not None and not is_loopback(ip):
        return cluster.services_for_ip(ip)
    # Behind its own Istio sidecar, lazystream's global-sidecar sees only loopback peers; the caller's
    # mTLS identity (spiffe://<trust domain>/ns/<ns>/sa/<account>) still names it.
    identity = _SPIFFE.fullmatch(record.peer_principal or "")
    if identity:
        return cluster.services_for_service_account(*identity.groups())
    return []


def _keys(services: Iterable[Caller]) -> tuple[ObjectKey, ...]:
    return tuple(s.key for s in services)


def complete_host(host: str, namespace: str, cluster: ClusterState) -> str:
    """Completion of a short name, relative to the caller's namespace."""
    labels = host.split(".")
    domain = cluster.cluster_domain
    if len(labels) == 1:
        return service_fqdn(host, namespace, domain)
    if len(labels) == 2 and cluster.has_service(labels[1], labels[0]):
        return service_fqdn(labels[0], labels[1], domain)
    if len(labels) == 3 and labels[2] == "svc" and cluster.has_service(labels[1], labels[0]):
        return f"{host}.{domain}"
    return host


def admitted(host: str, cluster: ClusterState) -> bool:
    """A learned host enters a fence only if the cluster declares it."""
    return (
        cluster.service_by_fqdn(host) is not None
        or bool(cluster.service_entries_for(host))
        or bool(cluster.virtual_services_for(host))
    )


def _destination(host: str, namespace: str, cluster: ClusterState) -> tuple[str, bool]:
    """The completed host and whether it is admitted, cached in the cluster state until it changes."""
    key = ("destination", host, namespace)
    found: tuple[str, bool] | None = cluster.memo.get(key)
    if found is None:
        full = complete_host(host, namespace, cluster)
        found = cluster.remember(key, (full, admitted(full, cluster)))
    return found


def is_fenced(key: ObjectKey, cluster: ClusterState, options: ResolveOptions) -> bool:
    """The one definition of "this caller is fenced", which ``render`` and the worker share: its fence
    exists and is enabled, or it does not exist and autoFence would create it."""
    fence = cluster.fences.get(key)
    if fence is not None:
        return fence.enabled
    return options.autofence is not None and would_create(key, cluster, options.autofence)


def in_scope(namespace: str, options: ResolveOptions) -> bool:
    """Whether ``namespace`` is in the controller's namespace scope."""
    if namespace in options.black_namespaces:
        return False
    return not options.white_namespaces or namespace in options.white_namespaces


def may_hold(key: ObjectKey, cluster: ClusterState, options: ResolveOptions) -> bool:
    """Whether learned state under ``key`` can still matter: its fence exists, or the caller it was held
    for (a Service, or a workload fence autoFence wants) does. State for neither is dropped."""
    return key in cluster.fences or key in cluster.services or is_fenced(key, cluster, options)


def _edges(
    record: AccessRecord,
    kind: ObservationKind,
    host: str,
    sources: list[Caller],
    cluster: ClusterState,
    options: ResolveOptions,
) -> Resolution:
    edges: list[Edge] = []
    held: list[Edge] = []  # of callers without an enabled fence (Outcome.HELD_NO_FENCE)
    last: Resolution | None = None
    for source in sources:
        full, is_admitted = _destination(host, source.namespace, cluster)
        if _is_global_sidecar_host(full, options):
            last = Resolution(Outcome.REJECTED_GLOBAL_SIDECAR, host=full, sources=_keys(sources))
            continue
        if not is_admitted:
            last = Resolution(
                Outcome.REJECTED_NOT_ADMITTED,
                detail="no Service, ServiceEntry or VirtualService declares it",
                host=full,
                sources=_keys(sources),
            )
            continue
        hosts = [full]
        if options.enable_short_domain and host != full:
            hosts.append(host)
        charged = [Edge(source.key, h, kind, source.key) for h in hosts]
        if is_fenced(source.key, cluster, options):
            edges += charged
        elif in_scope(source.key.namespace, options):
            held += charged
        else:
            last = Resolution(
                Outcome.IGNORED_OUT_OF_SCOPE,
                detail=f"namespace {source.key.namespace} is outside the namespace scope",
                host=full,
                sources=_keys(sources),
            )
    if edges:
        return Resolution(
            Outcome.LEARNED, edges=tuple(edges + held), host=edges[0].host, sources=_keys(sources)
        )
    if held:
        return Resolution(
            Outcome.HELD_NO_FENCE,
            edges=tuple(held),
            detail=f"no enabled fence {held[0].fence}: kept for one created later",
            host=held[0].host,
            sources=_keys(sources),
        )
    return last or Resolution(Outcome.IGNORED_NO_SOURCE)
