"""Wormhole ports and the leader's fallback objects."""

from __future__ import annotations

import yaml

from lazystream.domain.cluster import ClusterState
from lazystream.domain.envoyfilters import FallbackOptions
from lazystream.domain.wormhole import (
    PortRules,
    next_ports,
    ports_in_config_map,
    render_config_map,
    render_fallback_objects,
    render_service,
    service_http_ports,
)
from lazystream.testing import ClusterBuilder


def cluster_with_ports() -> ClusterState:
    builder = (
        ClusterBuilder()
        .service("web", "a", ports=[("http-web", 8080), ("tcp-db", 5432), ("http", 9080)])
        .service("grpc", "a", ports=[("grpc-api", 7070), ("http2", 7071), ("grpc-web", 7072)])
        .service("plain", "b", ports=[("https", 8443), ("httpx", 8444), ("web", 8081)])
        .service("global-sidecar", "mesh-operator", ports=[("http-9999", 9999)])
    )
    return ClusterState.from_objects(builder.objects(), "cluster.local")


def test_http_ports_follow_slimes_name_rule() -> None:
    cluster = cluster_with_ports()
    assert service_http_ports(cluster, support_h2=False) == {8080, 9080, 9999}
    assert service_http_ports(cluster, support_h2=True) == {8080, 9080, 9999, 7070, 7071, 7072}


def test_the_global_sidecars_own_service_is_not_a_use_of_a_port() -> None:
    assert service_http_ports(cluster_with_ports(), False, skip=["mesh-operator"]) == {8080, 9080}


def test_port_set_without_auto_port_is_wormhole_port_and_the_gs_port() -> None:
    rules = PortRules(wormhole_ports=(9080,))
    assert next_ports({1234}, {8080}, rules, FallbackOptions()) == {80, 9080}


def test_auto_port_only_adds_without_cleanup() -> None:
    rules = PortRules(wormhole_ports=(9080,), auto_port=True)
    assert next_ports({1234}, {8080}, rules, FallbackOptions()) == {80, 1234, 8080, 9080}


def test_auto_port_with_cleanup_keeps_ports_in_use_and_the_static_ones() -> None:
    rules = PortRules(wormhole_ports=(9080,), auto_port=True, cleanup=True)
    assert next_ports({1234, 8080}, {8080}, rules, FallbackOptions(global_sidecar_port=81)) == {
        81,
        8080,
        9080,
    }


def test_config_map_round_trip() -> None:
    config_map = render_config_map("mesh-operator", [9080, 80, 9080])
    assert config_map["metadata"]["labels"] == {"lazyload.slime.io/config": "global-sidecar"}
    assert yaml.safe_load(config_map["data"]["cfg"]) == {"wormholePorts": [80, 9080]}
    assert ports_in_config_map(config_map) == {80, 9080}


def test_unreadable_config_maps_hold_no_ports() -> None:
    assert ports_in_config_map(None) == frozenset()
    assert ports_in_config_map({"data": {"cfg": "wormholePorts: [80, x, 0, true, '90']"}}) == {80, 90}
    assert ports_in_config_map({"data": {"cfg": ": : :"}}) == frozenset()
    assert ports_in_config_map({"data": {"cfg": "- 80"}}) == frozenset()


def test_service_lists_every_port_and_is_never_fenced() -> None:
    service = render_service("mesh-operator", [9080, 80], {"app": "global-sidecar"})
    assert service["metadata"]["labels"] == {"slime.io/serviceFenced": "false"}
    assert service["spec"] == {
        "selector": {"app": "global-sidecar"},
        "ports": [
            {"name": "http-80", "port": 80, "protocol": "TCP", "targetPort": 80},
            {"name": "http-9080", "port": 9080, "protocol": "TCP", "targetPort": 9080},
        ],
    }


def test_cluster_mode_objects() -> None:
    objects = render_fallback_objects([9080], FallbackOptions())
    assert [(o["kind"], o["metadata"]["namespace"]) for o in objects] == [
        ("ConfigMap", "mesh-operator"),
        ("Service", "mesh-operator"),
        ("EnvoyFilter", "istio-system"),
    ]
    assert [p["port"] for p in objects[1]["spec"]["ports"]] == [80, 9080]


def test_namespace_mode_objects_one_set_per_namespace() -> None:
    options = FallbackOptions(global_sidecar_mode="namespace", namespaces=("b", "a"))
    objects = render_fallback_objects([9080], options)
    assert [(o["kind"], o["metadata"]["namespace"]) for o in objects] == [
        ("ConfigMap", "a"),
        ("Service", "a"),
        ("ConfigMap", "b"),
        ("Service", "b"),
        ("EnvoyFilter", "a"),
        ("EnvoyFilter", "b"),
    ]
    for envoy_filter in objects[4:]:
        ns = envoy_filter["metadata"]["namespace"]
        routes = envoy_filter["spec"]["configPatches"][1]["patch"]["value"]["virtual_hosts"][-1]["routes"]
        assert routes[-1]["route"]["cluster"] == f"outbound|80||global-sidecar.{ns}.svc.cluster.local"
        headers = {h["header"]["key"]: h["header"]["value"] for h in routes[-1]["request_headers_to_add"]}
        assert headers["Slime-Source-Ns"] == ns
