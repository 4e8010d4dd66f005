"""Rendering the fallback ``to-global-sidecar`` EnvoyFilter(s).

For every wormhole port (and the global-sidecar's own port), calls that match no listed service leave the
caller's sidecar for the global-sidecar instead of Envoy's ``allow_any`` passthrough, carrying the original
destination and the caller's namespace in Slime's two headers. Dispatch rules can send chosen domains
elsewhere, and the global-sidecar's own proxy is patched never to route to itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lazystream.domain.hosts import service_fqdn

ENVOY_FILTER_API_VERSION = "networking.istio.io/v1alpha3"
NAME = "to-global-sidecar"
GLOBAL_SIDECAR_CLUSTER = "_GLOBAL_SIDECAR"
PASSTHROUGH = "PassthroughCluster"
ORIG_DEST_HEADER = "Slime-Orig-Dest"
SOURCE_NS_HEADER = "Slime-Source-Ns"
GS_PROXY_METADATA = {"SLIME_APP": "LAZYLOAD_GLOBAL_SIDECAR"}
PRIORITY = 10
"""``spec.priority``: applied after EnvoyFilters of the default priority 0, in a defined order. Without one,
istioctl analyze warns (IST0151) that relative patches (INSERT_BEFORE, INSERT_FIRST) may not be applied."""
LUA_CODE = (
    "function envoy_on_request(request_handle)\n"
    '  request_handle:headers():replace("Slime-Source-Ns", os.getenv("POD_NAMESPACE"))\n'
    "end\n"
)


@dataclass(frozen=True, slots=True)
class DispatchRule:
    """``general.dispatches[i]`` with its cluster already rendered (templates resolved by the config)."""

    name: str
    domains: tuple[str, ...] = ()
    cluster: str = GLOBAL_SIDECAR_CLUSTER
    domain_regex: str | None = None


@dataclass(frozen=True, slots=True)
class FallbackOptions:
    cluster_domain: str = "cluster.local"
    istio_namespace: str = "istio-system"
    global_sidecar_mode: str = "cluster"
    cluster_gs_namespace: str = "mesh-operator"
    namespaces: tuple[str, ...] = ()
    """Namespace mode: the namespaces that get their own global-sidecar and EnvoyFilter."""
    global_sidecar_port: int = 80
    dispatches: tuple[DispatchRule, ...] = ()
    passthrough_by_default: bool = False
    add_env_header_via_lua: bool = False
    proxy_version: str | None = None
    revision: str | None = None
    """``global.selfResourceRev``: set as the ``istio.io/rev`` label of lazystream's EnvoyFilters."""


def wormhole_ports(ports: Iterable[int | str], options: FallbackOptions) -> list[int]:
    """The fallback ports: the given ones plus the global-sidecar's own port, ascending."""
    return sorted({int(p) for p in ports} | {options.global_sidecar_port})


def render_envoy_filters(ports: Iterable[int | str], options: FallbackOptions) -> list[dict[str, Any]]:
    """Cluster mode: one EnvoyFilter in Istio's namespace. Namespace mode: one per listed namespace."""
    port_list = wormhole_ports(ports, options)
    if options.global_sidecar_mode == "namespace":
        return [_envoy_filter(ns, port_list, options, gs_namespace=ns) for ns in sorted(options.namespaces)]
    return [
        _envoy_filter(options.istio_namespace, port_list, options, gs_namespace=options.cluster_gs_namespace)
    ]


def _envoy_filter(
    namespace: str, ports: list[int], options: FallbackOptions, *, gs_namespace: str
) -> dict[str, Any]:
    namespace_mode = options.global_sidecar_mode == "namespace"
    gs_host = service_fqdn("global-sidecar", gs_namespace, options.cluster_domain)
    gs_cluster = f"outbound|{options.global_sidecar_port}||{gs_host}"
    # cluster mode: the caller's namespace from its environment (or Lua); namespace mode: the literal one
    source_ns = (
        gs_namespace
        if namespace_mode
        else None
        if options.add_env_header_via_lua
        else "%ENVIRONMENT(POD_NAMESPACE)%"
    )
    patches: list[dict[str, Any]] = []
    for port in ports:
        patches += _port_patches(
            str(port),
            gs_cluster,
            source_ns,
            options,
            lua=options.add_env_header_via_lua and not namespace_mode,
        )
    metadata: dict[str, Any] = {"name": NAME, "namespace": namespace}
    if options.revision:
        metadata["labels"] = {"istio.io/rev": options.revision}
    return {
        "apiVersion": ENVOY_FILTER_API_VERSION,
        "kind": "EnvoyFilter",
        "metadata": metadata,
        "spec": {"priority": PRIORITY, "configPatches": patches},
    }


def _headers(source_ns: str | None) -> list[dict[str, Any]]:
    headers = [{"append": False, "header": {"key": ORIG_DEST_HEADER, "value": "%DOWNSTREAM_LOCAL_ADDRESS%"}}]
    if source_ns is not None:
        headers.append({"append": False, "header": {"key": SOURCE_NS_HEADER, "value": source_ns}})
    return headers


def _route(cluster: str, gs_cluster: str, source_ns: str | None, match: dict[str, Any]) -> dict[str, Any]:
    target = gs_cluster if cluster == GLOBAL_SIDECAR_CLUSTER else cluster
    route: dict[str, Any] = {"match": match, "route": {"cluster": target, "timeout": "0s"}}
    if target == gs_cluster:
        route["request_headers_to_add"] = _headers(source_ns)
    return route


def _match(
    port: str, options: FallbackOptions, *, vhost: str | None = None, gs_proxy: bool = False
) -> dict[str, Any]:
    match: dict[str, Any] = {"context": "SIDECAR_OUTBOUND"}
    if gs_proxy:
        match["proxy"] = {"metadata": dict(GS_PROXY_METADATA)}
    elif options.proxy_version:
        match["proxy"] = {"proxyVersion": options.proxy_version}
    route_configuration: dict[str, Any] = {"name": port}
    if vhost is not None:
        route_configuration["vhost"] = {"name": vhost}
    match["routeConfiguration"] = route_configuration
    return match


def _port_patches(
    port: str, gs_cluster: str, source_ns: str | None, options: FallbackOptions, *, lua: bool
) -> list[dict[str, Any]]:
    prefix = {"prefix": "/"}
    plain = [d for d in options.dispatches if not d.domain_regex]
    regex = [d for d in options.dispatches if d.domain_regex]
    dispatch_hosts = [
        {
            "name": d.name,
            "domains": list(d.domains),
            "routes": [_route(d.cluster, gs_cluster, source_ns, dict(prefix))],
        }
        for d in plain
    ]
    allow_all_routes = [
        _route(
            d.cluster,
            gs_cluster,
            source_ns,
            {
                "prefix": "/",
                "headers": [
                    {
                        "name": ":authority",
                        "string_match": {"safe_regex": {"google_re2": {}, "regex": d.domain_regex}},
                    }
                ],
            },
        )
        for d in regex
    ]
    final = PASSTHROUGH if options.passthrough_by_default else GLOBAL_SIDECAR_CLUSTER
    allow_all_routes.append(_route(final, gs_cluster, source_ns, dict(prefix)))
    patches: list[dict[str, Any]] = [
        {
            "applyTo": "VIRTUAL_HOST",
            "match": _match(port, options, vhost="allow_any"),
            "patch": {"operation": "REMOVE"},
        },
        {
            "applyTo": "ROUTE_CONFIGURATION",
            "match": _match(port, options),
            "patch": {
                "operation": "MERGE",
                "value": {
                    "virtual_hosts": [
                        *dispatch_hosts,
                        {"name": "allow_all", "domains": ["*"], "routes": allow_all_routes},
                    ]
                },
            },
        },
    ]
    if lua:
        patches += _lua_patches(port, options)
    # the global-sidecar's own proxy: never route to itself (loop guard)
    patches.append(
        {
            "applyTo": "VIRTUAL_HOST",
            "match": _match(port, options, vhost="allow_all", gs_proxy=True),
            "patch": {"operation": "REMOVE"},
        }
    )
    patches += [
        {
            "applyTo": "VIRTUAL_HOST",
            "match": _match(port, options, vhost=d.name, gs_proxy=True),
            "patch": {"operation": "REMOVE"},
        }
        for d in plain
    ]
    patches.append(
        {
            "applyTo": "ROUTE_CONFIGURATION",
            "match": _match(port, options, gs_proxy=True),
            "patch": {
                "operation": "MERGE",
                "value": {
                    "virtual_hosts": [
                        {
                            "name": "allow_any_new",
                            "domains": ["*"],
                            "routes": [
                                {"match": {"prefix": "/"}, "route": {"cluster": PASSTHROUGH, "timeout": "0s"}}
                            ],
                        }
                    ]
                },
            },
        }
    )
    return patches


def _lua_patches(port: str, options: FallbackOptions) -> list[dict[str, Any]]:
    """``addEnvHeaderViaLua``: set ``Slime-Source-Ns`` from the proxy's environment with a Lua filter, for
    Envoy versions that reject ``%ENVIRONMENT(...)%`` in headers."""
    proxy = {"proxy": {"proxyVersion": options.proxy_version}} if options.proxy_version else {}
    return [
        {
            "applyTo": "HTTP_FILTER",
            "match": {
                "context": "SIDECAR_OUTBOUND",
                **proxy,
                "listener": {
                    "name": f"0.0.0.0_{port}",
                    "filterChain": {
                        "filter": {
                            "name": "envoy.filters.network.http_connection_manager",
                            "subFilter": {"name": "envoy.filters.http.router"},
                        }
                    },
                },
            },
            "patch": {
                "operation": "INSERT_BEFORE",
                "value": {
                    "name": "envoy.filters.http.lua",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                        "source_codes": {"add.lua": {"inline_string": LUA_CODE}},
                    },
                },
            },
        },
        {
            "applyTo": "HTTP_ROUTE",
            "match": {**_match(port, options, vhost="allow_all")},
            "patch": {
                "operation": "MERGE",
                "value": {
                    "typed_per_filter_config": {
                        "envoy.filters.http.lua": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
                            "name": "add.lua",
                        }
                    }
                },
            },
        },
    ]


def http_port(name: str, protocol: str, support_h2: bool) -> bool:
    """Slime's autoPort rule: a TCP port whose name's part before the first ``-`` is ``http`` (and, with
    ``supportH2``, ``http2`` or ``grpc``); ``appProtocol`` is not consulted."""
    if protocol.upper() != "TCP":
        return False
    prefix = name.split("-", 1)[0]
    return prefix == "http" or (support_h2 and prefix in ("http2", "grpc"))
