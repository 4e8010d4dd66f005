"""The ingest stage's logic between the access topic and the edges topic.

``Ingest`` turns one access-log message into edge messages (or a dead letter), calling the domain core and
nothing else: the agents in :mod:`lazystream.stream.app` only move bytes. What happens to a fence after its
learned state changes is the controller's (:mod:`lazystream.controller`).
"""

from __future__ import annotations

import sys
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import orjson

from lazystream.domain import learned
from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.domain.records import ParseError, parse_record
from lazystream.domain.resolution import Outcome, Resolution, ResolveOptions, resolve_cached

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
