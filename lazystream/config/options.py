"""From the configuration to the domain core's option objects.

The domain core takes small, explicit option records rather than the whole configuration, so its
functions say what they read; this module is the one place that maps one onto the other.
"""

from __future__ import annotations

from lazystream.config import Config, LabelSelector
from lazystream.domain import autofence, envoyfilters, wormhole
from lazystream.domain.cluster import ObjectKey
from lazystream.domain.fences import AliasRule, FenceOptions
from lazystream.domain.render import RenderOptions
from lazystream.domain.resolution import ResolveOptions
from lazystream.domain.workloads import WorkloadFences


def resolve_options(config: Config) -> ResolveOptions:
    return ResolveOptions(
        cluster_domain=config.fence.cluster_domain,
        global_sidecar_namespaces=config.global_sidecar_namespaces(),
        enable_short_domain=config.general.enable_short_domain,
        workload_fences=workload_fences(config),
        autofence=autofence_options(config) if config.general.auto_fence else None,
        white_namespaces=config.general.white_namespaces,
        black_namespaces=config.general.black_namespaces,
    )


def workload_fences(config: Config) -> WorkloadFences | None:
    """``fenceLabelKeyAlias``, which (as in Slime) needs autoFence."""
    general = config.general
    return WorkloadFences.parse(general.fence_label_key_alias) if general.auto_fence else None


def fence_options(config: Config) -> FenceOptions:
    general = config.general
    return FenceOptions(
        cluster_domain=config.fence.cluster_domain,
        istio_namespace=config.global_.istio_namespace,
        slime_namespace=config.global_.slime_namespace,
        stable_hosts=tuple(general.stable_host),
        domain_aliases=tuple(AliasRule(a.regex(), tuple(a.templates)) for a in general.domain_aliases),
        global_sidecar_mode=general.global_sidecar_mode,
        cluster_gs_namespace=general.cluster_gs_namespace,
        service_label=config.global_.service,
        refresh_period=config.fence.refresh_period_seconds,
    )


def fallback_options(config: Config) -> envoyfilters.FallbackOptions:
    general = config.general
    dispatches = tuple(
        envoyfilters.DispatchRule(d.name, tuple(d.domains), cluster, d.domain_regex or None)
        for d, cluster in zip(general.dispatches, config.dispatch_clusters(), strict=True)
    )
    return envoyfilters.FallbackOptions(
        cluster_domain=config.fence.cluster_domain,
        istio_namespace=config.global_.istio_namespace,
        global_sidecar_mode=general.global_sidecar_mode,
        cluster_gs_namespace=general.cluster_gs_namespace,
        namespaces=tuple(general.namespace),
        dispatches=dispatches,
        passthrough_by_default=general.passthrough_by_default,
        add_env_header_via_lua=general.add_env_header_via_lua,
        proxy_version=general.proxy_version or None,
        revision=config.global_.self_resource_rev or None,
        global_sidecar_port=config.global_sidecar.port,
    )


def port_rules(config: Config) -> wormhole.PortRules:
    general = config.general
    return wormhole.PortRules(
        wormhole_ports=tuple(int(p) for p in general.wormhole_port),
        auto_port=general.auto_port,
        support_h2=general.support_h2,
        cleanup=general.cleanup_wormhole_port,
    )


def _selector(selector: LabelSelector) -> autofence.LabelSelector:
    return autofence.LabelSelector(
        dict(selector.match_labels),
        tuple(
            autofence.SelectorRequirement(e.key, str(e.operator), tuple(e.values))
            for e in selector.match_expressions
        ),
    )


def autofence_options(config: Config) -> autofence.AutoFenceOptions:
    general, global_ = config.general, config.global_
    excluded = {global_.istio_namespace, global_.slime_namespace, *config.global_sidecar_namespaces()}
    if general.global_sidecar_mode == "namespace":  # those namespaces hold workloads too
        excluded = {global_.istio_namespace, global_.slime_namespace}
    return autofence.AutoFenceOptions(
        enabled=general.auto_fence,
        default_fence=general.default_fence,
        excluded_namespaces=frozenset(excluded),
        white_namespaces=tuple(sorted(general.white_namespaces)),
        black_namespaces=tuple(sorted(general.black_namespaces)),
        management_selectors=tuple(_selector(s) for s in general.management_selectors),
        self_resource_rev=global_.self_resource_rev,
        istio_revs=tuple(sorted(global_.istio_revs)),
        strict_rev=global_.strict_rev,
        workload_fences=workload_fences(config),
    )


def render_options(config: Config) -> RenderOptions:
    return RenderOptions(
        resolve=resolve_options(config),
        fences=fence_options(config),
        fallback=fallback_options(config),
        autofence=autofence_options(config),
        wormhole_ports=tuple(config.general.wormhole_port),
        auto_port=config.general.auto_port,
        support_h2=config.general.support_h2,
        max_record_bytes=config.fence.max_record_bytes,
    )


def in_scope(config: Config, key: ObjectKey) -> bool:
    """Whether a fence is in the namespace scope (``whiteNamespaceList`` / ``blackNamespaceList``): fences
    outside it are left alone, as Slime leaves namespaces outside its scope alone."""
    general = config.general
    if key.namespace in general.black_namespaces:
        return False
    return not general.white_namespaces or key.namespace in general.white_namespaces
