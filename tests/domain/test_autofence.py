"""autoFence decisions, case by case."""

from __future__ import annotations

import pytest

from lazystream.domain.autofence import (
    AutoFenceOptions,
    LabelSelector,
    SelectorRequirement,
    desired_auto_fences,
    plan,
    revision_in_scope,
    would_create,
)
from lazystream.domain.cluster import ObjectKey
from lazystream.domain.workloads import WorkloadFences
from lazystream.testing import ClusterBuilder

ON = AutoFenceOptions(enabled=True)


def mesh(ns_labels: dict | None = None, svc_labels: dict | None = None) -> ClusterBuilder:
    return (
        ClusterBuilder()
        .namespace("shop", ns_labels or {})
        .service("web", "shop", labels=svc_labels or {"app": "web"})
        .namespace("istio-system")
        .service("istiod", "istio-system")
        .namespace("mesh-operator")
        .global_sidecar()
        .service("manual-endpoints", "shop", selector={})
    )


@pytest.mark.parametrize(
    ("ns_labels", "svc_labels", "default_fence", "fenced"),
    [
        ({}, {}, False, False),
        ({}, {}, True, True),
        ({"slime.io/serviceFenced": "true"}, {}, False, True),
        ({"slime.io/serviceFenced": "false"}, {}, True, False),
        ({"slime.io/serviceFenced": "false"}, {"slime.io/serviceFenced": "true"}, False, True),
        ({"slime.io/serviceFenced": "true"}, {"slime.io/serviceFenced": "false"}, True, False),
        (
            {"slime.io/serviceFenced": "yes"},
            {"slime.io/serviceFenced": "TRUE"},
            False,
            False,
        ),  # exact strings only
    ],
)
def test_service_label_beats_namespace_label_beats_default(
    ns_labels, svc_labels, default_fence, fenced
) -> None:
    cluster = mesh(ns_labels, {"app": "web", **svc_labels}).build()
    options = AutoFenceOptions(enabled=True, default_fence=default_fence)
    assert (ObjectKey("shop", "web") in desired_auto_fences(cluster, options)) is fenced


def test_never_fenced_istio_slime_global_sidecar_and_selectorless() -> None:
    cluster = mesh().build()
    desired = desired_auto_fences(cluster, AutoFenceOptions(enabled=True, default_fence=True))
    assert sorted(desired) == [ObjectKey("shop", "web")]
    assert desired_auto_fences(cluster, AutoFenceOptions(enabled=False, default_fence=True)) == {}


def test_created_fence_shape() -> None:
    cluster = mesh({"slime.io/serviceFenced": "true"}).build()
    options = AutoFenceOptions(enabled=True, self_resource_rev="canary")
    assert desired_auto_fences(cluster, options)[ObjectKey("shop", "web")] == {
        "apiVersion": "microservice.slime.io/v1alpha1",
        "kind": "ServiceFence",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "labels": {"app.kubernetes.io/created-by": "fence-controller", "istio.io/rev": "canary"},
        },
        "spec": {"enable": True, "workloadSelector": {"fromService": True}},
    }


@pytest.mark.parametrize(
    ("options", "in_scope"),
    [
        (AutoFenceOptions(enabled=True, default_fence=True, white_namespaces=("shop",)), True),
        (AutoFenceOptions(enabled=True, default_fence=True, white_namespaces=("other",)), False),
        (AutoFenceOptions(enabled=True, default_fence=True, black_namespaces=("shop",)), False),
        (
            AutoFenceOptions(
                enabled=True,
                default_fence=True,
                management_selectors=(
                    LabelSelector({"team": "b"}),
                    LabelSelector({}, (SelectorRequirement("env", "In", ("prod",)),)),
                ),
            ),
            True,
        ),
        (
            AutoFenceOptions(
                enabled=True,
                default_fence=True,
                management_selectors=(LabelSelector({}, (SelectorRequirement("env", "NotIn", ("prod",)),)),),
            ),
            False,
        ),
        (
            AutoFenceOptions(
                enabled=True,
                default_fence=True,
                management_selectors=(LabelSelector({}, (SelectorRequirement("env", "DoesNotExist"),)),),
            ),
            False,
        ),
    ],
)
def test_namespace_scope(options: AutoFenceOptions, in_scope: bool) -> None:
    cluster = mesh({"env": "prod", "team": "a"}).build()
    assert (ObjectKey("shop", "web") in desired_auto_fences(cluster, options)) is in_scope


def test_plan_creates_deletes_and_never_touches_manual_fences() -> None:
    cluster = mesh({"slime.io/serviceFenced": "true"}).service("api", "shop").build()
    auto = {"app.kubernetes.io/created-by": "fence-controller", "team": "x"}
    existing = [
        {"metadata": {"name": "api", "namespace": "shop", "labels": auto}},  # still wanted: kept
        {"metadata": {"name": "gone", "namespace": "shop", "labels": auto}},  # Service gone: deleted
        {"metadata": {"name": "manual", "namespace": "shop", "labels": {"team": "x"}}},  # manual: untouched
    ]
    result = plan(cluster, existing, ON)
    assert [(f["metadata"]["namespace"], f["metadata"]["name"]) for f in result.create] == [("shop", "web")]
    assert result.delete == (ObjectKey("shop", "gone"),)


@pytest.mark.parametrize(
    ("labels", "revs", "strict", "expected"),
    [
        ({}, (), False, True),
        ({"istio.io/rev": "canary"}, (), True, True),
        ({}, ("canary",), False, True),
        ({}, ("canary",), True, False),
        ({"istio.io/rev": "canary"}, ("stable", "canary"), True, True),
        ({"istio.io/rev": "old"}, ("canary",), False, False),
    ],
)
def test_revision_scope(labels, revs, strict, expected) -> None:
    assert revision_in_scope(labels, AutoFenceOptions(istio_revs=revs, strict_rev=strict)) is expected


@pytest.mark.parametrize(
    ("ns_labels", "svc_labels", "default_fence"),
    [
        ({}, {}, False),
        ({}, {}, True),
        ({"slime.io/serviceFenced": "true"}, {}, False),
        ({"slime.io/serviceFenced": "false"}, {}, True),
        ({}, {"app": "web", "slime.io/serviceFenced": "true"}, False),
        ({"slime.io/serviceFenced": "true"}, {"app": "web", "slime.io/serviceFenced": "false"}, True),
    ],
)
def test_would_create_agrees_with_the_fences_autofence_wants(
    ns_labels: dict, svc_labels: dict, default_fence: bool
) -> None:
    """The per-key question the resolver asks and the leader's whole-cluster answer never differ."""
    cluster = mesh(ns_labels, svc_labels).build()
    options = AutoFenceOptions(enabled=True, default_fence=default_fence)
    wanted = set(desired_auto_fences(cluster, options))
    for key in [*cluster.services, ObjectKey("shop", "nothing")]:
        assert would_create(key, cluster, options) is (key in wanted), key
    assert not would_create(ObjectKey("shop", "web"), cluster, AutoFenceOptions(default_fence=True))


def test_would_create_workload_fences_only_for_running_pods() -> None:
    workloads = WorkloadFences("tier", "role")
    cluster = (
        mesh()
        .pod("front-1", "shop", labels={"tier": "front"}, ip="10.1.0.1")
        .pod("back-1", "shop", labels={"tier": "back"})  # no IP: not running
        .build()
    )
    options = AutoFenceOptions(enabled=True, workload_fences=workloads)
    assert set(desired_auto_fences(cluster, options)) == {ObjectKey("shop", "role-front.workload.identity")}
    assert would_create(ObjectKey("shop", "role-front.workload.identity"), cluster, options)
    assert not would_create(ObjectKey("shop", "role-back.workload.identity"), cluster, options)
