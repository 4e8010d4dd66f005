"""The configuration reaches the domain core's options intact."""

from __future__ import annotations

from pathlib import Path

from lazystream.config import load_config
from lazystream.config.options import render_options

CONFIG = """
apiVersion: config.netease.com/v1alpha1
kind: SlimeBoot
metadata: {name: lazyload, namespace: mesh-operator}
spec:
  namespace: mesh-operator
  module:
    - name: lazyload
      kind: lazyload
      enable: true
      general:
        autoFence: true
        defaultFence: true
        wormholePort: ["9080", "9090"]
        stableHost: [ratings.default.svc.cluster.local]
        enableShortDomain: true
        blackNamespaceList: "kube-system,legacy"
        dispatches:
          - name: bar
            domains: [www.bar.com]
            cluster: "{{ print \\"outbound|80||egress1.\\" .Values.namespace \\".svc.cluster.local\\" }}"
          - name: short
            domainRegex: "^(?:[^.])+$"
            cluster: _GLOBAL_SIDECAR
        domainAliases:
          - pattern: '(?P<service>[^\\.]+)\\.(?P<namespace>[^\\.]+)\\.svc\\.cluster\\.local$'
            templates: ["$namespace.$service.mailsaas"]
      global:
        istioNamespace: istio-system
        slimeNamespace: mesh-operator
        selfResourceRev: canary
        misc:
          globalSidecarMode: cluster
"""


def test_slimeboot_config_maps_onto_render_options(tmp_path: Path) -> None:
    path = tmp_path / "slimeboot.yaml"
    path.write_text(CONFIG)
    options = render_options(load_config(path, {}))
    assert options.wormhole_ports == ("9080", "9090")
    assert options.resolve.enable_short_domain is True
    assert options.fences.stable_hosts == ("ratings.default.svc.cluster.local",)
    (alias,) = options.fences.domain_aliases
    assert alias.templates == ("$namespace.$service.mailsaas",)
    assert alias.pattern.search("details.default.svc.cluster.local")
    bar, short = options.fallback.dispatches
    assert bar.cluster == "outbound|80||egress1.mesh-operator.svc.cluster.local"
    assert short.domain_regex == "^(?:[^.])+$"
    assert options.fallback.revision == "canary"
    assert options.autofence.enabled is True
    assert options.autofence.default_fence is True
    assert options.autofence.black_namespaces == ("kube-system", "legacy")
    assert options.autofence.self_resource_rev == "canary"
    assert {"istio-system", "mesh-operator"} <= options.autofence.excluded_namespaces
