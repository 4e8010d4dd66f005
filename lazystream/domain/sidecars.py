"""Rendering a fence's Istio ``Sidecar`` exactly as Slime does (reference §2, decisions §6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lazystream.domain.cluster import ClusterState
from lazystream.domain.fences import Domain, DomainStatus, FenceObject, FenceOptions, global_sidecar_fqdn

SIDECAR_API_VERSION = "networking.istio.io/v1alpha3"
FENCE_API_VERSION = "microservice.slime.io/v1alpha1"
REVISION_LABEL = "istio.io/rev"


def egress_hosts(fence: FenceObject, domains: Mapping[str, Domain], options: FenceOptions) -> list[str]:
    """The one egress listener's hosts: Istio's and Slime's namespaces, ``stableHost``, every ACTIVE or
    EXPIREWAIT domain, and the global-sidecar where ``<slime ns>/*`` does not cover it; de-duplicated and
    sorted byte-wise (so every ``*/...`` entry comes before the ``ns/*`` entries)."""
    hosts = {f"{options.istio_namespace}/*", f"{options.slime_namespace}/*"}
    hosts.update(h if h.endswith("/*") else f"*/{h}" for h in options.stable_hosts)
    for key, domain in domains.items():
        if domain.status is DomainStatus.EXPIRE:
            continue
        if key.endswith("/*"):
            hosts.add(key)
        hosts.update(f"*/{h}" for h in domain.hosts)
    if options.global_sidecar_mode == "namespace":
        hosts.add(f"*/{global_sidecar_fqdn(fence.namespace, options)}")
    elif options.cluster_gs_namespace and options.cluster_gs_namespace != options.slime_namespace:
        hosts.add(f"*/{global_sidecar_fqdn(options.cluster_gs_namespace, options)}")
    return sorted(hosts, key=lambda h: h.encode())


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
    fence: FenceObject, domains: Mapping[str, Domain], cluster: ClusterState, options: FenceOptions
) -> dict[str, Any] | None:
    """The Sidecar of an enabled fence, or None when the fence is disabled or selects no workload."""
    if not fence.spec.enable:
        return None
    labels = workload_labels(fence, cluster, options)
    if labels is None:
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
            "egress": [{"hosts": egress_hosts(fence, domains, options)}],
            "workloadSelector": {"labels": labels},
        },
    }
