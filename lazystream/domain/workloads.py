"""Workload fences (``general.fenceLabelKeyAlias``): a fence per value of a pod label.

With ``fenceLabelKeyAlias: <labelKey>[:<alias>]`` and autoFence on, every value of the pod label
``labelKey`` that a running pod (one with an IP) carries gets a fence ``<alias>-<value>.workload.identity``
in the pod's namespace, selecting those pods (``spec.workloadSelector.labels``); it goes when the last such
pod has no IP any more. Calls from those pods are charged to the workload fence as well as to the fences of
the Services that select them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lazystream.domain.cluster import ClusterState, ObjectKey, Pod

SUFFIX = ".workload.identity"
DEFAULT_ALIAS = "app"
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True, slots=True)
class WorkloadFences:
    """The parsed ``fenceLabelKeyAlias``."""

    label_key: str
    alias: str = DEFAULT_ALIAS

    @classmethod
    def parse(cls, spec: str) -> WorkloadFences | None:
        """``"<labelKey>[:<alias>]"``; None when empty (workload fences off)."""
        if not spec:
            return None
        key, _, alias = spec.partition(":")
        return cls(key, alias or DEFAULT_ALIAS)

    def fence_name(self, value: str) -> str | None:
        """The fence of one label value; None when the value cannot make a Kubernetes object name."""
        name = f"{self.alias}-{value}{SUFFIX}"
        return name if len(name) <= 253 and _NAME.fullmatch(name) else None

    def fence_of(self, namespace: str, labels: dict[str, str] | Any) -> ObjectKey | None:
        """The workload fence charged for a caller with these pod labels, if any."""
        value = labels.get(self.label_key)
        if not isinstance(value, str) or not value:
            return None
        name = self.fence_name(value)
        return ObjectKey(namespace, name) if name else None

    def fences_for_ip(self, ip: str, cluster: ClusterState) -> list[ObjectKey]:
        """The workload fences of the running pods with this IP."""
        found = {self.fence_of(pod.namespace, pod.labels) for pod in cluster.pods_for_ip(ip)}
        return sorted(key for key in found if key is not None)

    def wanted(self, pods: Iterable[Pod]) -> dict[ObjectKey, str]:
        """Fence → label value, for every value a pod with an IP carries."""
        out: dict[ObjectKey, str] = {}
        for pod in pods:
            if not pod.ips:
                continue
            key = self.fence_of(pod.namespace, pod.labels)
            if key is not None:
                out[key] = pod.labels[self.label_key]
        return out

    def fence_object(self, key: ObjectKey, value: str, labels: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "microservice.slime.io/v1alpha1",
            "kind": "ServiceFence",
            "metadata": {"name": key.name, "namespace": key.namespace, "labels": labels},
            "spec": {"enable": True, "workloadSelector": {"labels": {self.label_key: value}}},
        }
