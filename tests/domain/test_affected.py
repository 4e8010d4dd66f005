"""Which fences a change affects (domain/affected.py), without Kubernetes: each rule, and that the index
forgets what it no longer holds."""

from __future__ import annotations

from typing import Any

from lazystream.domain.affected import FenceIndex, listed_namespaces
from lazystream.domain.cluster import ClusterState, ObjectKey, Service, ServiceEntry, VirtualService
from lazystream.domain.fences import FenceSpec, fence_from_object

SHOP = "shop"
WEB = ObjectKey(SHOP, "web")
CART = ObjectKey(SHOP, "cart")
BY_LABEL = ObjectKey(SHOP, "by-label")
BY_NAMESPACE = ObjectKey("ops", "by-namespace")


def spec(**body: Any) -> FenceSpec:
    return fence_from_object({"metadata": {"name": "x", "namespace": SHOP}, "spec": body}).spec


def index() -> tuple[FenceIndex, set[ObjectKey]]:
    idx = FenceIndex()
    idx.set_spec(WEB, spec(enable=True))
    idx.set_spec(CART, spec(enable=True))
    idx.set_spec(BY_LABEL, spec(enable=True, labelSelector=[{"selector": {"tier": "db"}}]))
    idx.set_spec(BY_NAMESPACE, spec(enable=True, host={"payments/*": {"stable": {}}}))
    return idx, {WEB, CART, BY_LABEL, BY_NAMESPACE}


def test_listed_namespaces_are_whole_namespace_hosts_and_the_namespace_selector() -> None:
    assert listed_namespaces(spec(host={"a/*": {"stable": {}}, "b.c.svc.cluster.local": {"stable": {}}})) == {
        "a"
    }
    assert listed_namespaces(spec(namespaceSelector=["x", "y"])) == {"x", "y"}


def test_a_new_service_affects_its_own_fence_selectors_namespaces_and_hosts() -> None:
    idx, fences = index()
    state = ClusterState()
    idx.set_hosts(CART, ["db.shop.svc.cluster.local"])
    db = Service(SHOP, "db", labels={"tier": "db"}, selector={"app": "db"})
    assert idx.service_changed(None, db, state, fences) == {BY_LABEL, CART}
    web = Service(SHOP, "web", selector={"app": "web"})
    assert idx.service_changed(None, web, state, fences) == {WEB}
    pay = Service("payments", "api")
    assert idx.service_changed(None, pay, state, fences) == {BY_NAMESPACE}
    assert idx.service_changed(pay, None, state, fences) == {BY_NAMESPACE}  # deletion: the same rules


def test_a_changed_service_affects_only_what_its_change_can_alter() -> None:
    idx, fences = index()
    state = ClusterState()
    web = Service(SHOP, "web", labels={"a": "1"}, selector={"app": "web"})
    assert (
        idx.service_changed(
            web, Service(SHOP, "web", labels={"a": "2"}, selector={"app": "web"}), state, fences
        )
        == set()
    )
    moved = Service(SHOP, "web", labels={"a": "1"}, selector={"app": "web2"})
    assert idx.service_changed(web, moved, state, fences) == {WEB}
    # labels: only a fence matched by exactly one of the old and the new labels
    db = Service(SHOP, "db", labels={"tier": "db"})
    assert (
        idx.service_changed(db, Service(SHOP, "db", labels={"tier": "db", "x": "y"}), state, fences) == set()
    )
    assert idx.service_changed(db, Service(SHOP, "db", labels={"tier": "cache"}), state, fences) == {BY_LABEL}


def test_only_existing_fences_are_reported() -> None:
    idx, fences = index()
    fences.discard(WEB)
    assert idx.service_changed(None, Service(SHOP, "web"), ClusterState(), fences) == set()


def test_virtual_services_and_service_entries_affect_the_fences_holding_their_hosts() -> None:
    idx, fences = index()
    state = ClusterState()
    state.put_service(Service("payments", "api"))
    idx.set_hosts(WEB, ["reviews.shop.svc.cluster.local", "*.example.com"])
    idx.set_hosts(CART, ["api.example.com"])
    vs = VirtualService(SHOP, "reviews", hosts=("reviews.shop.svc.cluster.local",))
    assert idx.virtual_service_changed(SHOP, None, vs, state, fences) == {WEB}
    assert idx.virtual_service_changed(SHOP, vs, vs, state, fences) == set()  # nothing read changed
    # a VirtualService for a payments Service: the fences listing payments/* too
    to_pay = VirtualService(SHOP, "pay", hosts=("api.payments.svc.cluster.local",))
    assert idx.virtual_service_changed(SHOP, None, to_pay, state, fences) == {BY_NAMESPACE}
    # wildcards either way round
    entry = ServiceEntry(SHOP, "ext", hosts=("api.example.com",))
    assert idx.service_entry_changed(None, entry, fences) == {WEB, CART}
    wide = ServiceEntry(SHOP, "wide", hosts=("*.example.com",))
    assert idx.service_entry_changed(wide, None, fences) == {WEB, CART}


def test_the_index_forgets_hosts_and_specs() -> None:
    idx, fences = index()
    entry = ServiceEntry(SHOP, "ext", hosts=("api.example.com",))
    idx.set_hosts(CART, ["api.example.com"])
    idx.set_hosts(CART, ["other.example.com"])  # replaced: the old host no longer points at CART
    assert idx.service_entry_changed(None, entry, fences) == set()
    idx.set_hosts(CART, ["*.example.com"])
    idx.forget_hosts(CART)
    assert idx.service_entry_changed(None, entry, fences) == set()
    idx.set_spec(BY_NAMESPACE, None)
    assert idx.service_changed(None, Service("payments", "api"), ClusterState(), fences) == set()
    idx.set_spec(BY_LABEL, spec(enable=True))  # the selector removed
    assert (
        idx.service_changed(None, Service(SHOP, "db", labels={"tier": "db"}), ClusterState(), fences) == set()
    )
