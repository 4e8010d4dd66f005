"""Which fences a change in the cluster affects: the rules, and the indexes that make them cheap.

A fence's output (its status and Sidecar) depends on more than its own object: the Services its selector
matches, the namespaces it lists whole, the hosts its domains hold (through VirtualServices and
ServiceEntries). When one of those changes, exactly the fences whose output may change are recomputed:

- Service added or deleted: (a) the fence with the Service's key (``workloadSelector.fromService``),
  (b) fences whose ``spec.labelSelector`` matches its labels, (c) fences with ``spec.host`` ``<ns>/*`` or
  ``spec.namespaceSelector`` listing its namespace, (d) fences whose last computed hosts include its FQDN.
  Service changed: (a) when its selector or ports changed, (b) for fences matched by exactly one of the old
  and new labels (a fence matched by both keeps its output). Nothing for a change of other fields.
- VirtualService or ServiceEntry added, changed (hosts or destinations) or deleted: fences whose last
  computed hosts match an old or new ``spec.hosts`` entry (exact or Istio wildcard); for a VirtualService
  also the ``<ns>/*`` fences of its namespace and of the namespaces of the Services its hosts name.
- Endpoints, EndpointSlices, Pods, Namespaces: no fence (they change resolution only).

:class:`FenceIndex` holds what those rules need per fence (its spec's namespaces and selector, its last
computed hosts), so that a cluster of thousands of Services and fences is not scanned per change. It is
plain data: the watch cache calls it under its own lock.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Container, Iterable, Mapping
from typing import Any

from lazystream.domain.cluster import ClusterState, ObjectKey, Service, ServiceEntry, VirtualService
from lazystream.domain.fences import FenceSpec, label_selector_matches
from lazystream.domain.hosts import wildcard_matches


def listed_namespaces(spec: FenceSpec) -> set[str]:
    """The namespaces a fence spec lists whole: ``<ns>/*`` hosts and ``namespaceSelector`` entries."""
    return {h[:-2] for h in spec.hosts if h.endswith("/*")} | set(spec.namespace_selector)


class FenceIndex:
    """Fences by what they depend on; answers "which fences does this change affect"."""

    def __init__(self, cluster_domain: str = "cluster.local") -> None:
        self.cluster_domain = cluster_domain
        self._specs: dict[ObjectKey, FenceSpec] = {}
        self._namespace_fences: dict[str, set[ObjectKey]] = defaultdict(set)
        """Fences by each namespace their spec lists (``<ns>/*`` host or namespaceSelector): a Service
        added to such a namespace affects them. An index, because a scan per Service made the first list
        of a large cluster quadratic."""
        self._selector_fences: dict[ObjectKey, Any] = {}
        """The ``spec.labelSelector`` of every fence that has one (the only fences a Service's labels can
        affect)."""
        self._fence_hosts: dict[ObjectKey, tuple[str, ...]] = {}
        self._host_fences: dict[str, dict[ObjectKey, None]] = defaultdict(dict)
        """Fences by each host of :attr:`_fence_hosts`. Dicts as sets: a set of 5k keys takes 520 KB (sets
        grow fourfold), a dict 150 KB."""
        self._wildcard_hosts: set[str] = set()
        """The keys of ``_host_fences`` that are Istio wildcards (a few, among up to a million hosts)."""

    # -- keeping it in step -----------------------------------------------------------------------------

    def set_spec(self, key: ObjectKey, spec: FenceSpec | None) -> None:
        """Record (or, with None, forget) a fence's spec."""
        old = self._specs.pop(key, None)
        if old is not None:
            for namespace in listed_namespaces(old):
                keys = self._namespace_fences.get(namespace)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._namespace_fences[namespace]
        self._selector_fences.pop(key, None)
        if spec is None:
            return
        self._specs[key] = spec
        for namespace in listed_namespaces(spec):
            self._namespace_fences[namespace].add(key)
        if spec.label_selector:
            self._selector_fences[key] = spec.label_selector

    def set_hosts(self, key: ObjectKey, hosts: Iterable[str]) -> None:
        """Record every host of a fence's last computed ``status.domains``, so that a VirtualService or
        ServiceEntry for one of them (or the Service of that FQDN) affects exactly that fence."""
        # a tuple of interned strings: every fence lists the same few hundred hosts
        new = tuple(sys.intern(h) for h in dict.fromkeys(hosts))
        old = self._fence_hosts.get(key, ())
        if old == new:
            return
        self._fence_hosts[key] = new
        kept = set(new)
        for host in old:
            if host not in kept:
                self._unindex_host(host, key)
        had = set(old)
        for host in new:
            if host not in had:
                self._host_fences[host][key] = None
                if host.startswith("*"):
                    self._wildcard_hosts.add(host)

    def forget_hosts(self, key: ObjectKey) -> None:
        """Drop a fence's hosts (the fence is gone or no longer computed)."""
        for host in self._fence_hosts.pop(key, ()):
            self._unindex_host(host, key)

    def _unindex_host(self, host: str, key: ObjectKey) -> None:
        fences = self._host_fences.get(host)
        if fences is not None:
            fences.pop(key, None)
            if not fences:
                del self._host_fences[host]
                self._wildcard_hosts.discard(host)

    # -- the rules --------------------------------------------------------------------------------------

    def service_changed(
        self, old: Service | None, new: Service | None, state: ClusterState, fences: Container[ObjectKey]
    ) -> set[ObjectKey]:
        """The fences a Service's addition, change or deletion affects (``fences``: those that exist)."""
        service = new or old
        if service is None:
            return set()
        found: set[ObjectKey] = set()
        if old is None or new is None:
            if service.key in fences:
                found.add(service.key)
            found |= self._fences_selecting(service, [service.labels])
            found |= self._fences_with_namespaces({service.namespace})
            found |= self._fences_with_hosts({state.fqdn(service.key)}, wildcards=False)
            return self._existing(found, fences)
        if (old.selector != new.selector or old.ports != new.ports) and service.key in fences:
            found.add(service.key)
        if old.labels != new.labels:
            before = self._fences_selecting(service, [old.labels])
            after = self._fences_selecting(service, [new.labels])
            found |= before ^ after
        return self._existing(found, fences)

    def virtual_service_changed(
        self,
        namespace: str,
        old: VirtualService | None,
        new: VirtualService | None,
        state: ClusterState,
        fences: Container[ObjectKey],
    ) -> set[ObjectKey]:
        """The fences a VirtualService's addition, change or deletion in ``namespace`` affects."""
        if old == new:
            return set()
        hosts = {h for vs in (old, new) if vs is not None for h in vs.hosts}
        found = self._fences_with_hosts(hosts)
        found |= self._fences_with_namespaces({namespace} | self._service_namespaces(hosts, state))
        return self._existing(found, fences)

    def service_entry_changed(
        self, old: ServiceEntry | None, new: ServiceEntry | None, fences: Container[ObjectKey]
    ) -> set[ObjectKey]:
        """The fences a ServiceEntry's addition, change or deletion affects."""
        if old == new:
            return set()
        hosts = {h for se in (old, new) if se is not None for h in se.hosts}
        return self._existing(self._fences_with_hosts(hosts), fences)

    # -- lookups ----------------------------------------------------------------------------------------

    @staticmethod
    def _existing(found: set[ObjectKey], fences: Container[ObjectKey]) -> set[ObjectKey]:
        return {key for key in found if key in fences}

    def _fences_selecting(self, service: Service, label_sets: list[Mapping[str, str]]) -> set[ObjectKey]:
        """Fences whose ``spec.labelSelector`` matches the Service with any of ``label_sets``, by the
        domain's own matching (on a one-Service state, so the semantics cannot drift)."""
        selecting = list(self._selector_fences.items())
        if not selecting:
            return set()
        found: set[ObjectKey] = set()
        for labels in label_sets:
            alone = ClusterState(self.cluster_domain)
            alone.put_service(Service(service.namespace, service.name, labels=dict(labels)))
            found |= {key for key, selectors in selecting if label_selector_matches(selectors, alone)}
        return found

    def _fences_with_namespaces(self, namespaces: set[str]) -> set[ObjectKey]:
        """Fences with a static ``<ns>/*`` host or ``spec.namespaceSelector`` entry for one of them."""
        found: set[ObjectKey] = set()
        for namespace in namespaces:
            found |= self._namespace_fences.get(namespace, set())
        return found

    @staticmethod
    def _service_namespaces(hosts: Iterable[str], state: ClusterState) -> set[str]:
        """Namespaces of the Services that ``hosts`` (exact or wildcard) name: their ``<ns>/*`` domains list
        the VirtualService destinations of those Services."""
        namespaces = set()
        for host in hosts:
            if host.startswith("*"):
                namespaces |= {
                    s.namespace for s in state.services.values() if wildcard_matches(host, state.fqdn(s.key))
                }
            else:
                service = state.service_by_fqdn(host)
                if service is not None:
                    namespaces.add(service.namespace)
        return namespaces

    def _fences_with_hosts(self, hosts: Iterable[str], *, wildcards: bool = True) -> set[ObjectKey]:
        """Fences whose last computed hosts match one of ``hosts``, either way round when one is an Istio
        wildcard."""
        found: set[ObjectKey] = set()
        wildcard_hosts = list(self._wildcard_hosts) if wildcards else []
        for host in hosts:
            found.update(self._host_fences.get(host, ()))
            if not wildcards:
                continue
            if host.startswith("*"):
                for indexed, keys in self._host_fences.items():
                    if wildcard_matches(host, indexed):
                        found.update(keys)
            for pattern in wildcard_hosts:
                if wildcard_matches(pattern, host):
                    found.update(self._host_fences[pattern])
        return found
