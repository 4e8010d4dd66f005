"""The worker's logic between the faust agents and the Kubernetes layer.

``Ingest`` turns one access-log message into edge messages (or a dead letter); ``FenceComputer`` turns a
fence's learned state and the cluster cache into the desired ServiceFence status and Sidecar. Both call
the domain core and nothing else: the agents in :mod:`lazystream.stream.app` only move bytes.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from lazystream.domain import learned
from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.domain.fences import (
    FenceOptions,
    compute_domains,
    expire_transitions,
    fence_from_object,
    render_status,
)
from lazystream.domain.records import ParseError, parse_record
from lazystream.domain.resolution import Outcome, Resolution, ResolveOptions, resolve_cached
from lazystream.domain.sidecars import render_sidecar, sidecar_hosts

DEDUPE_ENTRIES = 100_000
RECENT_REJECTIONS = 1000
REJECTED = frozenset(o for o in Outcome if o.startswith("rejected"))
HOSTS_LIMIT = "rejected_hosts_limit"
"""The rejection reason of a host refused because its fence already holds ``fence.maxHostsPerFence``
learned hosts (recorded by the table agent, shown by "explain")."""


@dataclass(frozen=True, slots=True)
class EdgeMessage:
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class Ingest:
    """Parse, resolve, bucket and forward: access records in, edge messages out."""

    resolve_options: ResolveOptions
    bucket_seconds: float
    max_record_bytes: int
    outcomes: Counter[str] = field(default_factory=Counter)
    """Records by outcome: ``learned``, ``ignored_*``, ``rejected_*`` and ``dead_letter:<reason>``."""
    recent_rejections: OrderedDict[tuple[str, str], str] = field(default_factory=OrderedDict)
    """(fence, host) → reason of the latest rejected hosts, for "explain" (bounded)."""
    by_source: Counter[ObjectKey] = field(default_factory=Counter)
    """Records per source fence: calls that went through the global-sidecar, i.e. the
    fallback hit count of each fence (a metric; bounded by the fences of the cluster)."""
    _seen: OrderedDict[bytes, dict[str, int]] = field(default_factory=OrderedDict)
    """The dedupe: per fence key, the latest bucket each host was forwarded in; fences in least recently
    used order. Nested rather than keyed by (fence, host): the fence key is held once, hosts are interned,
    which took the 100k entries from about 23 MB to a third of that."""
    _seen_entries: int = 0

    def process(
        self, data: bytes, cluster: ClusterState, message_time: float
    ) -> list[EdgeMessage] | DeadLetter:
        record = parse_record(data, max_bytes=self.max_record_bytes)
        if isinstance(record, ParseError):
            self.outcomes[f"dead_letter:{record.problem}"] += 1
            headers = [
                ("lazystream-reason", record.problem.value.encode()),
                ("lazystream-detail", record.detail.encode()),
            ]
            return DeadLetter(data, headers)
        result = resolve_cached(record, cluster, self.resolve_options)
        outcome = result.outcome
        self.outcomes[outcome] += 1
        by_source = self.by_source
        for source in result.sources:
            by_source[source] += 1
        if outcome in REJECTED and result.host:
            for source in result.sources:
                self.remember_rejection(f"{source.namespace}/{source.name}", result.host, outcome)
        if not result.edges:
            return []
        event_time = record.event_time if record.event_time is not None else message_time
        return self._edges(result, event_time, message_time)

    def _edges(self, result: Resolution, event_time: float, message_time: float) -> list[EdgeMessage]:
        current = learned.bucket(event_time, self.bucket_seconds)
        out = []
        for edge in result.edges:
            key = learned.fence_key(edge.fence)
            hosts = self._seen.get(key)
            if hosts is None:
                hosts = self._seen[key] = {}
            else:
                self._seen.move_to_end(key)
            seen = hosts.get(edge.host)
            if seen is not None and seen >= current:
                continue  # already forwarded for this bucket: the table would not change
            if seen is None:
                self._seen_entries += 1
            hosts[sys.intern(edge.host)] = current
            while self._seen_entries > DEDUPE_ENTRIES and len(self._seen) > 1:
                # the least recently used fence goes whole: at worst its next records send edges again
                self._seen_entries -= len(self._seen.popitem(last=False)[1])
            if self._seen_entries > DEDUPE_ENTRIES:  # one fence alone holds more: it starts over
                hosts.clear()
                hosts[edge.host] = current
                self._seen_entries = 1
            message = learned.observe(edge.host, edge.kind, event_time, produced=message_time)
            out.append(EdgeMessage(key, orjson.dumps(message)))
        return out

    def remember_rejection(self, fence: str, host: str, reason: str) -> None:
        """Note that ``host`` was refused for ``fence`` (``namespace/name``) and why, for "explain": the
        resolver's ``rejected_*`` outcomes, and :data:`HOSTS_LIMIT` from the table agent. Bounded."""
        entry = (fence, host)
        self.recent_rejections[entry] = reason
        self.recent_rejections.move_to_end(entry)
        while len(self.recent_rejections) > RECENT_REJECTIONS:
            self.recent_rejections.popitem(last=False)


@dataclass
class FencePlan:
    """What a fence should look like, and what the cache last saw of it."""

    status: dict[str, Any]
    sidecar: dict[str, Any] | None
    observed_status: dict[str, Any] | None
    observed_sidecar: dict[str, Any] | None
    hosts: set[str]


@dataclass
class FenceComputer:
    """Desired status and Sidecar of one fence from its learned state and the cluster (the same domain
    functions ``lazystream render`` runs)."""

    fence_options: FenceOptions
    clock: Callable[[], float] = time.time
    _expire_wait_since: dict[ObjectKey, dict[str, float]] = field(default_factory=dict)
    timed: set[ObjectKey] = field(default_factory=set)
    """Fences whose output depends on the clock (EXPIREWAIT entries, deadlines): the refresh tick
    recomputes these, not every fence."""
    next_deadline: dict[ObjectKey, float] = field(default_factory=dict)
    """The next ``spec.host`` deadline still ahead, per fence: the worker sets a timer for it, so a
    deadline takes effect when it passes rather than at the next tick."""
    left_out: dict[ObjectKey, dict[str, str]] = field(default_factory=dict)
    """Per fence, the hosts its Sidecar leaves out because Istio would refuse them (host -> reason), as
    last computed: the metric ``lazystream_sidecar_hosts_left_out`` counts them."""

    def plan(
        self,
        fence_obj: dict[str, Any],
        learned_hosts: Iterable[str],
        cluster: ClusterState,
        observed_sidecar: dict[str, Any] | None,
    ) -> FencePlan:
        fence = fence_from_object(fence_obj)
        now = self.clock()
        hosts = set(learned_hosts) if fence.spec.enable else set(fence.learned)
        domains = compute_domains(fence, hosts, cluster, self.fence_options, now)
        since = self._expire_wait_since.get(fence.key, {})
        domains, since = expire_transitions(
            domains, fence.domains, since, now, self.fence_options.refresh_period
        )
        self._expire_wait_since[fence.key] = since
        ahead = [
            s.deadline
            for s in fence.spec.hosts.values()
            if not s.stable and s.deadline is not None and s.deadline >= now
        ]
        if ahead:
            self.next_deadline[fence.key] = min(ahead)
        else:
            self.next_deadline.pop(fence.key, None)
        if since or any(
            s.deadline is not None or s.auto_duration is not None for s in fence.spec.hosts.values()
        ):
            self.timed.add(fence.key)
        else:
            self.timed.discard(fence.key)
        egress = sidecar_hosts(fence, domains, self.fence_options)
        if egress.left_out and fence.spec.enable:
            self.left_out[fence.key] = egress.left_out
        else:
            self.left_out.pop(fence.key, None)
        return FencePlan(
            status=render_status(domains, hosts, numeric=self.fence_options.numeric_domain_status),
            sidecar=render_sidecar(fence, domains, cluster, self.fence_options, egress),
            observed_status=fence_obj.get("status"),
            observed_sidecar=observed_sidecar,
            hosts={h for d in domains.values() for h in d.hosts}
            | {k for k in domains if not k.endswith("/*")},
        )

    def forget(self, key: ObjectKey) -> None:
        self._expire_wait_since.pop(key, None)
        self.left_out.pop(key, None)
        self.timed.discard(key)
        self.next_deadline.pop(key, None)
