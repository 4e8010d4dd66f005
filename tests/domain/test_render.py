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
