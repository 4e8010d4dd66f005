"""Workload fences (``fenceLabelKeyAlias``): which fences autoFence wants, and whom calls are charged to."""

from __future__ import annotations

from lazystream.domain.autofence import AutoFenceOptions, plan
from lazystream.domain.cluster import ObjectKey
from lazystream.domain.records import AccessRecord, RecordFormat
from lazystream.domain.resolution import ResolveOptions, resolve
from lazystream.domain.workloads import WorkloadFences
from lazystream.testing import ClusterBuilder

WORKLOADS = WorkloadFences.parse("tier:role")
assert WORKLOADS is not None


def test_parse_and_names() -> None:
    assert WorkloadFences.parse("") is None
    assert WorkloadFences.parse("app") == WorkloadFences("app", "app")
    assert WORKLOADS.fence_name("front") == "role-front.workload.identity"
    assert WORKLOADS.fence_name("Front_End") is None  # not a Kubernetes object name: no fence


def cluster() -> ClusterBuilder:
    builder = ClusterBuilder().namespace("shop")
    builder.pod("front-1", "shop", labels={"tier": "front"}, ip="10.1.0.1")
    builder.pod("front-2", "shop", labels={"tier": "front"}, ip="10.1.0.2")
    builder.pod("pending", "shop", labels={"tier": "batch"})  # no IP yet: no fence
    builder.pod("other", "shop", labels={"app": "x"}, ip="10.1.0.3")
    builder.service("cart", "shop", selector={"app": "cart"})
    return builder


def test_autofence_wants_a_fence_per_label_value_with_running_pods() -> None:
    options = AutoFenceOptions(enabled=True, workload_fences=WORKLOADS)
    result = plan(cluster().build(), [], options)
    created = {(f["metadata"]["name"], str(f["spec"])) for f in result.create}
    assert (
        "role-front.workload.identity",
        str({"enable": True, "workloadSelector": {"labels": {"tier": "front"}}}),
    ) in created
    assert all("batch" not in name for name, _ in created)
    # the last pod gone: the auto-created workload fence goes
    existing = [{**f, "metadata": {**f["metadata"]}} for f in result.create]
    empty = ClusterBuilder().namespace("shop").service("cart", "shop", selector={"app": "cart"}).build()
    assert ObjectKey("shop", "role-front.workload.identity") in plan(empty, existing, options).delete


def test_calls_are_charged_to_the_workload_fence_too() -> None:
    builder = cluster()
    builder.service("front", "shop", selector={"tier": "front"}, ips=["10.1.0.1"])
    builder.fence("front", "shop", workloadSelector={"fromService": True})
    builder.fence("role-front.workload.identity", "shop", workloadSelector={"labels": {"tier": "front"}})
    state = builder.build()
    record = AccessRecord(
        RecordFormat.GLOBAL_SIDECAR, "cart", None, "10.1.0.1:5555", event_time=1.0, x_forwarded_for=None
    )
    with_workloads = resolve(record, state, ResolveOptions(workload_fences=WORKLOADS))
    assert sorted(e.fence.name for e in with_workloads.edges) == ["front", "role-front.workload.identity"]
    assert {e.host for e in with_workloads.edges} == {"cart.shop.svc.cluster.local"}
    without = resolve(record, state, ResolveOptions())
    assert [e.fence.name for e in without.edges] == ["front"]
