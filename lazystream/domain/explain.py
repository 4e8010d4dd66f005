""" "Explain fence": every host a fence's Sidecar gets, and why it is there (issue 6).

The answer is computed with the same functions the worker's fence computation runs
(:func:`~lazystream.domain.fences.compute_domains`, ``expire_transitions``, ``aliases``,
``virtual_service_hosts``, ``label_selector_matches``), so it cannot disagree with what the sink writes:
the domains come from there, and each host's reasons are found by asking, for each source a host can come
from, whether it produced the host. A host may have several reasons (written in ``spec.host`` *and*
learned); all are listed. Learned hosts carry their first and last observation time and count from the
learned-state table; recently rejected hosts (not admitted, invalid, the global-sidecar's own) come from
the worker's counters and are listed with their reason.

Pure: no clock (``now`` is given), no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from lazystream.domain.autofence import CREATED_BY_LABEL, CREATED_BY_VALUE
from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.domain.fences import (
    Domain,
    DomainStatus,
    FenceObject,
    FenceOptions,
    Strategy,
    aliases,
    compute_domains,
    expire_transitions,
    global_sidecar_fqdn,
    label_selector_matches,
)
from lazystream.domain.learned import LearnedHost
from lazystream.domain.sidecars import sidecar_hosts, sidecar_withheld


class Reason(StrEnum):
    """Why a host is in a fence's Sidecar."""

    STATIC = "static"
    """Written in ``spec.host``."""
    NAMESPACE = "namespace"
    """``spec.host`` ``<ns>/*``: the whole namespace."""
    NAMESPACE_SELECTOR = "namespaceSelector"
    """A namespace listed in ``spec.namespaceSelector``."""
    LABEL_SELECTOR = "labelSelector"
    """A Service matched by ``spec.labelSelector``."""
    LEARNED = "learned"
    """Observed in access logs or Prometheus (and admitted)."""
    ALIAS = "alias"
    """Derived from another host of the fence by ``general.domainAliases``."""
    VIRTUAL_SERVICE = "virtualService"
    """An HTTP route destination of a VirtualService for another host of the fence."""
    STABLE_HOST = "stableHost"
    """``general.stableHost``: in every Sidecar."""
    MESH = "mesh"
    """Istio's or lazystream's namespace, or the global-sidecar: in every Sidecar."""
    EXPIRING = "expiring"
    """In the fence's current status but no longer generated: EXPIREWAIT for one refresh period."""


@dataclass(frozen=True, slots=True)
class Why:
    reason: Reason
    detail: str
    """A sentence fragment that reads on its own (``alias of details.default.svc.cluster.local``)."""


@dataclass(frozen=True, slots=True)
class HostExplanation:
    host: str
    """As in the Sidecar's egress hosts, without the ``*/`` prefix (``ns/*`` entries as they are)."""
    status: DomainStatus
    """The status of the fence domain it belongs to (the best one when it is in several)."""
    in_sidecar: bool
    """Whether the Sidecar lists it: not EXPIRE, and the fence enabled."""
    why: tuple[Why, ...]
    learned: LearnedHost | None = None
    """First and last observation and count, for hosts in the learned-state table."""


@dataclass(frozen=True, slots=True)
class Rejection:
    host: str
    reason: str
    """The resolver's outcome, e.g. ``rejected_not_admitted``."""


@dataclass(frozen=True, slots=True)
class FenceExplanation:
    fence: ObjectKey
    enabled: bool
    auto_created: bool
    """Created by autoFence (the created-by label), rather than by hand."""
    learned_source: str
    """Where learned hosts came from: ``table`` (this worker holds the fence's learned state, with times
    and counts) or ``status`` (the fence's ``status.metricStatus``: hosts only)."""
    hosts: tuple[HostExplanation, ...]
    rejected: tuple[Rejection, ...]
    left_out: tuple[Rejection, ...] = ()
    """Hosts of the fence that its Sidecar leaves out, because Istio's validation would refuse them."""
    no_sidecar: str | None = None
    """Why the fence has no Sidecar (disabled, nothing to select, a selector Istio would refuse)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form served by the admin API (camelCase keys, times in ISO 8601 UTC)."""
        return {
            "fence": str(self.fence),
            "enabled": self.enabled,
            "autoCreated": self.auto_created,
            "learnedSource": self.learned_source,
            "hosts": [_host_dict(h) for h in self.hosts],
            "rejected": [{"host": r.host, "reason": r.reason} for r in self.rejected],
            "leftOut": [{"host": r.host, "reason": r.reason} for r in self.left_out],
            "noSidecar": self.no_sidecar,
        }


def _host_dict(host: HostExplanation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "host": host.host,
        "status": host.status.value,
        "inSidecar": host.in_sidecar,
        "why": [{"reason": w.reason.value, "detail": w.detail} for w in host.why],
    }
    if host.learned is not None:
        out["firstSeen"] = iso_time(host.learned.first)
        out["lastSeen"] = iso_time(host.learned.last)
        out["count"] = host.learned.count
    return out


def iso_time(seconds: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rejections_for(key: ObjectKey, recent: Mapping[tuple[str, str], str]) -> list[Rejection]:
    """The fence's entries of the worker's recent rejections (``(fence, host) -> reason``), newest first."""
    name = str(key)
    entries = list(recent.items())
    return [Rejection(host, reason) for (fence, host), reason in reversed(entries) if fence == name]


def _strategy_detail(strategy: Strategy) -> str:
    if strategy.stable:
        return "spec.host (stable)"
    if strategy.deadline is not None:
        return f"spec.host (deadline {iso_time(strategy.deadline)})"
    if strategy.auto_duration is not None:
        return f"spec.host (auto, {strategy.auto_duration:g} s)"
    return "spec.host"


class _Collector:
    """Host → status and reasons, in the order reasons are found; duplicates dropped."""

    def __init__(self) -> None:
        self.status: dict[str, DomainStatus] = {}
        self.why: dict[str, list[Why]] = {}

    def add(self, host: str, status: DomainStatus, why: Why) -> None:
        old = self.status.get(host)
        if old is None or _RANK[status] < _RANK[old]:
            self.status[host] = status
        reasons = self.why.setdefault(host, [])
        if why not in reasons:
            reasons.append(why)


_RANK = {DomainStatus.ACTIVE: 0, DomainStatus.EXPIREWAIT: 1, DomainStatus.EXPIRE: 2}


def explain_fence(
    fence: FenceObject,
    learned: Mapping[str, LearnedHost] | None,
    cluster: ClusterState,
    options: FenceOptions,
    now: float,
    rejections: Iterable[Rejection] = (),
) -> FenceExplanation:
    """Explain ``fence``: its hosts as the worker would write them at ``now``, each with its reasons.

    ``learned`` is the fence's learned state from the table, or None when this worker does not hold it (the
    hosts of ``status.metricStatus`` are then used, without times). A disabled fence is explained from the
    hosts its status keeps, as the worker computes it.
    """
    learned_hosts = set(learned) if learned is not None and fence.spec.enable else set(fence.learned)
    generated = compute_domains(fence, learned_hosts, cluster, options, now)
    domains, _ = expire_transitions(generated, fence.domains, {}, now, options.refresh_period)

    found = _Collector()
    static = {h: s for h, s in fence.spec.hosts.items() if not h.endswith("/*")}
    selected = {cluster.fqdn(key): key for key in label_selector_matches(fence.spec.label_selector, cluster)}
    bases = {**dict.fromkeys(learned_hosts), **dict.fromkeys(selected), **dict.fromkeys(static)}
    alias_of = {alias: base for base in sorted(bases) for alias in aliases(base, options.domain_aliases)[1:]}
    for key in sorted(domains):
        domain = domains[key]
        if key not in generated:
            found.add(key, domain.status, Why(Reason.EXPIRING, _expiring_detail(domain.status)))
            for host in domain.hosts:
                if host != key:
                    found.add(host, domain.status, Why(Reason.EXPIRING, f"was routed to from {key}"))
            continue
        if key.endswith("/*"):
            _explain_namespace(key, domain, fence, cluster, options, found)
            continue
        _explain_host(key, domain, static, selected, learned_hosts, alias_of, found)
        _explain_routes(key, domain, cluster, found)
    _explain_fixed(fence, options, found)

    enabled = fence.spec.enable
    left_out = sidecar_hosts(fence, domains, options).left_out if enabled else {}
    hosts = tuple(
        HostExplanation(
            host=host,
            status=found.status[host],
            in_sidecar=enabled and found.status[host] is not DomainStatus.EXPIRE and host not in left_out,
            why=tuple(found.why[host]),
            learned=learned.get(host) if learned is not None else None,
        )
        for host in sorted(found.why, key=lambda h: (h.endswith("/*"), h))
    )
    return FenceExplanation(
        fence=fence.key,
        enabled=enabled,
        auto_created=fence.labels.get(CREATED_BY_LABEL) == CREATED_BY_VALUE,
        learned_source="table" if learned is not None else "status",
        hosts=hosts,
        rejected=tuple(rejections),
        left_out=tuple(Rejection(host, reason) for host, reason in sorted(left_out.items())),
        no_sidecar=sidecar_withheld(fence, cluster, options),
    )


def _expiring_detail(status: DomainStatus) -> str:
    if status is DomainStatus.EXPIREWAIT:
        return "no longer generated: leaves the Sidecar after one refresh period"
    return "no longer generated"


def _explain_host(
    key: str,
    domain: Domain,
    static: Mapping[str, Strategy],
    selected: Mapping[str, ObjectKey],
    learned_hosts: set[str],
    alias_of: Mapping[str, str],
    found: _Collector,
) -> None:
    status = domain.status
    if key in static:
        found.add(key, status, Why(Reason.STATIC, _strategy_detail(static[key])))
    if key in selected:
        found.add(
            key, status, Why(Reason.LABEL_SELECTOR, f"Service {selected[key]} matches spec.labelSelector")
        )
    if key in learned_hosts:
        found.add(key, status, Why(Reason.LEARNED, "observed in access logs or metrics"))
    if key in alias_of:
        found.add(key, status, Why(Reason.ALIAS, f"alias of {alias_of[key]} (general.domainAliases)"))
    if key not in found.why:  # cannot happen with the same inputs; never hide a host
        found.add(key, status, Why(Reason(domain.origin.value), domain.origin.value))


def _explain_routes(key: str, domain: Domain, cluster: ClusterState, found: _Collector) -> None:
    """The VirtualService destinations of a domain: which VirtualService routes ``key`` to each."""
    routes = cluster.virtual_services_for(key)
    for host in domain.hosts:
        if host == key:
            continue
        names = sorted(str(vs.key) for vs in routes if host in vs.destinations)
        detail = f"route destination of VirtualService {', '.join(names) or '?'} for {key}"
        found.add(host, domain.status, Why(Reason.VIRTUAL_SERVICE, detail))


def _explain_namespace(
    key: str,
    domain: Domain,
    fence: FenceObject,
    cluster: ClusterState,
    options: FenceOptions,
    found: _Collector,
) -> None:
    """``<ns>/*``: from ``spec.host`` and/or ``spec.namespaceSelector``; its extra hosts are VirtualService
    destinations, outside the namespace, of the namespace's Services."""
    namespace = key[:-2]
    if key in fence.spec.hosts:
        found.add(key, domain.status, Why(Reason.NAMESPACE, "spec.host (the whole namespace)"))
    if namespace in fence.spec.namespace_selector:
        found.add(key, domain.status, Why(Reason.NAMESPACE_SELECTOR, "spec.namespaceSelector"))
    wanted = set(domain.hosts)
    for service in cluster.iter_services():
        if service.namespace != namespace:
            continue
        for alias in aliases(cluster.fqdn(service.key), options.domain_aliases):
            for vs in cluster.virtual_services_for(alias):
                for host in sorted(wanted & set(vs.destinations)):
                    detail = f"route destination of VirtualService {vs.key} for {alias} (in {key})"
                    found.add(host, domain.status, Why(Reason.VIRTUAL_SERVICE, detail))


def _explain_fixed(fence: FenceObject, options: FenceOptions, found: _Collector) -> None:
    """What every Sidecar lists (mirrors :func:`lazystream.domain.sidecars.egress_hosts`)."""
    active = DomainStatus.ACTIVE
    for host in options.stable_hosts:
        found.add(host, active, Why(Reason.STABLE_HOST, "general.stableHost (every Sidecar)"))
    found.add(f"{options.istio_namespace}/*", active, Why(Reason.MESH, "Istio's namespace (every Sidecar)"))
    found.add(
        f"{options.slime_namespace}/*", active, Why(Reason.MESH, "lazystream's namespace (every Sidecar)")
    )
    if options.global_sidecar_mode == "namespace":
        gs = global_sidecar_fqdn(fence.namespace, options)
    elif options.cluster_gs_namespace and options.cluster_gs_namespace != options.slime_namespace:
        gs = global_sidecar_fqdn(options.cluster_gs_namespace, options)
    else:
        return
    found.add(gs, active, Why(Reason.MESH, "the global-sidecar (every Sidecar)"))
