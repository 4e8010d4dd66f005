"""Nothing lazystream writes may fail Istio's validation: the egress host rule, and Sidecars rendered with
short names qualified or left out (with the reason, in explain too)."""

from __future__ import annotations

import pytest

from lazystream.domain.cluster import ClusterState
from lazystream.domain.explain import explain_fence
from lazystream.domain.fences import FenceOptions, fence_from_object
from lazystream.domain.istio_rules import egress_host_problem, workload_selector_problem
from lazystream.domain.render import RenderOptions, render
from lazystream.domain.resolution import ResolveOptions
from lazystream.testing import ClusterBuilder
from tests.domain.test_fences import NOW, TUTORIAL_LINES, tutorial_cluster


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("*/reviews.default.svc.cluster.local", None),
        ("istio-system/*", None),
        ("./*", None),
        ("~/*", None),
        ("*/*", None),
        ("*/*.example.com", None),
        ("*/api.Example.com.", None),
        ("*/10.0.0.1", None),
        ("*/reviews", "a short name"),
        ("default/orders", "a short name"),
        ("*/*example.com", "label '*example' is not a DNS-1123 label"),
        ("*/bad_host.example.com", "label 'bad_host' is not a DNS-1123 label"),
        ("*/-a.example.com", "label '-a' is not a DNS-1123 label"),
        ("*/a..example.com", "label '' is not a DNS-1123 label"),
        ("*/" + "a" * 64 + ".com", "is not a DNS-1123 label"),
        ("*/" + "a." * 130 + "com", "longer than 255 characters"),
        ("Default/*", "namespace 'Default' is not"),
        ("reviews.default.svc.cluster.local", "not namespace/host"),
    ],
)
def test_the_egress_host_rule(entry: str, problem: str | None) -> None:
    found = egress_host_problem(entry)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def sidecar_of(result_items: list[dict], name: str) -> dict:
    (sidecar,) = [i for i in result_items if i["kind"] == "Sidecar" and i["metadata"]["name"] == name]
    return sidecar


def test_short_names_in_spec_host_and_stable_hosts_are_qualified_in_the_fences_namespace() -> None:
    cluster = ClusterBuilder().service("orders", "shop").service("cart", "shop")
    cluster.fence("cart", "shop", host={"orders": {"stable": {}}, "bad_name.example.com": {"stable": {}}})
    options = RenderOptions(fences=FenceOptions(stable_hosts=("metrics",)))
    result = render(cluster.objects(), [], options, NOW)
    hosts = sidecar_of(result.items, "cart")["spec"]["egress"][0]["hosts"]
    assert "*/orders.shop.svc.cluster.local" in hosts
    assert "*/metrics.shop.svc.cluster.local" in hosts
    assert all(egress_host_problem(h) is None for h in hosts)
    assert not any("bad_name" in h for h in hosts)


def test_learned_short_names_are_left_out_their_fqdn_listed_and_explain_says_why() -> None:
    options = RenderOptions(resolve=ResolveOptions(enable_short_domain=True))
    objects = tutorial_cluster().objects()
    result = render(objects, [line.encode() for line in TUTORIAL_LINES], options, NOW)
    fence = next(i for i in result.items if i["kind"] == "ServiceFence")
    assert "reviews" in fence["status"]["domains"]  # the status keeps what Slime records
    hosts = sidecar_of(result.items, "productpage")["spec"]["egress"][0]["hosts"]
    assert "*/reviews" not in hosts
    assert "*/reviews.default.svc.cluster.local" in hosts
    assert all(egress_host_problem(h) is None for h in hosts)

    cluster = ClusterState.from_objects([*objects[:-1], fence])
    explained = explain_fence(fence_from_object(fence), None, cluster, FenceOptions(), NOW).to_dict()
    left = {r["host"]: r["reason"] for r in explained["leftOut"]}
    assert left["reviews"].startswith("a short name")
    assert {h["host"]: h["inSidecar"] for h in explained["hosts"]}["reviews"] is False


@pytest.mark.parametrize("short", [False, True])
def test_every_rendered_sidecar_passes_istios_host_rule(short: bool) -> None:
    objects = tutorial_cluster().objects()
    fence = objects[-1]
    fence["spec"]["host"] = {h: {"stable": {}} for h in ("ratings", "UPPER.example.com", "x_y", "*.ok.io")}
    lines = [*TUTORIAL_LINES, *(line.replace('"details:9080"', '"DETAILS:9080"') for line in TUTORIAL_LINES)]
    options = RenderOptions(resolve=ResolveOptions(enable_short_domain=short))
    result = render(objects, [line.encode() for line in lines], options, NOW)
    sidecars = [i for i in result.items if i["kind"] == "Sidecar"]
    assert sidecars
    for item in sidecars:
        hosts = item["spec"]["egress"][0]["hosts"]
        assert [h for h in hosts if egress_host_problem(h)] == []
        assert "*/ratings.default.svc.cluster.local" in hosts
        assert "*/*.ok.io" in hosts


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        ({"app": "web"}, None),
        ({"app.kubernetes.io/name": "web", "version": ""}, None),
        ({"example.com/tier": "front_end.v1"}, None),
        ({}, "whole namespace"),
        ({"app": "*"}, "wildcards"),
        ({"app*": "web"}, "wildcards"),
        ({"": "web"}, "not a valid label name"),
        ({"app": "web server"}, "not a valid label value"),
        ({"app": "-web"}, "not a valid label value"),
        ({"app": "w" * 64}, "not a valid label value"),
        ({"Example.com/tier": "front"}, "prefix is not a DNS subdomain"),
        ({"a/b/c": "front"}, "prefix is not a DNS subdomain"),
    ],
)
def test_workload_selector_rule(labels: dict[str, str], problem: str | None) -> None:
    found = workload_selector_problem(labels)
    assert found is None if problem is None else problem in (found or "")


def test_a_fence_whose_selector_istio_would_refuse_gets_no_sidecar_and_explain_says_why() -> None:
    builder = ClusterBuilder().service("web", "shop", ips=["10.9.0.1"])
    builder.fence("web", "shop", workloadSelector={"labels": {"app": "web server"}})
    builder.fence("open", "shop", workloadSelector={"fromService": True})  # no Service "open"
    result = render(builder.objects(), [], RenderOptions(), NOW)
    assert [o for o in result.items if o["kind"] == "Sidecar"] == []
    cluster = ClusterState.from_objects(builder.objects())
    fences = {o["metadata"]["name"]: o for o in builder.objects() if o["kind"] == "ServiceFence"}
    web = explain_fence(fence_from_object(fences["web"]), None, cluster, FenceOptions(), NOW)
    assert "not a valid label value" in (web.to_dict()["noSidecar"] or "")
    other = explain_fence(fence_from_object(fences["open"]), None, cluster, FenceOptions(), NOW)
    assert "missing or selects nothing" in (other.no_sidecar or "")
