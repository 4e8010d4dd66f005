"""Offline render: the same pipeline as the worker, over a cluster and access records."""

from __future__ import annotations

from lazystream.domain.autofence import AutoFenceOptions
from lazystream.domain.render import RenderOptions, render
from lazystream.testing import ClusterBuilder, istio_text_line
from tests.domain.test_fences import NOW, TUTORIAL_LINES, tutorial_cluster


def kinds_and_names(items: list[dict]) -> list[tuple[str, str, str]]:
    return [(i["kind"], i["metadata"]["namespace"], i["metadata"]["name"]) for i in items]


def test_tutorial_end_to_end() -> None:
    objects = tutorial_cluster().objects()
    result = render(objects, [line.encode() for line in TUTORIAL_LINES], RenderOptions(), NOW)
    assert kinds_and_names(result.items) == [
        ("ServiceFence", "default", "productpage"),
        ("Sidecar", "default", "productpage"),
        ("EnvoyFilter", "istio-system", "to-global-sidecar"),
    ]
    fence, sidecar, _ = result.items
    assert sorted(fence["status"]["domains"]) == [
        "details.default.svc.cluster.local",
        "reviews.default.svc.cluster.local",
    ]
    assert fence["spec"] == {"enable": True, "workloadSelector": {"fromService": True}}  # spec untouched
    assert sidecar["spec"]["egress"][0]["hosts"] == [
        "*/details.default.svc.cluster.local",
        "*/reviews.default.svc.cluster.local",
        "istio-system/*",
        "mesh-operator/*",
    ]
    assert result.outcomes == {"learned": 2}


def test_existing_metric_status_is_kept_and_dead_letters_counted() -> None:
    objects = tutorial_cluster().objects()
    objects[-1] = {
        **objects[-1],
        "status": {"metricStatus": {'{destination_service="ratings.default.svc.cluster.local"}': "1"}},
    }
    result = render(objects, [TUTORIAL_LINES[0].encode(), b"garbage", b"{}"], RenderOptions(), NOW)
    fence = result.items[0]
    assert sorted(fence["status"]["metricStatus"]) == [
        '{destination_service="details.default.svc.cluster.local"}',
        '{destination_service="ratings.default.svc.cluster.local"}',
    ]
    assert result.outcomes == {
        "learned": 1,
        "dead_letter:unrecognised_line": 1,
        "dead_letter:unknown_format": 1,
    }


def test_autofence_creates_fences_that_learn() -> None:
    builder = (
        ClusterBuilder()
        .namespace("shop", {"slime.io/serviceFenced": "true"})
        .service("web", "shop", ips=["10.1.0.5"])
        .service("api", "shop", ips=["10.1.0.6"])
        .namespace("mesh-operator")
        .global_sidecar()
    )
    line = istio_text_line(
        authority="api", upstream_cluster="inbound|80||", downstream_remote_address="10.1.0.5:1"
    )
    options = RenderOptions(autofence=AutoFenceOptions(enabled=True))
    result = render(builder.objects(), [line.encode()], options, NOW)
    assert kinds_and_names(result.items) == [
        ("ServiceFence", "shop", "api"),
        ("ServiceFence", "shop", "web"),
        ("Sidecar", "shop", "api"),
        ("Sidecar", "shop", "web"),
        ("EnvoyFilter", "istio-system", "to-global-sidecar"),
    ]
    web = result.items[1]
    assert web["metadata"]["labels"] == {"app.kubernetes.io/created-by": "fence-controller"}
    assert list(web["status"]["domains"]) == ["api.shop.svc.cluster.local"]


def test_auto_port_adds_http_ports() -> None:
    builder = tutorial_cluster().service(
        "grpc-svc", ports=[("grpc-api", 7070), ("http-web", 8081), ("tcp-db", 5432)]
    )
    plain = render(builder.objects(), [], RenderOptions(wormhole_ports=("9080",)), NOW)
    auto = render(builder.objects(), [], RenderOptions(wormhole_ports=("9080",), auto_port=True), NOW)
    h2 = render(builder.objects(), [], RenderOptions(auto_port=True, support_h2=True), NOW)

    def ports(result) -> list[str]:
        patches = result.items[-1]["spec"]["configPatches"]
        return sorted({p["match"]["routeConfiguration"]["name"] for p in patches}, key=int)

    assert ports(plain) == ["80", "9080"]
    assert ports(auto) == ["80", "8081", "9080"]  # the bookinfo ports are named "http"
    assert ports(h2) == ["80", "7070", "8081", "9080"]


def revision_mesh() -> ClusterBuilder:
    """Three manual fences in ``shop``: of revision 1-30, of no revision, of revision canary."""
    builder = ClusterBuilder().namespace("mesh-operator").global_sidecar()
    for name, ip in (("old", "10.1.0.5"), ("plain", "10.1.0.6"), ("new", "10.1.0.7"), ("api", "10.1.0.8")):
        builder.service(name, "shop", ips=[ip])
    builder.fence("old", "shop").fence("plain", "shop").fence("new", "shop")
    for obj in builder.objects():
        if obj["kind"] == "ServiceFence" and obj["metadata"]["name"] != "plain":
            rev = "1-30" if obj["metadata"]["name"] == "old" else "canary"
            obj["metadata"]["labels"] = {"istio.io/rev": rev}
    return builder


def fenced(items: list[dict]) -> dict[str, set[str]]:
    return {
        kind: {i["metadata"]["name"] for i in items if i["kind"] == kind}
        for kind in ("ServiceFence", "Sidecar")
    }


def test_istio_rev_scopes_existing_fences_and_strict_rev_drops_unlabelled_ones() -> None:
    lines = [
        istio_text_line(authority="api", upstream_cluster="inbound|80||", downstream_remote_address=f"{ip}:1")
        for ip in ("10.1.0.5", "10.1.0.6", "10.1.0.7")
    ]
    objects = revision_mesh().objects()
    for revs, strict, expected in (
        ((), False, {"old", "plain", "new"}),
        (("1-30",), False, {"old", "plain"}),
        (("1-30",), True, {"old"}),
        (("1-30", "canary"), True, {"old", "new"}),
    ):
        options = RenderOptions(autofence=AutoFenceOptions(istio_revs=revs, strict_rev=strict))
        result = render(objects, [line.encode() for line in lines], options, NOW)
        assert fenced(result.items) == {"ServiceFence": expected, "Sidecar": expected}, (revs, strict)
        for item in result.items:
            if item["kind"] == "Sidecar" and item["metadata"]["name"] != "plain":  # the fence's revision
                assert item["metadata"]["labels"]["istio.io/rev"] in ("1-30", "canary")


def test_self_resource_rev_labels_auto_fences_and_keeps_them_in_scope_under_strict_rev() -> None:
    builder = ClusterBuilder().namespace("shop", {"slime.io/serviceFenced": "true"}).service("web", "shop")
    options = RenderOptions(
        autofence=AutoFenceOptions(
            enabled=True, self_resource_rev="1-30", istio_revs=("1-30",), strict_rev=True
        )
    )
    result = render(builder.objects(), [], options, NOW)
    (fence,) = [i for i in result.items if i["kind"] == "ServiceFence"]
    assert fence["metadata"]["labels"]["istio.io/rev"] == "1-30"
    assert fenced(result.items) == {"ServiceFence": {"web"}, "Sidecar": {"web"}}
