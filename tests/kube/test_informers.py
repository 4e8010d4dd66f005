"""ClusterCache against the real kube-apiserver: list-and-watch fills the domain state, and each change
reports exactly the fences it affects."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from lazystream.domain.cluster import ObjectKey
from lazystream.kube.informers import ALL_KINDS, ClusterCache
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.kube

SYNC_TIMEOUT = 15.0
SEEN_TIMEOUT = 8.0


class Changes:
    """What on_change received, from the watch threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[frozenset[ObjectKey], str]] = []

    def __call__(self, keys: set[ObjectKey], reason: str) -> None:
        with self._lock:
            self.calls.append((frozenset(keys), reason))

    def about(self, text: str) -> list[frozenset[ObjectKey]]:
        with self._lock:
            return [keys for keys, reason in self.calls if text in reason]

    def keys_about(self, text: str) -> set[ObjectKey]:
        return {key for keys in self.about(text) for key in keys}


def eventually(predicate: Callable[[], Any], timeout: float = SEEN_TIMEOUT, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what or predicate}")
        time.sleep(0.05)


def unique_ip() -> str:
    raw = uuid.uuid4().bytes
    return f"10.{raw[0]}.{raw[1]}.{max(raw[2], 1)}"


class Kube:
    """Create, patch and delete objects as dicts through the dynamic client."""

    API: ClassVar[dict[str, str]] = {
        "Namespace": "v1",
        "Service": "v1",
        "Endpoints": "v1",
        "EndpointSlice": "discovery.k8s.io/v1",
        "Pod": "v1",
        "VirtualService": "networking.istio.io/v1alpha3",
        "ServiceEntry": "networking.istio.io/v1alpha3",
        "ServiceFence": "microservice.slime.io/v1alpha1",
        "Sidecar": "networking.istio.io/v1alpha3",
    }

    def __init__(self, dynamic: DynamicClient, namespace: str) -> None:
        self.dynamic = dynamic
        self.namespace = namespace

    def _resource(self, kind: str) -> Any:
        return self.dynamic.resources.get(api_version=self.API[kind], kind=kind)

    def create(
        self, kind: str, name: str, body: dict[str, Any], labels: dict[str, str] | None = None
    ) -> None:
        metadata: dict[str, Any] = {"name": name, "namespace": self.namespace}
        if labels:
            metadata["labels"] = labels
        full = {"apiVersion": self.API[kind], "kind": kind, "metadata": metadata, **body}
        self._resource(kind).create(body=full, namespace=self.namespace)

    def patch(self, kind: str, name: str, patch: dict[str, Any]) -> None:
        self._resource(kind).patch(
            body=patch, name=name, namespace=self.namespace, content_type="application/merge-patch+json"
        )

    def delete(self, kind: str, name: str) -> None:
        self._resource(kind).delete(name=name, namespace=self.namespace)

    def service(
        self, name: str, labels: dict[str, str] | None = None, selector: dict[str, str] | None = None
    ) -> None:
        # headless: deleted namespaces never go away here, and the server's Service IP range is small
        spec = {
            "clusterIP": "None",
            "ports": [{"name": "http", "port": 9080}],
            "selector": selector or {"app": name},
        }
        self.create("Service", name, {"spec": spec}, labels)

    def slice(self, name: str, service: str, ip: str) -> None:
        self.create(
            "EndpointSlice",
            name,
            {
                "addressType": "IPv4",
                "endpoints": [{"addresses": [ip]}],
                "ports": [{"name": "http", "port": 9080}],
            },
            {"kubernetes.io/service-name": service},
        )

    def fence(self, name: str, spec: dict[str, Any], enable: bool = True) -> None:
        self.create("ServiceFence", name, {"spec": {"enable": enable, **spec}})


@pytest.fixture
def kube(kube_dynamic: DynamicClient, namespace: str) -> Kube:
    return Kube(kube_dynamic, namespace)


@pytest.fixture
def changes() -> Changes:
    return Changes()


@pytest.fixture
def make_cache(
    kube_api: client.ApiClient, kube_crds: Any, changes: Changes
) -> Iterator[Callable[..., ClusterCache]]:
    made: list[ClusterCache] = []

    def make(**kwargs: Any) -> ClusterCache:
        cache = ClusterCache(kube_api, on_change=changes, **kwargs)
        made.append(cache)
        cache.start()
        assert cache.wait_synced(SYNC_TIMEOUT)
        return cache

    yield make
    for cache in made:
        assert cache.stop(timeout=5.0)


def informer_threads() -> list[str]:
    return [
        t.name for t in threading.enumerate() if t.name.startswith("lazystream-informer-") and t.is_alive()
    ]


# -- initial sync -----------------------------------------------------------------------------------------


def test_initial_sync_fills_the_cluster_state_and_the_reduced_objects(
    kube: Kube, make_cache, namespace: str
) -> None:
    ip = unique_ip()
    kube.service("reviews", labels={"tier": "backend"})
    kube.slice("reviews-abc", "reviews", ip)
    # disabled: a lazystream worker that other tests may be running leaves its Sidecar to us
    kube.fence("reviews", {"host": {"details.default.svc.cluster.local": {"stable": {}}}}, enable=False)
    kube.create("Sidecar", "reviews", {"spec": {"egress": [{"hosts": ["istio-system/*"]}]}})

    cache = make_cache()

    key = ObjectKey(namespace, "reviews")
    with cache.reading() as state:
        assert [s.key for s in state.services_for_ip(ip)] == [key]
        assert state.services[key].labels == {"tier": "backend"}
        assert namespace in state.namespaces
        assert not state.fences[key].enabled
        fence = cache.fence(key)
        sidecar = cache.sidecars[key]
    # only what is read: no managedFields, annotations or creationTimestamp
    fence_fields = {"apiVersion", "kind", "metadata", "spec"}
    assert fence_fields <= set(fence) <= fence_fields | {"status"}
    assert {"name", "namespace", "uid", "resourceVersion", "generation"} <= set(fence["metadata"])
    assert set(fence["metadata"]) <= {"name", "namespace", "uid", "labels", "resourceVersion", "generation"}
    assert fence["spec"]["host"] == {"details.default.svc.cluster.local": {"stable": {}}}
    assert set(sidecar) == {"metadata", "spec"}
    assert {"name", "namespace", "resourceVersion"} <= set(sidecar["metadata"])
    assert set(sidecar["metadata"]) <= {"name", "namespace", "labels", "ownerReferences", "resourceVersion"}
    assert sidecar["spec"]["egress"] == [{"hosts": ["istio-system/*"]}]
    assert cache.events_total["ServiceFence/LIST"] == 1
    assert cache.errors_total == {}


# -- every kind follows the server ------------------------------------------------------------------------


def test_add_update_delete_of_every_kind_is_reflected(kube: Kube, make_cache, namespace: str) -> None:
    cache = make_cache()

    def seen(check: Callable[[], Any], what: str) -> None:
        def locked() -> Any:
            with cache.reading():
                return check()

        eventually(locked, what=what)

    state = cache.state
    key = ObjectKey(namespace, "web")

    kube.service("web", labels={"v": "1"})
    seen(lambda: key in state.services, "Service added")
    kube.patch("Service", "web", {"metadata": {"labels": {"v": "2"}}})
    seen(lambda: state.services[key].labels == {"v": "2"}, "Service relabelled")

    ip1, ip2, ip3, ip4 = (unique_ip() for _ in range(4))
    kube.create("Endpoints", "web", {"subsets": [{"addresses": [{"ip": ip1}]}]})
    seen(lambda: [s.key for s in state.services_for_ip(ip1)] == [key], "Endpoints added")
    kube.patch("Endpoints", "web", {"subsets": [{"addresses": [{"ip": ip2}]}]})
    seen(lambda: state.services_for_ip(ip2) and not state.services_for_ip(ip1), "Endpoints changed")
    kube.delete("Endpoints", "web")
    seen(lambda: not state.services_for_ip(ip2), "Endpoints deleted")

    kube.slice("web-x1", "web", ip3)
    seen(lambda: [s.key for s in state.services_for_ip(ip3)] == [key], "EndpointSlice added")
    kube.patch("EndpointSlice", "web-x1", {"endpoints": [{"addresses": [ip4]}]})
    seen(lambda: state.services_for_ip(ip4) and not state.services_for_ip(ip3), "EndpointSlice changed")
    kube.delete("EndpointSlice", "web-x1")
    seen(lambda: not state.services_for_ip(ip4), "EndpointSlice deleted")

    pod = ObjectKey(namespace, "web-0")
    kube.create(
        "Pod", "web-0", {"spec": {"containers": [{"name": "app", "image": "busybox"}]}}, {"app": "web"}
    )
    seen(lambda: pod in state.pods, "Pod added")
    kube.patch("Pod", "web-0", {"metadata": {"labels": {"app": "web", "track": "canary"}}})
    seen(lambda: state.pods[pod].labels.get("track") == "canary", "Pod relabelled")
    kube.delete("Pod", "web-0")  # never scheduled: deleted at once
    seen(lambda: pod not in state.pods, "Pod deleted")

    vs = ObjectKey(namespace, "web-vs")
    fqdn = f"web.{namespace}.svc.cluster.local"
    kube.create("VirtualService", "web-vs", {"spec": {"hosts": ["web"]}})
    seen(lambda: [v.key for v in state.virtual_services_for(fqdn)] == [vs], "VirtualService added")
    kube.patch("VirtualService", "web-vs", {"spec": {"hosts": ["web.example.com"]}})
    seen(
        lambda: not state.virtual_services_for(fqdn) and state.virtual_services_for("web.example.com"),
        "VS changed",
    )
    kube.delete("VirtualService", "web-vs")
    seen(lambda: vs not in state.virtual_services, "VirtualService deleted")

    se = ObjectKey(namespace, "ext")
    kube.create("ServiceEntry", "ext", {"spec": {"hosts": ["api.example.org"], "resolution": "DNS"}})
    seen(lambda: [s.key for s in state.service_entries_for("api.example.org")] == [se], "ServiceEntry added")
    kube.patch("ServiceEntry", "ext", {"spec": {"hosts": ["*.example.org"]}})
    seen(lambda: state.service_entries[se].hosts == ("*.example.org",), "ServiceEntry changed")
    kube.delete("ServiceEntry", "ext")
    seen(lambda: se not in state.service_entries, "ServiceEntry deleted")

    kube.fence("web", {})
    seen(lambda: key in cache.fences and state.fences[key].enabled, "ServiceFence added")
    kube.patch("ServiceFence", "web", {"spec": {"enable": False}})
    seen(
        lambda: not state.fences[key].enabled and cache.fences[key]["spec"]["enable"] is False,
        "fence changed",
    )
    kube.delete("ServiceFence", "web")
    seen(lambda: key not in cache.fences and key not in state.fences, "ServiceFence deleted")

    sidecar = ObjectKey(namespace, "web-sidecar")  # not the fence's name: a running worker may write that one
    kube.create("Sidecar", "web-sidecar", {"spec": {"egress": [{"hosts": ["./*"]}]}})
    seen(lambda: sidecar in cache.sidecars, "Sidecar added")
    kube.patch("Sidecar", "web-sidecar", {"spec": {"egress": [{"hosts": ["*/*"]}]}})
    seen(lambda: cache.sidecars[sidecar]["spec"]["egress"] == [{"hosts": ["*/*"]}], "Sidecar changed")
    kube.delete("Sidecar", "web-sidecar")
    seen(lambda: sidecar not in cache.sidecars, "Sidecar deleted")

    kube.delete("Service", "web")
    seen(lambda: key not in state.services, "Service deleted")

    kube.dynamic.resources.get(api_version="v1", kind="Namespace").patch(
        body={"metadata": {"labels": {"istio-injection": "enabled"}}},
        name=namespace,
        content_type="application/merge-patch+json",
    )
    seen(
        lambda: state.namespaces[namespace].labels.get("istio-injection") == "enabled", "Namespace relabelled"
    )

    for kind in ALL_KINDS:
        assert cache.events_total[f"{kind}/MODIFIED"] >= 1, kind
    assert cache.errors_total == {}


# -- affected fences --------------------------------------------------------------------------------------


def test_a_virtual_service_affects_exactly_the_fence_that_has_its_host(
    kube: Kube, make_cache, changes: Changes, namespace: str
) -> None:
    cache = make_cache()
    ns = namespace
    details, ratings = f"details.{ns}.svc.cluster.local", f"ratings.{ns}.svc.cluster.local"
    kube.fence("productpage", {"host": {details: {}}})
    kube.fence("reviews", {"host": {ratings: {}}})
    productpage, reviews = ObjectKey(ns, "productpage"), ObjectKey(ns, "reviews")
    eventually(lambda: changes.about(f"ServiceFence ADDED {ns}/reviews"), what="fences seen")
    assert changes.keys_about(f"ServiceFence ADDED {productpage}") == {productpage}
    cache.set_fence_hosts(productpage, [details])
    cache.set_fence_hosts(reviews, [ratings])

    route = [{"route": [{"destination": {"host": "details-v2"}}]}]
    kube.create("VirtualService", "details", {"spec": {"hosts": ["details"], "http": route}})
    eventually(lambda: changes.about(f"VirtualService ADDED {ns}/details"), what="VS add reported")
    assert changes.about(f"VirtualService ADDED {ns}/details") == [frozenset({productpage})]

    # a change moves the VS to the other fence's host: both the old and the new host's fences
    kube.patch("VirtualService", "details", {"spec": {"hosts": ["ratings"]}})
    eventually(lambda: changes.about(f"VirtualService MODIFIED {ns}/details"), what="VS change reported")
    assert changes.about(f"VirtualService MODIFIED {ns}/details") == [frozenset({productpage, reviews})]

    # a wildcard ServiceEntry host matches the fences' exact hosts
    kube.create("ServiceEntry", "all", {"spec": {"hosts": [f"*.{ns}.svc.cluster.local"]}})
    eventually(lambda: changes.about(f"ServiceEntry ADDED {ns}/all"), what="SE add reported")
    assert changes.keys_about(f"ServiceEntry ADDED {ns}/all") == {productpage, reviews}

    # a metadata-only change (labels of the VS) affects nothing; a later real change is reported
    kube.patch("VirtualService", "details", {"metadata": {"labels": {"team": "x"}}})
    kube.delete("VirtualService", "details")
    eventually(lambda: changes.about(f"VirtualService DELETED {ns}/details"), what="VS delete reported")
    assert len(changes.about(f"VirtualService MODIFIED {ns}/details")) == 1
    assert changes.keys_about(f"VirtualService DELETED {ns}/details") == {reviews}

    # after forget_fence the fence is no longer matched by host
    cache.forget_fence(reviews)
    kube.create("VirtualService", "ratings", {"spec": {"hosts": ["ratings"]}})
    eventually(lambda: cache.state.virtual_services.get(ObjectKey(ns, "ratings")), what="VS seen")
    assert not changes.about(f"VirtualService ADDED {ns}/ratings")

    # the index follows a fence's hosts as they change: a host the fence no longer has does not match it
    cache.set_fence_hosts(productpage, [details, ratings])
    cache.set_fence_hosts(reviews, [ratings])
    cache.set_fence_hosts(reviews, [details])
    kube.create("VirtualService", "ratings-2", {"spec": {"hosts": ["ratings"]}})
    eventually(lambda: changes.about(f"VirtualService ADDED {ns}/ratings-2"), what="VS add reported")
    assert changes.about(f"VirtualService ADDED {ns}/ratings-2") == [frozenset({productpage})]


def test_a_virtual_service_affects_the_namespace_fences_of_its_namespace(
    kube: Kube, make_cache, changes: Changes, namespace: str
) -> None:
    make_cache()
    ns = namespace
    kube.fence("whole-ns", {"host": {f"{ns}/*": {}}})
    kube.fence("by-selector", {"namespaceSelector": [ns]})
    kube.fence("other", {"namespaceSelector": ["elsewhere"]})
    eventually(lambda: changes.about(f"ServiceFence ADDED {ns}/other"), what="fences seen")

    kube.create("VirtualService", "vs", {"spec": {"hosts": ["api.example.com"]}})
    eventually(lambda: changes.about(f"VirtualService ADDED {ns}/vs"), what="VS add reported")
    assert changes.keys_about(f"VirtualService ADDED {ns}/vs") == {
        ObjectKey(ns, "whole-ns"),
        ObjectKey(ns, "by-selector"),
    }


def test_service_changes_affect_the_fences_that_depend_on_the_service(
    kube: Kube, make_cache, changes: Changes, namespace: str
) -> None:
    cache = make_cache()
    ns = namespace
    # labelSelector matches Services in every namespace: values of this test's own
    be, db = f"backend-{ns[-8:]}", f"db-{ns[-8:]}"
    backend, own, by_host, bystander = (ObjectKey(ns, n) for n in ("backend", "api", "caller", "bystander"))
    kube.fence("backend", {"labelSelector": [{"selector": {"tier": be}}]})
    kube.fence("api", {"workloadSelector": {"fromService": True}})
    kube.fence("caller", {})
    kube.fence("bystander", {"labelSelector": [{"selector": {"tier": db}}]})
    eventually(lambda: changes.about(f"ServiceFence ADDED {ns}/bystander"), what="fences seen")
    cache.set_fence_hosts(by_host, [f"api.{ns}.svc.cluster.local"])

    # add: the fence of the same name, the label-selector fence it matches, the fence that has its FQDN
    kube.service("api", labels={"tier": be})
    eventually(lambda: changes.about(f"Service ADDED {ns}/api"), what="Service add reported")
    assert changes.keys_about(f"Service ADDED {ns}/api") == {backend, own, by_host}

    # relabelled out of one selector into another
    kube.patch("Service", "api", {"metadata": {"labels": {"tier": db}}})
    eventually(lambda: changes.about(f"Service MODIFIED {ns}/api"), what="relabel reported")
    assert changes.keys_about(f"Service MODIFIED {ns}/api") == {backend, bystander}

    # a change of an annotation only (resourceVersion changes, nothing lazystream reads): nothing
    kube.patch("Service", "api", {"metadata": {"annotations": {"note": "x"}}})
    # a selector change: the fromService fence
    kube.patch("Service", "api", {"spec": {"selector": {"app": "api-v2"}}})
    eventually(lambda: len(changes.about(f"Service MODIFIED {ns}/api")) >= 2, what="selector change reported")
    assert changes.about(f"Service MODIFIED {ns}/api")[1:] == [frozenset({own})]
    assert cache.events_total["Service/MODIFIED"] >= 3

    # an Endpoints or EndpointSlice change resolves differently but affects no fence
    ip = unique_ip()
    kube.create("Endpoints", "api", {"subsets": [{"addresses": [{"ip": ip}]}]})
    kube.slice("api-1", "api", ip)
    kube.create(
        "Pod", "api-0", {"spec": {"containers": [{"name": "app", "image": "busybox"}]}}, {"app": "api"}
    )

    def resolved() -> bool:
        with cache.reading() as state:
            return state.services_for_ip(ip) != [] and ObjectKey(ns, "api-0") in state.pods

    eventually(resolved, what="endpoints seen")
    time.sleep(0.3)
    assert not changes.about("Endpoints")  # EndpointSlice too
    assert not changes.about("Pod ")

    # delete: the same fences as an add (with the labels it had)
    kube.delete("Service", "api")
    eventually(lambda: changes.about(f"Service DELETED {ns}/api"), what="delete reported")
    assert changes.keys_about(f"Service DELETED {ns}/api") == {own, by_host, bystander}


def test_sidecar_changes_report_their_fence(kube: Kube, make_cache, changes: Changes, namespace: str) -> None:
    make_cache()
    ns = namespace
    kube.fence("reviews", {}, enable=False)  # disabled: no running worker writes its Sidecar
    eventually(lambda: changes.about(f"ServiceFence ADDED {ns}/reviews"), what="fence seen")
    kube.create("Sidecar", "reviews", {"spec": {"egress": [{"hosts": ["*/*"]}]}})
    kube.create("Sidecar", "unrelated", {"spec": {"egress": [{"hosts": ["*/*"]}]}})
    kube.delete("Sidecar", "reviews")
    eventually(lambda: changes.about(f"Sidecar DELETED {ns}/reviews"), what="sidecar delete reported")
    assert changes.keys_about(f"Sidecar ADDED {ns}/reviews") == {ObjectKey(ns, "reviews")}
    assert not changes.about(f"Sidecar ADDED {ns}/unrelated")


# -- resync, restart and stop ----------------------------------------------------------------------------


def test_a_restarted_cache_reconciles_what_changed_while_it_was_stopped(
    kube: Kube, make_cache, changes: Changes, namespace: str
) -> None:
    cache = make_cache(kinds=["Service", "ServiceFence"])
    ns = namespace
    kube.fence("gone", {"workloadSelector": {"fromService": True}})
    kube.service("gone")
    kube.service("kept")
    eventually(lambda: ObjectKey(ns, "kept") in cache.state.services, what="services seen")
    assert cache.stop()
    assert informer_threads() == []

    kube.delete("Service", "gone")
    kube.patch("Service", "kept", {"metadata": {"labels": {"changed": "yes"}}})
    cache.start()
    assert cache.wait_synced(SYNC_TIMEOUT)
    with cache.reading() as state:
        assert ObjectKey(ns, "gone") not in state.services
        assert state.services[ObjectKey(ns, "kept")].labels == {"changed": "yes"}
    assert ObjectKey(ns, "gone") in changes.keys_about("Service list")


def test_resync_now_and_periodic_resync_relist_without_spurious_changes(
    kube: Kube, make_cache, changes: Changes, namespace: str
) -> None:
    cache = make_cache(resync_seconds=1.0, kinds=["Service", "ServiceFence"])
    key = ObjectKey(namespace, "svc")
    kube.fence("svc", {"workloadSelector": {"fromService": True}})
    kube.service("svc")
    eventually(lambda: key in cache.state.services and key in cache.fences, what="service and fence seen")
    eventually(lambda: cache.events_total["Service/LIST"] >= 3, what="periodic resyncs")
    assert cache.resync_now(timeout=10.0)
    # the watches resumed after the relists
    kube.patch("Service", "svc", {"spec": {"selector": {"app": "svc-v2"}}})
    eventually(lambda: changes.about(f"Service MODIFIED {key}"), what="change after resync reported")
    assert cache.state.services[key].selector == {"app": "svc-v2"}
    # the relists found nothing the watches had not delivered
    assert key not in changes.keys_about("list")
    assert cache.errors_total == {}


def test_stop_ends_every_thread_promptly(kube_api: client.ApiClient, kube_crds: Any) -> None:
    cache = ClusterCache(kube_api)
    cache.start()
    assert cache.wait_synced(SYNC_TIMEOUT)
    assert len(informer_threads()) == len(ALL_KINDS)
    started = time.monotonic()
    assert cache.stop(timeout=5.0)
    assert time.monotonic() - started < 2.0
    assert informer_threads() == []


def test_unknown_kinds_are_refused(kube_api: client.ApiClient) -> None:
    with pytest.raises(ValueError, match="Gateway"):
        ClusterCache(kube_api, kinds=["Service", "Gateway"])


def test_an_unreachable_server_is_retried_with_backoff_and_stop_stays_prompt() -> None:
    configuration = client.Configuration()
    configuration.host = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    with client.ApiClient(configuration) as api:
        cache = ClusterCache(api, kinds=["Service", "ServiceFence"])
        cache.start()
        assert not cache.wait_synced(0.5)
        # backoff: 0.5-0.75 s, then 1-1.5 s, ... so a few failures in 3 s, not hundreds
        eventually(lambda: cache.errors_total["Service"] >= 2, timeout=5.0, what="retried")
        assert cache.errors_total["Service"] <= 5
        started = time.monotonic()
        assert cache.stop(timeout=5.0)
        assert time.monotonic() - started < 1.0
        assert informer_threads() == []
