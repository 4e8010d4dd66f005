"""Rendering a fence's Istio ``Sidecar`` as Slime does, and only with hosts Istio's validation accepts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lazystream.domain.cluster import ClusterState
from lazystream.domain.fences import (
    Domain,
    DomainStatus,
    FenceObject,
    FenceOptions,
    Origin,
    global_sidecar_fqdn,
)
from lazystream.domain.istio_rules import egress_host_problem, workload_selector_problem

SIDECAR_API_VERSION = "networking.istio.io/v1alpha3"
FENCE_API_VERSION = "microservice.slime.io/v1alpha1"
REVISION_LABEL = "istio.io/rev"


@dataclass(frozen=True, slots=True)
class EgressHosts:
    """A Sidecar's egress hosts, and the hosts left out of it because Istio would refuse them."""

    hosts: list[str]
    left_out: dict[str, str] = field(default_factory=dict)
    """Host -> why it is not in the Sidecar."""


def sidecar_hosts(fence: FenceObject, domains: Mapping[str, Domain], options: FenceOptions) -> EgressHosts:
    """The one egress listener's hosts: Istio's and Slime's namespaces, ``stableHost``, every ACTIVE or
    EXPIREWAIT domain, and the global-sidecar where ``<slime ns>/*`` does not cover it; de-duplicated and
    sorted byte-wise (so every ``*/...`` entry comes before the ``ns/*`` entries).

    Istio refuses a whole Sidecar for one short name, so a short name is qualified as Istio reads one in a
    namespaced object (a Service of the fence's namespace), except a short name learned from an access log
    (``enableShortDomain``): its fully qualified name is learned with it, and qualifying it in the caller's
    namespace could name another Service. What still fails Istio's rules is left out, with the reason."""
    hosts = {f"{options.istio_namespace}/*", f"{options.slime_namespace}/*"}
    left_out: dict[str, str] = {}

    def add(entry: str) -> None:
        problem = egress_host_problem(entry)
        if problem is None:
            hosts.add(entry)
        else:
            left_out[entry.removeprefix("*/")] = problem

    def add_name(name: str, *, learned_short: bool = False) -> None:
        if "." not in name and name != "*":
            if learned_short:
                left_out[name] = "a short name (Istio accepts only fully qualified names); its FQDN is listed"
                return
            name = f"{name}.{fence.namespace}.svc.{options.cluster_domain}"
        add(f"*/{name}")

    for host in options.stable_hosts:
        add(host) if host.endswith("/*") else add_name(host)
    for key, domain in domains.items():
        if domain.status is DomainStatus.EXPIRE:
            continue
        if key.endswith("/*"):
            add(key)
        learned = domain.origin is Origin.LEARNED and domain.alias_of is None
        for host in domain.hosts:
            add_name(host, learned_short=learned)
    if options.global_sidecar_mode == "namespace":
        hosts.add(f"*/{global_sidecar_fqdn(fence.namespace, options)}")
    elif options.cluster_gs_namespace and options.cluster_gs_namespace != options.slime_namespace:
        hosts.add(f"*/{global_sidecar_fqdn(options.cluster_gs_namespace, options)}")
    for name in list(left_out):
        if f"*/{name}" in hosts:  # also reached another way, and listed
            del left_out[name]
    return EgressHosts(sorted(hosts, key=lambda h: h.encode()), left_out)


def egress_hosts(fence: FenceObject, domains: Mapping[str, Domain], options: FenceOptions) -> list[str]:
    """The hosts of :func:`sidecar_hosts`, as the Sidecar lists them."""
    return sidecar_hosts(fence, domains, options).hosts


def sidecar_withheld(fence: FenceObject, cluster: ClusterState, options: FenceOptions) -> str | None:
    """Why the fence has no Sidecar, or None when it has one: disabled, no workload to select, or a
    workload selector Istio would refuse (lazystream never writes what istiod's webhook refuses, and a
    Sidecar without a selector would fence the whole namespace)."""
    selector = _sidecar_selector(fence, cluster, options)
    return selector if isinstance(selector, str) else None


def _sidecar_selector(
    fence: FenceObject, cluster: ClusterState, options: FenceOptions
) -> dict[str, str] | str:
    """The labels the fence's Sidecar selects its workload by, or why it has no Sidecar."""
    if not fence.spec.enable:
        return "the fence is disabled"
    labels = workload_labels(fence, cluster, options)
    if labels is None:
        return f"spec.workloadSelector.fromService: Service {fence.key} is missing or selects nothing"
    problem = workload_selector_problem(labels)
    return f"spec.workloadSelector: {problem}" if problem else labels


def workload_labels(
    fence: FenceObject, cluster: ClusterState, options: FenceOptions
) -> dict[str, str] | None:
    """``spec.workloadSelector.labels``: the fence's own labels, else the selector of the Service with the
    fence's name (``fromService``; None — no Sidecar — when that Service is missing or selects nothing),
    else Slime's legacy ``{<global.service>: <fence name>}``."""
    if fence.spec.workload_labels:
        return dict(fence.spec.workload_labels)
    if fence.spec.from_service:
        service = cluster.services.get(fence.key)
        return dict(service.selector) if service and service.selector else None
    return {options.service_label: fence.name}


def render_sidecar(
    fence: FenceObject,
    domains: Mapping[str, Domain],
    cluster: ClusterState,
    options: FenceOptions,
    egress: EgressHosts | None = None,
) -> dict[str, Any] | None:
    """The Sidecar of an enabled fence, or None when it has none (:func:`sidecar_withheld` says why).
    ``egress``: its hosts when the caller has computed them (:func:`sidecar_hosts`)."""
    labels = _sidecar_selector(fence, cluster, options)
    if isinstance(labels, str):
        return None
    metadata: dict[str, Any] = {"name": fence.name, "namespace": fence.namespace}
    if REVISION_LABEL in fence.labels:
        metadata["labels"] = {REVISION_LABEL: fence.labels[REVISION_LABEL]}
    if fence.uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": FENCE_API_VERSION,
                "kind": "ServiceFence",
                "name": fence.name,
                "uid": fence.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": SIDECAR_API_VERSION,
        "kind": "Sidecar",
        "metadata": metadata,
        "spec": {
            "egress": [{"hosts": (egress or sidecar_hosts(fence, domains, options)).hosts}],
            "workloadSelector": {"labels": labels},
        },
    }
