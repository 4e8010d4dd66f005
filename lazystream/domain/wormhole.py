"""Wormhole ports and the leader's fallback objects: what the global-sidecar listens on, and where.

A fenced proxy only has a listener (and route config) for a port when some Service it sees uses that port;
the fallback EnvoyFilter patches those listeners. The global-sidecar's Service therefore lists every
wormhole port (each fenced Sidecar includes its namespace), and its ConfigMap tells the proxy which ports to
listen on. The leader keeps three kinds of object in step with one port set:

- the ``to-global-sidecar`` EnvoyFilter(s), rendered by :mod:`lazystream.domain.envoyfilters`;
- the ``global-sidecar`` Service(s), one port per wormhole port;
- the ``global-sidecar`` ConfigMap(s), ``data.cfg`` = ``wormholePorts: [...]``.

In cluster mode there is one global-sidecar (in ``clusterGsNamespace``); in namespace mode one per listed
namespace. The port set is ``wormholePort`` plus the global-sidecar's own port, and with ``autoPort`` the
HTTP ports of the cluster's Services (Slime's name rule, :func:`envoyfilters.http_port`). Without
``cleanupWormholePort`` the set only grows, and it starts from the ports already in the ConfigMaps, so a
restart does not shrink it (slime#279).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from lazystream.domain import envoyfilters
from lazystream.domain.cluster import GLOBAL_SIDECAR_SERVICE, ClusterState

CONFIG_MAP_KEY = "cfg"
CONFIG_MAP_LABEL = {"lazyload.slime.io/config": "global-sidecar"}
"""The label Slime's global-sidecar selects its ConfigMap by."""
SERVICE_LABELS = {"slime.io/serviceFenced": "false"}
"""The global-sidecar is never fenced: its proxy must keep the full mesh config."""
DEFAULT_SELECTOR: Mapping[str, str] = {"app": "global-sidecar"}


@dataclass(frozen=True, slots=True)
class PortRules:
    """How the port set is made (``general.wormholePort``, ``autoPort``, ``supportH2``,
    ``cleanupWormholePort``)."""

    wormhole_ports: tuple[int, ...] = ()
    auto_port: bool = False
    support_h2: bool = False
    cleanup: bool = False


def global_sidecar_namespaces(options: envoyfilters.FallbackOptions) -> list[str]:
    """Where the global-sidecar(s) run: one namespace in cluster mode, each listed one in namespace mode."""
    if options.global_sidecar_mode == "namespace":
        return sorted(set(options.namespaces))
    return [options.cluster_gs_namespace]


def service_http_ports(cluster: ClusterState, support_h2: bool, skip: Iterable[str] = ()) -> frozenset[int]:
    """The HTTP ports of the cluster's Services (Slime's name rule), leaving out the global-sidecar
    Services in the namespaces ``skip`` (their ports are the managed set itself, not a use of a port)."""
    skipped = set(skip)
    return frozenset(
        port.port
        for service in cluster.iter_services()
        if not (service.name == GLOBAL_SIDECAR_SERVICE and service.namespace in skipped)
        for port in service.ports
        if envoyfilters.http_port(port.name, port.protocol, support_h2)
    )


def next_ports(
    previous: Iterable[int], in_use: Iterable[int], rules: PortRules, options: envoyfilters.FallbackOptions
) -> frozenset[int]:
    """The port set now. ``previous`` is the last set (read back from the ConfigMaps at start);
    ``in_use`` the Services' HTTP ports. ``wormholePort`` and the global-sidecar port always stay; with
    ``cleanupWormholePort`` a port no Service uses any more goes, otherwise ports are only added."""
    ports = set(envoyfilters.wormhole_ports(rules.wormhole_ports, options))
    if rules.auto_port:
        ports |= set(in_use)
        if not rules.cleanup:
            ports |= set(previous)
    return frozenset(ports)


def ports_document(ports: Iterable[int]) -> str:
    """``data.cfg`` of the ConfigMap, as the global-sidecar reads it."""
    return yaml.safe_dump({"wormholePorts": sorted(set(ports))}, default_flow_style=False)


def ports_in_config_map(obj: Mapping[str, Any] | None) -> frozenset[int]:
    """The ports a ConfigMap holds; an absent or unreadable ConfigMap holds none (the set is rebuilt)."""
    text = ((obj or {}).get("data") or {}).get(CONFIG_MAP_KEY)
    if not isinstance(text, str):
        return frozenset()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return frozenset()
    listed = data.get("wormholePorts") if isinstance(data, dict) else None
    out = set()
    for value in listed if isinstance(listed, list) else []:
        text_value = str(value).strip()
        if not isinstance(value, bool) and text_value.isdigit() and 0 < int(text_value) < 65536:
            out.add(int(text_value))
    return frozenset(out)


def render_service(namespace: str, ports: Iterable[int], selector: Mapping[str, str]) -> dict[str, Any]:
    """The global-sidecar Service: one ``http-<port>`` port per wormhole port, each to the same port of
    the proxy (it listens on every wormhole port)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": GLOBAL_SIDECAR_SERVICE, "namespace": namespace, "labels": dict(SERVICE_LABELS)},
        "spec": {
            "selector": dict(selector),
            "ports": [
                {"name": f"http-{port}", "port": port, "protocol": "TCP", "targetPort": port}
                for port in sorted(set(ports))
            ],
        },
    }


def render_config_map(namespace: str, ports: Iterable[int]) -> dict[str, Any]:
    """The global-sidecar ConfigMap (``data.cfg``), which the proxy reads its listen ports from."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": GLOBAL_SIDECAR_SERVICE,
            "namespace": namespace,
            "labels": dict(CONFIG_MAP_LABEL),
        },
        "data": {CONFIG_MAP_KEY: ports_document(ports)},
    }


def render_fallback_objects(
    ports: Iterable[int],
    options: envoyfilters.FallbackOptions,
    selector: Mapping[str, str] = DEFAULT_SELECTOR,
) -> list[dict[str, Any]]:
    """Everything the leader keeps in step for one port set: per global-sidecar namespace its ConfigMap
    and Service, then the EnvoyFilter(s). Written in this order, a port is listened on before it is
    routed to."""
    port_list = envoyfilters.wormhole_ports(ports, options)
    objects: list[dict[str, Any]] = []
    for namespace in global_sidecar_namespaces(options):
        objects.append(render_config_map(namespace, port_list))
        objects.append(render_service(namespace, port_list, selector))
    objects += envoyfilters.render_envoy_filters(port_list, options)
    return objects
