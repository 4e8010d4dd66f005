"""The fallback EnvoyFilters, checked patch by patch against Slime's and lazystream's rules."""

from __future__ import annotations

from lazystream.domain.envoyfilters import DispatchRule, FallbackOptions, render_envoy_filters, wormhole_ports

GS = "outbound|80||global-sidecar.mesh-operator.svc.cluster.local"
HEADERS = [
    {"append": False, "header": {"key": "Slime-Orig-Dest", "value": "%DOWNSTREAM_LOCAL_ADDRESS%"}},
    {"append": False, "header": {"key": "Slime-Source-Ns", "value": "%ENVIRONMENT(POD_NAMESPACE)%"}},
]
GS_PROXY = {"metadata": {"SLIME_APP": "LAZYLOAD_GLOBAL_SIDECAR"}}


def patches_for(envoy_filter: dict, port: str) -> list[dict]:
    return [p for p in envoy_filter["spec"]["configPatches"] if _port(p) == port]


def _port(patch: dict) -> str:
    match = patch["match"]
    if "routeConfiguration" in match:
        return match["routeConfiguration"]["name"]
    return match["listener"]["name"].removeprefix("0.0.0.0_")


def test_wormhole_ports_always_include_the_global_sidecar_port() -> None:
    assert wormhole_ports(["9080", 8080, "9080"], FallbackOptions()) == [80, 8080, 9080]
    assert wormhole_ports([], FallbackOptions(global_sidecar_port=8000)) == [8000]


def test_cluster_mode_default() -> None:
    (ef,) = render_envoy_filters([9080], FallbackOptions())
    assert ef["apiVersion"] == "networking.istio.io/v1alpha3"
    assert ef["kind"] == "EnvoyFilter"
    assert ef["metadata"] == {"name": "to-global-sidecar", "namespace": "istio-system"}
    assert "workloadSelector" not in ef["spec"]  # applies to every proxy
    assert sorted({_port(p) for p in ef["spec"]["configPatches"]}) == ["80", "9080"]
    remove, merge, gs_remove, gs_merge = patches_for(ef, "9080")
    # 1. Envoy's allow_any passthrough goes
    assert remove == {
        "applyTo": "VIRTUAL_HOST",
        "match": {
            "context": "SIDECAR_OUTBOUND",
            "routeConfiguration": {"name": "9080", "vhost": {"name": "allow_any"}},
        },
        "patch": {"operation": "REMOVE"},
    }
    # 2. everything unlisted goes to the global-sidecar, with both headers and no route timeout
    assert merge == {
        "applyTo": "ROUTE_CONFIGURATION",
        "match": {"context": "SIDECAR_OUTBOUND", "routeConfiguration": {"name": "9080"}},
        "patch": {
            "operation": "MERGE",
            "value": {
                "virtual_hosts": [
                    {
                        "name": "allow_all",
                        "domains": ["*"],
                        "routes": [
                            {
                                "match": {"prefix": "/"},
                                "route": {"cluster": GS, "timeout": "0s"},
                                "request_headers_to_add": HEADERS,
                            }
                        ],
                    }
                ]
            },
        },
    }
    # 4. the loop guard: on the global-sidecar's own proxy, allow_all goes and passthrough comes back
    assert gs_remove == {
        "applyTo": "VIRTUAL_HOST",
        "match": {
            "context": "SIDECAR_OUTBOUND",
            "proxy": GS_PROXY,
            "routeConfiguration": {"name": "9080", "vhost": {"name": "allow_all"}},
        },
        "patch": {"operation": "REMOVE"},
    }
    assert gs_merge["match"] == {
        "context": "SIDECAR_OUTBOUND",
        "proxy": GS_PROXY,
        "routeConfiguration": {"name": "9080"},
    }
    assert gs_merge["patch"]["value"]["virtual_hosts"] == [
        {
            "name": "allow_any_new",
            "domains": ["*"],
            "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "PassthroughCluster", "timeout": "0s"}}
            ],
        }
    ]


def test_dispatches_passthrough_by_default_and_proxy_version() -> None:
    # tutorial "自定义兜底流量分派": external domains to an egress, short names by regex to the global-sidecar
    options = FallbackOptions(
        dispatches=(
            DispatchRule("bar", ("www.bar.com",), "outbound|80||egress1.testns.svc.cluster.local"),
            DispatchRule("short", (), "_GLOBAL_SIDECAR", r"^(?:[^.])+$"),
            DispatchRule("svc", ("*.svc.cluster.local",), "_GLOBAL_SIDECAR"),
        ),
        passthrough_by_default=True,
        proxy_version="^1\\.2[0-9].*",
    )
    (ef,) = render_envoy_filters([], options)
    remove, merge, gs_remove_all, gs_remove_bar, gs_remove_svc, gs_merge = patches_for(ef, "80")
    assert remove["match"]["proxy"] == {"proxyVersion": "^1\\.2[0-9].*"}
    assert merge["match"]["proxy"] == {"proxyVersion": "^1\\.2[0-9].*"}
    bar, svc, allow_all = merge["patch"]["value"]["virtual_hosts"]
    assert bar == {
        "name": "bar",
        "domains": ["www.bar.com"],
        "routes": [
            {
                "match": {"prefix": "/"},
                "route": {"cluster": "outbound|80||egress1.testns.svc.cluster.local", "timeout": "0s"},
            }
        ],
    }
    assert svc["routes"][0]["route"]["cluster"] == GS
    assert svc["routes"][0]["request_headers_to_add"] == HEADERS
    regex_route, final = allow_all["routes"]
    assert regex_route["match"] == {
        "prefix": "/",
        "headers": [
            {"name": ":authority", "string_match": {"safe_regex": {"google_re2": {}, "regex": "^(?:[^.])+$"}}}
        ],
    }
    assert regex_route["route"] == {"cluster": GS, "timeout": "0s"}
    assert final == {"match": {"prefix": "/"}, "route": {"cluster": "PassthroughCluster", "timeout": "0s"}}
    # the loop guard removes every plain dispatch vhost too, and carries no proxyVersion
    assert [
        p["match"]["routeConfiguration"]["vhost"]["name"]
        for p in (gs_remove_all, gs_remove_bar, gs_remove_svc)
    ] == [
        "allow_all",
        "bar",
        "svc",
    ]
    assert all(
        p["match"]["proxy"] == GS_PROXY for p in (gs_remove_all, gs_remove_bar, gs_remove_svc, gs_merge)
    )


def test_env_header_via_lua() -> None:
    (ef,) = render_envoy_filters([], FallbackOptions(add_env_header_via_lua=True))
    _remove, merge, lua_filter, lua_route, *_ = patches_for(ef, "80")
    route = merge["patch"]["value"]["virtual_hosts"][0]["routes"][0]
    assert route["request_headers_to_add"] == HEADERS[:1]  # Slime-Source-Ns comes from Lua instead
    assert lua_filter["applyTo"] == "HTTP_FILTER"
    assert lua_filter["match"]["listener"]["name"] == "0.0.0.0_80"
    assert lua_filter["patch"]["operation"] == "INSERT_BEFORE"
    code = lua_filter["patch"]["value"]["typed_config"]["source_codes"]["add.lua"]["inline_string"]
    assert 'replace("Slime-Source-Ns", os.getenv("POD_NAMESPACE"))' in code
    assert lua_route["applyTo"] == "HTTP_ROUTE"
    assert lua_route["match"]["routeConfiguration"] == {"name": "80", "vhost": {"name": "allow_all"}}
    assert (
        lua_route["patch"]["value"]["typed_per_filter_config"]["envoy.filters.http.lua"]["name"] == "add.lua"
    )


def test_namespace_mode_one_filter_per_namespace_with_literal_source_namespace() -> None:
    options = FallbackOptions(
        global_sidecar_mode="namespace", namespaces=("shop", "default"), revision="canary"
    )
    filters = render_envoy_filters([9080], options)
    assert [(f["metadata"]["namespace"], f["metadata"]["labels"]) for f in filters] == [
        ("default", {"istio.io/rev": "canary"}),
        ("shop", {"istio.io/rev": "canary"}),
    ]
    shop = filters[1]
    merge = patches_for(shop, "9080")[1]
    route = merge["patch"]["value"]["virtual_hosts"][0]["routes"][0]
    assert route["route"]["cluster"] == "outbound|80||global-sidecar.shop.svc.cluster.local"
    assert route["request_headers_to_add"][1] == {
        "append": False,
        "header": {"key": "Slime-Source-Ns", "value": "shop"},
    }
    # Lua is a cluster-mode workaround only
    lua = render_envoy_filters(
        [],
        FallbackOptions(global_sidecar_mode="namespace", namespaces=("shop",), add_env_header_via_lua=True),
    )
    assert all(p["applyTo"] != "HTTP_FILTER" for p in lua[0]["spec"]["configPatches"])


def test_cluster_gs_namespace_and_port() -> None:
    (ef,) = render_envoy_filters([], FallbackOptions(cluster_gs_namespace="gs", global_sidecar_port=8080))
    merge = patches_for(ef, "8080")[1]
    assert merge["patch"]["value"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == (
        "outbound|8080||global-sidecar.gs.svc.cluster.local"
    )


def test_every_fallback_filter_sets_an_explicit_priority() -> None:
    """istioctl analyze (IST0151) warns that relative patches without a priority may not be applied."""
    for options in (
        FallbackOptions(),
        FallbackOptions(global_sidecar_mode="namespace", namespaces=("a", "b")),
    ):
        filters = render_envoy_filters(["9080"], options)
        assert filters
        assert all(f["spec"]["priority"] > 0 for f in filters)
