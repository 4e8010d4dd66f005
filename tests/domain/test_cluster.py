from __future__ import annotations

import pytest

from lazystream.domain.cluster import ClusterObjectError, ClusterState, ObjectKey
from lazystream.testing import ClusterBuilder, bookinfo


def names(services) -> list[str]:
    return [str(s.key) for s in services]


def test_ip_index_covers_endpoints_and_slices_ready_and_not_ready() -> None:
    state = (
        ClusterBuilder()
        .service("a", ips=["10.0.0.1"], not_ready_ips=["10.0.0.2"], endpoints_kind="Endpoints")
        .service("b", ips=["10.0.0.1"], not_ready_ips=["10.0.0.3"])  # EndpointSlice
        .service("c", "other", ips=["10.0.0.3"])
        .build()
    )
    assert names(state.services_for_ip("10.0.0.1")) == ["default/a", "default/b"]
    assert names(state.services_for_ip("10.0.0.2")) == ["default/a"]
    assert names(state.services_for_ip("10.0.0.3")) == ["default/b", "other/c"]
    assert state.services_for_ip("10.0.0.9") == []


def test_deleting_endpoints_and_services_updates_the_indexes() -> None:
    state = ClusterBuilder().service("a", ips=["10.0.0.1"]).service("b", ips=["10.0.0.1"]).build()
    state.delete("EndpointSlice", "default", "a-abc12")
    assert names(state.services_for_ip("10.0.0.1")) == ["default/b"]
    state.delete("Service", "default", "b")  # endpoints without their Service name no caller
    assert state.services_for_ip("10.0.0.1") == []
    assert state.service_by_fqdn("b.default.svc.cluster.local") is None
    state.delete("Service", "default", "missing")  # absent: no-op


def test_replacing_a_service_reindexes_labels() -> None:
    state = ClusterBuilder().service("a", labels={"tier": "web"}).build()
    assert state.services_with_label("tier", "web") == {ObjectKey("default", "a")}
    state.apply(
        {"kind": "Service", "metadata": {"name": "a", "namespace": "default", "labels": {"tier": "db"}}}
    )
    assert state.services_with_label("tier", "web") == set()
    assert state.services_with_label("tier", "db") == {ObjectKey("default", "a")}


def test_selectors_match_pods_and_selectorless_services_select_nothing() -> None:
    state = (
        ClusterBuilder()
        .service("web", selector={"app": "web"})
        .service("web-v1", selector={"app": "web", "version": "v1"})
        .service("manual", selector={})
        .service("elsewhere", "other", selector={"app": "web"})
        .build()
    )
    assert names(state.services_selecting("default", {"app": "web", "version": "v1"})) == [
        "default/web",
        "default/web-v1",
    ]
    assert names(state.services_selecting("default", {"app": "web"})) == ["default/web"]
    assert state.services_selecting("default", {}) == []


def test_virtual_service_short_names_are_qualified_in_its_namespace() -> None:
    state = (
        ClusterBuilder()
        .virtual_service("r", "shop", hosts=["reviews", "api.partner.io"], destinations=["reviews-v2", "x.y"])
        .build()
    )
    (vs,) = state.virtual_services_for("reviews.shop.svc.cluster.local")
    assert vs.hosts == ("reviews.shop.svc.cluster.local", "api.partner.io")
    assert vs.destinations == ("reviews-v2.shop.svc.cluster.local", "x.y")
    assert state.virtual_services_for("api.partner.io") == [vs]
    state.delete("VirtualService", "shop", "r")
    assert state.virtual_services_for("api.partner.io") == []


def test_service_entry_wildcards() -> None:
    state = bookinfo().build()
    assert [s.name for s in state.service_entries_for("api.example.com")] == ["example-com"]
    assert [s.name for s in state.service_entries_for("www.example.org")] == ["example-org"]
    assert state.service_entries_for("example.com") == []


def test_fences_and_pods() -> None:
    state = bookinfo().build()
    assert state.fences[ObjectKey("default", "reviews")].enabled
    state.apply({"kind": "ServiceFence", "metadata": {"name": "reviews", "namespace": "default"}, "spec": {}})
    assert not state.fences[ObjectKey("default", "reviews")].enabled
    assert [p.name for p in state.pods_for_ip("10.244.0.15")] == ["productpage-v1-0"]


def test_pods_by_service_account_find_their_services() -> None:
    state = (
        ClusterBuilder()
        .service("web")
        .pod("web-0", labels={"app": "web"}, ip="10.0.0.1", service_account="web-sa")
        .build()
    )
    assert names(state.services_for_service_account("default", "web-sa")) == ["default/web"]
    assert state.services_for_service_account("default", "other") == []


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"kind": "Service", "metadata": {}}, "Service without metadata.name"),
        (
            {"kind": "Service", "metadata": {"name": "a"}, "spec": {"ports": [{"port": "80"}]}},
            "spec.ports[0].port",
        ),
        ({"kind": "Service", "metadata": {"name": "a", "labels": ["x"]}}, "metadata.labels"),
        ({"kind": "EndpointSlice", "metadata": {"name": "s"}}, "no kubernetes.io/service-name label"),
        ({"kind": "VirtualService", "metadata": {"name": "v"}, "spec": {"hosts": "a"}}, "spec.hosts"),
    ],
)
def test_malformed_objects_are_named(obj: dict, message: str) -> None:
    with pytest.raises(ClusterObjectError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ClusterState().apply(obj)


def test_unknown_kinds_are_ignored() -> None:
    state = ClusterState()
    state.apply({"kind": "ConfigMap", "metadata": {"name": "x"}})
    assert state.services == {}


def test_names_and_labels_of_parsed_objects_share_one_string_each() -> None:
    # a worker's cache holds every namespace, and each workload's name, thousands of times over kinds
    def service(name: str) -> dict:
        meta = {"name": "".join(name), "namespace": "".join(["mesh", "-a"]), "labels": {"app": "".join(name)}}
        return {"kind": "Service", "metadata": meta, "spec": {"selector": {"app": "".join(name)}}}

    state = ClusterState()
    state.apply(service(["web", "-1"]))
    state.apply(service(["web", "-2"]))
    state.apply({"kind": "Pod", "metadata": {"name": "".join(["web", "-1"]), "namespace": "mesh-a"}})
    first, second = state.services[ObjectKey("mesh-a", "web-1")], state.services[ObjectKey("mesh-a", "web-2")]
    assert first.namespace is second.namespace
    assert first.name is first.labels["app"] is first.selector["app"]
    assert next(iter(first.labels)) is next(iter(second.labels))
    pod = state.pods[ObjectKey("mesh-a", "web-1")]
    assert pod.name is first.name
    assert pod.namespace is first.namespace
