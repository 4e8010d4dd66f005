"""An in-memory cluster builder: Kubernetes objects as the API server returns them, and the
:class:`~lazystream.domain.cluster.ClusterState` built from them (through the same conversion the worker
uses), plus :func:`bookinfo`, a small mesh shared by tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Self

from lazystream.domain.cluster import ClusterState


class ClusterBuilder:
    """Collects Kubernetes objects; ``build()`` turns them into a ``ClusterState``.

    >>> state = (ClusterBuilder().service("details", ips=["10.0.0.5"]).fence("productpage").build())
    """

    def __init__(self, cluster_domain: str = "cluster.local") -> None:
        self.cluster_domain = cluster_domain
        self.items: list[dict[str, Any]] = []
        self._namespaces: set[str] = set()

    def objects(self) -> list[dict[str, Any]]:
        return list(self.items)

    def build(self) -> ClusterState:
        return ClusterState.from_objects(self.items, self.cluster_domain)

    def add(self, obj: Mapping[str, Any]) -> Self:
        self.items.append(dict(obj))
        return self

    def _ensure_namespace(self, name: str) -> None:
        if name not in self._namespaces:
            self.namespace(name)

    def namespace(self, name: str, labels: Mapping[str, str] | None = None) -> Self:
        self._namespaces.add(name)
        return self.add(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": dict(labels or {})},
            }
        )

    def service(
        self,
        name: str,
        namespace: str = "default",
        *,
        labels: Mapping[str, str] | None = None,
        selector: Mapping[str, str] | None = None,
        ports: Iterable[int | tuple[str, int]] = (("http", 9080),),
        ips: Iterable[str] = (),
        not_ready_ips: Iterable[str] = (),
        endpoints_kind: str = "EndpointSlice",
    ) -> Self:
        """A Service (selector ``app=<name>`` unless given; ``selector={}`` for none) and, when ``ips`` are
        given, an EndpointSlice or Endpoints object listing them (``not_ready_ips`` as not ready)."""
        self._ensure_namespace(namespace)
        port_specs = [
            {"name": p[0], "port": p[1], "protocol": "TCP"} if isinstance(p, tuple) else {"port": p}
            for p in ports
        ]
        spec: dict[str, Any] = {"ports": port_specs}
        chosen = {"app": name} if selector is None else dict(selector)
        if chosen:
            spec["selector"] = chosen
        self.add(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {"app": name})},
                "spec": spec,
            }
        )
        ready, not_ready = list(ips), list(not_ready_ips)
        if ready or not_ready:
            if endpoints_kind == "Endpoints":
                self.add(_endpoints(name, namespace, ready, not_ready))
            else:
                self.add(_endpoint_slice(name, namespace, ready, not_ready))
        return self

    def pod(
        self,
        name: str,
        namespace: str = "default",
        *,
        labels: Mapping[str, str],
        ip: str | None = None,
        service_account: str | None = None,
    ) -> Self:
        self._ensure_namespace(namespace)
        obj: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"containers": [{"name": "app", "image": "app"}]},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]} if ip else {},
        }
        if service_account:
            obj["spec"]["serviceAccountName"] = service_account
        return self.add(obj)

    def virtual_service(
        self, name: str, namespace: str = "default", *, hosts: Iterable[str], destinations: Iterable[str] = ()
    ) -> Self:
        self._ensure_namespace(namespace)
        http = [{"route": [{"destination": {"host": d}}]} for d in destinations]
        return self.add(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"hosts": list(hosts), "http": http},
            }
        )

    def service_entry(self, name: str, namespace: str = "default", *, hosts: Iterable[str]) -> Self:
        self._ensure_namespace(namespace)
        return self.add(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "ServiceEntry",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "hosts": list(hosts),
                    "location": "MESH_EXTERNAL",
                    "ports": [{"number": 443, "name": "https", "protocol": "TLS"}],
                    "resolution": "DNS",
                },
            }
        )

    def fence(self, name: str, namespace: str = "default", *, enable: bool = True, **spec: Any) -> Self:
        self._ensure_namespace(namespace)
        return self.add(
            {
                "apiVersion": "microservice.slime.io/v1alpha1",
                "kind": "ServiceFence",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"enable": enable, **spec},
            }
        )

    def global_sidecar(self, namespace: str = "mesh-operator", *, ip: str = "10.244.9.9") -> Self:
        """The global-sidecar Service (selector ``app=global-sidecar``) and its pod."""
        self.service("global-sidecar", namespace, ports=[("http-80", 80)], ips=[ip])
        return self.pod("global-sidecar-5b7c9d-abcde", namespace, labels={"app": "global-sidecar"}, ip=ip)


def _endpoints(name: str, namespace: str, ready: list[str], not_ready: list[str]) -> dict[str, Any]:
    subset: dict[str, Any] = {"ports": [{"port": 9080}]}
    if ready:
        subset["addresses"] = [{"ip": ip} for ip in ready]
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": ip} for ip in not_ready]
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace},
        "subsets": [subset],
    }


def _endpoint_slice(name: str, namespace: str, ready: list[str], not_ready: list[str]) -> dict[str, Any]:
    endpoints = [{"addresses": [ip], "conditions": {"ready": True}} for ip in ready] + [
        {"addresses": [ip], "conditions": {"ready": False}} for ip in not_ready
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-abc12",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"port": 9080}],
    }


BOOKINFO_IPS = {
    "productpage": "10.244.0.15",
    "details": "10.244.0.12",
    "reviews": "10.244.0.13",
    "ratings": "10.244.0.14",
}


def bookinfo(cluster_domain: str = "cluster.local") -> ClusterBuilder:
    """A bookinfo-like mesh: namespace ``default`` with productpage, details, reviews and ratings (each
    fenced, with one pod and an EndpointSlice), the global-sidecar in ``mesh-operator``, a VirtualService
    for reviews, an external API behind a VirtualService, and ServiceEntries (one exact, one wildcard)."""
    b = ClusterBuilder(cluster_domain).namespace("default", {"istio-injection": "enabled"})
    b.namespace("istio-system").namespace("mesh-operator")
    for name, ip in BOOKINFO_IPS.items():
        labels = {"app": name, "version": "v1"}
        b.service(name, ips=[ip]).pod(
            f"{name}-v1-0", labels=labels, ip=ip, service_account=f"bookinfo-{name}"
        )
        b.fence(name, workloadSelector={"fromService": True})
    b.service("reviews-v2", ips=["10.244.0.23"])
    b.service("legacy", "other", selector={}, ports=[80])  # no selector: endpoints managed by hand
    b.global_sidecar()
    b.virtual_service("reviews", hosts=["reviews"], destinations=["reviews", "reviews-v2"])
    b.virtual_service(
        "partner-api", hosts=["api.partner.io"], destinations=["reviews.default.svc.cluster.local"]
    )
    b.service_entry("example-org", hosts=["www.example.org"])
    b.service_entry("example-com", hosts=["*.example.com"])
    return b
