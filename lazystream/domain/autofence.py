"""autoFence: which Services get a fence created for them.

A Service is fenced by its ``slime.io/serviceFenced`` label, else its Namespace's, else ``defaultFence``
(only the exact strings ``"true"``/``"false"`` decide). Services in Istio's and Slime's namespaces, the
global-sidecar's Service and Services without a selector are never fenced; the namespace scope
(``whiteNamespaceList``, ``blackNamespaceList``, ``managementSelectors``) and revision scope apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lazystream.domain.cluster import GLOBAL_SIDECAR_SERVICE, ClusterState, Namespace, ObjectKey, Service
from lazystream.domain.workloads import WorkloadFences

FENCED_LABEL = "slime.io/serviceFenced"
CREATED_BY_LABEL = "app.kubernetes.io/created-by"
CREATED_BY_VALUE = "fence-controller"
REVISION_LABEL = "istio.io/rev"


@dataclass(frozen=True, slots=True)
class SelectorRequirement:
    key: str
    operator: str
    """``In``, ``NotIn``, ``Exists`` or ``DoesNotExist``."""
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True, slots=True)
class LabelSelector:
    match_labels: Mapping[str, str]
    match_expressions: tuple[SelectorRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            e.matches(labels) for e in self.match_expressions
        )


@dataclass(frozen=True, slots=True)
class AutoFenceOptions:
    enabled: bool = False
    default_fence: bool = False
    excluded_namespaces: frozenset[str] = frozenset({"istio-system", "mesh-operator"})
    """Istio's and Slime's namespaces (and the global-sidecars'): never fenced."""
    white_namespaces: tuple[str, ...] = ()
    black_namespaces: tuple[str, ...] = ()
    management_selectors: tuple[LabelSelector, ...] = ()
    self_resource_rev: str = ""
    istio_revs: tuple[str, ...] = ()
    """``global.istioRev`` as a list; empty means every revision is in scope."""
    strict_rev: bool = False
    workload_fences: WorkloadFences | None = None
    """``fenceLabelKeyAlias``: a fence per value of a pod label (:mod:`lazystream.domain.workloads`)."""


def _decides(labels: Mapping[str, str]) -> bool | None:
    value = labels.get(FENCED_LABEL)
    return True if value == "true" else False if value == "false" else None


def is_service_fenced(service: Service, namespace: Namespace | None, default_fence: bool) -> bool:
    """Service label > Namespace label > ``defaultFence``."""
    for decision in (_decides(service.labels), _decides(namespace.labels) if namespace else None):
        if decision is not None:
            return decision
    return default_fence


def namespace_in_scope(namespace: Namespace, options: AutoFenceOptions) -> bool:
    if namespace.name in options.black_namespaces:
        return False
    if options.white_namespaces and namespace.name not in options.white_namespaces:
        return False
    if options.management_selectors:
        return any(s.matches(namespace.labels) for s in options.management_selectors)
    return True


def fence_in_revision_scope(fence: Mapping[str, Any], options: AutoFenceOptions) -> bool:
    """Whether a ServiceFence object is this controller's by its ``istio.io/rev`` label: an out-of-scope
    fence is neither computed nor written (its status and Sidecar belong to another revision's controller),
    in ``render`` and in the worker alike."""
    return revision_in_scope((fence.get("metadata") or {}).get("labels") or {}, options)


def revision_in_scope(labels: Mapping[str, str], options: AutoFenceOptions) -> bool:
    """``global.istioRev`` / ``strictRev``: an object without a revision is in scope
    unless ``strictRev``."""
    if not options.istio_revs:
        return True
    revision = labels.get(REVISION_LABEL, "")
    if not revision:
        return not options.strict_rev
    return revision in options.istio_revs


def fenceable(service: Service, cluster: ClusterState, options: AutoFenceOptions) -> bool:
    """Whether autoFence wants a fence for ``service`` (the Namespace object must be known)."""
    if service.namespace in options.excluded_namespaces or not service.selector:
        return False
    if service.name == GLOBAL_SIDECAR_SERVICE:
        return False
    namespace = cluster.namespaces.get(service.namespace)
    if namespace is None or not namespace_in_scope(namespace, options):
        return False
    return is_service_fenced(service, namespace, options.default_fence)


def _created_labels(options: AutoFenceOptions) -> dict[str, str]:
    labels = {CREATED_BY_LABEL: CREATED_BY_VALUE}
    if options.self_resource_rev:
        labels[REVISION_LABEL] = options.self_resource_rev
    return labels


def auto_fence_object(service: Service, options: AutoFenceOptions) -> dict[str, Any]:
    labels = _created_labels(options)
    return {
        "apiVersion": "microservice.slime.io/v1alpha1",
        "kind": "ServiceFence",
        "metadata": {"name": service.name, "namespace": service.namespace, "labels": labels},
        "spec": {"enable": True, "workloadSelector": {"fromService": True}},
    }


def desired_auto_fences(cluster: ClusterState, options: AutoFenceOptions) -> dict[ObjectKey, dict[str, Any]]:
    """The fences autoFence wants, by key (empty when autoFence is off)."""
    if not options.enabled:
        return {}
    desired = {
        s.key: auto_fence_object(s, options)
        for s in cluster.iter_services()
        if fenceable(s, cluster, options)
    }
    workloads = options.workload_fences
    if workloads is not None:
        pods = [p for p in cluster.pods.values() if _workload_namespace(p.namespace, cluster, options)]
        for key, value in workloads.wanted(pods).items():
            desired.setdefault(key, workloads.fence_object(key, value, _created_labels(options)))
    return desired


def would_create(key: ObjectKey, cluster: ClusterState, options: AutoFenceOptions) -> bool:
    """Whether autoFence wants the fence ``key`` under the current labels and config, whether or not it
    exists yet: the same decision as :func:`desired_auto_fences`, for one key (the resolver asks it for
    every caller, so it must not walk the cluster).

    Why it matters: the leader creates the fences autoFence wants some time after a Service appears (after
    it is elected, recovered and has listed the cluster), and records of such a Service may come first. The
    resolver counts them as learned for a fence that is due, not as calls of an unfenced Service."""
    if not options.enabled:
        return False
    service = cluster.services.get(key)
    if service is not None and fenceable(service, cluster, options):
        return True
    workloads = options.workload_fences
    if workloads is None or not _workload_namespace(key.namespace, cluster, options):
        return False
    return any(
        p.ips and workloads.fence_of(p.namespace, p.labels) == key
        for p in cluster.pods.values()
        if p.namespace == key.namespace
    )


def _workload_namespace(name: str, cluster: ClusterState, options: AutoFenceOptions) -> bool:
    namespace = cluster.namespaces.get(name)
    return (
        name not in options.excluded_namespaces
        and namespace is not None
        and namespace_in_scope(namespace, options)
    )


def is_auto_created(fence: Mapping[str, Any]) -> bool:
    labels = (fence.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(CREATED_BY_LABEL) == CREATED_BY_VALUE)


@dataclass(frozen=True, slots=True)
class AutoFencePlan:
    create: tuple[dict[str, Any], ...]
    delete: tuple[ObjectKey, ...]


def plan(
    cluster: ClusterState, existing: Iterable[Mapping[str, Any]], options: AutoFenceOptions
) -> AutoFencePlan:
    """What the leader does: create missing fences, delete auto-created ones no longer wanted. Manual
    fences (without the created-by label) are never touched."""
    desired = desired_auto_fences(cluster, options)
    by_key = {
        ObjectKey(f["metadata"].get("namespace", "default"), f["metadata"]["name"]): f for f in existing
    }
    create = tuple(obj for key, obj in sorted(desired.items()) if key not in by_key)
    delete = tuple(
        key
        for key, fence in sorted(by_key.items())
        if is_auto_created(fence)
        and key not in desired
        and revision_in_scope(fence["metadata"].get("labels") or {}, options)
    )
    return AutoFencePlan(create, delete)
