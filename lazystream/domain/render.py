"""Offline rendering: what lazystream would write for a cluster and a set of access records.

``lazystream render`` and the tests call :func:`render`; the worker runs the same steps
(resolve, compute domains, render status, Sidecar and EnvoyFilters) one fence at a time.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lazystream.domain import autofence, envoyfilters, wormhole
from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.domain.fences import (
    FenceOptions,
    compute_domains,
    expire_transitions,
    fence_from_object,
    render_status,
)
from lazystream.domain.records import DEFAULT_MAX_RECORD_BYTES, AccessRecord, parse_record
from lazystream.domain.resolution import ResolveOptions, resolve
from lazystream.domain.sidecars import render_sidecar

KIND_ORDER = {"ServiceFence": 0, "Sidecar": 1, "EnvoyFilter": 2}
DEAD_LETTERS_KEPT = 100


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """Everything rendering reads from the configuration."""

    resolve: ResolveOptions = field(default_factory=ResolveOptions)
    fences: FenceOptions = field(default_factory=FenceOptions)
    fallback: envoyfilters.FallbackOptions = field(default_factory=envoyfilters.FallbackOptions)
    autofence: autofence.AutoFenceOptions = field(default_factory=autofence.AutoFenceOptions)
    wormhole_ports: tuple[str, ...] = ()
    auto_port: bool = False
    support_h2: bool = False
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES


@dataclass
class RenderResult:
    items: list[dict[str, Any]]
    outcomes: Counter[str]
    """Records by outcome: ``learned``, ``ignored_*``, ``rejected_*``, or ``dead_letter:<reason>``."""
    dead_letters: list[tuple[int, str]] = field(default_factory=list)
    """(position in the records, 0-based; reason) of the first :data:`DEAD_LETTERS_KEPT` dead letters."""


def _sort_key(obj: Mapping[str, Any]) -> tuple[int, str, str]:
    meta = obj.get("metadata") or {}
    return (
        KIND_ORDER.get(str(obj.get("kind")), 9),
        str(meta.get("namespace", "")),
        str(meta.get("name", "")),
    )


def fallback_ports(cluster: ClusterState, options: RenderOptions) -> list[int]:
    """``wormholePort`` plus, with ``autoPort``, the HTTP ports of the cluster's Services."""
    rules = wormhole.PortRules(
        tuple(int(p) for p in options.wormhole_ports), options.auto_port, options.support_h2
    )
    in_use = wormhole.service_http_ports(cluster, options.support_h2) if options.auto_port else frozenset()
    return sorted(wormhole.next_ports((), in_use, rules, options.fallback))


def render(
    objects: Iterable[Mapping[str, Any]],
    records: Iterable[bytes],
    options: RenderOptions,
    now: float,
) -> RenderResult:
    """Fences (those given plus those autoFence would create) with their status, their Sidecars, and the
    fallback EnvoyFilters, ordered by kind, namespace and name."""
    objects = list(objects)
    cluster = ClusterState.from_objects(objects, options.resolve.cluster_domain)
    fence_objects = {
        ObjectKey(o["metadata"].get("namespace", "default"), o["metadata"]["name"]): dict(o)
        for o in objects
        if o.get("kind") == "ServiceFence"
    }
    for key, obj in autofence.desired_auto_fences(cluster, options.autofence).items():
        if key not in fence_objects:
            fence_objects[key] = obj
            cluster.apply(obj)

    outcomes: Counter[str] = Counter()
    dead: list[tuple[int, str]] = []
    learned: dict[ObjectKey, set[str]] = defaultdict(set)
    for position, data in enumerate(records):
        record = parse_record(data, max_bytes=options.max_record_bytes)
        if not isinstance(record, AccessRecord):
            outcomes[f"dead_letter:{record.problem}"] += 1
            if len(dead) < DEAD_LETTERS_KEPT:
                dead.append((position, str(record.problem)))
            continue
        result = resolve(record, cluster, options.resolve)
        outcomes[result.outcome] += 1
        for edge in result.edges:
            learned[edge.fence].add(edge.host)

    items: list[dict[str, Any]] = []
    for key, obj in fence_objects.items():
        if not autofence.fence_in_revision_scope(obj, options.autofence):
            continue  # another revision's controller computes and writes it
        fence = fence_from_object(obj)
        hosts = set(fence.learned) | (learned[key] if fence.spec.enable else set())
        domains = compute_domains(fence, hosts, cluster, options.fences, now)
        domains, _ = expire_transitions(domains, fence.domains, {}, now, options.fences.refresh_period)
        items.append({**obj, "status": render_status(domains, hosts)})
        sidecar = render_sidecar(fence, domains, cluster, options.fences)
        if sidecar is not None:
            items.append(sidecar)
    items += envoyfilters.render_envoy_filters(fallback_ports(cluster, options), options.fallback)
    items.sort(key=_sort_key)
    return RenderResult(items, outcomes, dead)
