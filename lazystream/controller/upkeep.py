"""Upkeep of learned state: seeding it, expiring idle hosts, dropping what callers that are gone left.

Each is a decision over the learned-state table and the cluster that ends in messages on the edges topic
(the table agent is the table's only writer), for the fences this worker owns:

- **seed**: on a start with an empty table, each fence's ``status.metricStatus`` becomes a seed, as Slime
  keeps its learned state in that status;
- **expire idle**: with ``fence.idleTtlSeconds``, hosts not observed for that long are expired (the agent
  re-checks each host's last observation);
- **drop orphans**: state held for a caller that has no fence, no Service and no workload fence due is
  reset, so what is held stays bounded by the callers that exist; never before the watch cache has listed
  the whole cluster (a Service not listed yet is not a Service that is gone).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from lazystream.domain import learned
from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.domain.fences import learned_from_metric_status
from lazystream.domain.resolution import ResolveOptions, may_hold


class LearnedTable(Protocol):
    """The learned-state table as upkeep reads and feeds it (``lazystream.stream.app.WorkerApp`` fits)."""

    def owns(self, key: ObjectKey, /) -> bool: ...

    def learned_state(self, key: ObjectKey, /) -> learned.LearnedState: ...

    def stored_keys(self) -> list[ObjectKey]:
        """The fences with state in this worker's local partitions."""
        ...

    def is_empty(self) -> bool: ...

    async def send_edge(self, key: ObjectKey, message: Mapping[str, Any], /) -> None: ...


class SyncedCluster(Protocol):
    """The watch cache as upkeep reads it (``lazystream.kube.informers.ClusterCache`` fits)."""

    state: ClusterState

    @property
    def fences(self) -> Mapping[ObjectKey, dict[str, Any]]: ...

    @property
    def synced(self) -> bool: ...

    def fence(self, key: ObjectKey, /) -> dict[str, Any] | None: ...

    def reading(self) -> AbstractContextManager[Any]: ...


@dataclass
class LearnedUpkeep:
    """The three upkeep passes over this worker's fences (the worker runs them at start, on the refresh
    tick and with every full sweep)."""

    table: LearnedTable
    cache: SyncedCluster
    resolve_options: ResolveOptions
    """Who may hold learned state (:func:`~lazystream.domain.resolution.may_hold`)."""
    seed_from_status: bool = True
    idle_ttl_seconds: float | None = None
    in_scope: Callable[[ObjectKey], bool] = lambda key: True
    clock: Callable[[], float] = time.time

    async def seed(self) -> int:
        """On a start with an empty table: a seed per owned fence with a ``status.metricStatus``; how many."""
        if not self.seed_from_status or not self.table.is_empty():
            return 0
        with self.cache.reading():
            fences = [
                (
                    key,
                    learned_from_metric_status(
                        ((self.cache.fence(key) or {}).get("status") or {}).get("metricStatus")
                    ),
                )
                for key in self.cache.fences
            ]
        count = 0
        for key, hosts in fences:
            if hosts and self.in_scope(key) and self.table.owns(key):
                await self.table.send_edge(key, learned.seed(hosts, self.clock()))
                count += 1
        return count

    async def expire_idle(self) -> int:
        """An expiry for each owned fence with hosts idle longer than ``idle_ttl_seconds``; how many."""
        ttl = self.idle_ttl_seconds
        if ttl is None:
            return 0
        now = self.clock()
        with self.cache.reading():
            keys = [k for k in self.cache.fences if self.in_scope(k)]
        sent = 0
        for key in keys:
            if not self.table.owns(key):
                continue
            idle = learned.idle_hosts(self.table.learned_state(key), now, ttl)
            if idle:
                await self.table.send_edge(key, learned.expire(idle, now, idle_before=now - ttl))
                sent += 1
        return sent

    async def drop_orphans(self) -> int:
        """A reset for each owned fence key whose caller is gone; how many. Nothing before the cache is
        synced."""
        if not self.cache.synced:
            return 0
        keys = self.table.stored_keys()
        with self.cache.reading():
            state = self.cache.state
            gone = [k for k in keys if self.in_scope(k) and not may_hold(k, state, self.resolve_options)]
        sent = 0
        for key in gone:
            if self.table.owns(key) and self.table.learned_state(key):
                await self.table.send_edge(key, learned.reset(self.clock()))
                sent += 1
        return sent


def _metric_status_hosts(fence: Mapping[str, Any] | None) -> list[str]:
    return list(learned_from_metric_status(((fence or {}).get("status") or {}).get("metricStatus")))
