"""What replaying access records would change: the dry run of ``lazystream replay``.

It runs what the worker and ``lazystream render`` run — parse, resolve, learn, compute the fence — over the
records, starting from the fences as they are (their learned hosts are their ``status.metricStatus``), and
reports, per fence the records reach, the hosts it would learn and whether its status would change.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.domain.fences import fence_from_object
from lazystream.domain.records import AccessRecord, parse_record
from lazystream.domain.render import RenderOptions, render
from lazystream.domain.resolution import resolve


@dataclass(frozen=True)
class FenceChange:
    """What a replay would change on one fence."""

    namespace: str
    name: str
    new_hosts: tuple[str, ...]
    status_changes: bool


def learned_by(
    records: Iterable[bytes], cluster: ClusterState, options: RenderOptions
) -> dict[ObjectKey, set[str]]:
    """Fence → hosts the records teach it (before any fence's own state)."""
    out: dict[ObjectKey, set[str]] = defaultdict(set)
    for data in records:
        record = parse_record(data, max_bytes=options.max_record_bytes)
        if isinstance(record, AccessRecord):
            for edge in resolve(record, cluster, options.resolve).edges:
                out[edge.fence].add(edge.host)
    return out


def preview(
    objects: Iterable[Mapping[str, Any]],
    records: Iterable[bytes],
    options: RenderOptions,
    now: float,
    in_scope: Callable[[ObjectKey], bool] = lambda key: True,
) -> list[FenceChange]:
    """The fences (existing, in scope, reached by the records) a replay of ``records`` would change."""
    objects, records = list(objects), list(records)
    cluster = ClusterState.from_objects(objects, options.resolve.cluster_domain)
    taught = learned_by(records, cluster, options)
    current = {
        ObjectKey(o["metadata"].get("namespace", "default"), o["metadata"]["name"]): o
        for o in objects
        if o.get("kind") == "ServiceFence"
    }
    rendered = {
        ObjectKey(o["metadata"].get("namespace", "default"), o["metadata"]["name"]): o
        for o in render(objects, records, options, now).items
        if o.get("kind") == "ServiceFence"
    }
    changes = []
    for key in sorted(taught):
        if key not in current or not in_scope(key):
            continue
        fence = fence_from_object(current[key])
        if not fence.spec.enable:
            continue
        new_hosts = tuple(sorted(taught[key] - set(fence.learned)))
        status_changes = (rendered[key].get("status") or {}) != (current[key].get("status") or {})
        if new_hosts or status_changes:
            changes.append(FenceChange(key.namespace, key.name, new_hosts, status_changes))
    return changes
