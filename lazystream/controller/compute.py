"""How a fence is computed: its learned hosts and the cluster in, the desired status and Sidecar out.

:class:`FenceComputer` is the domain core's fence computation with the little state it keeps between runs
(since when an entry waits to expire, the next deadline, the hosts Istio would refuse), the same functions
``lazystream render`` runs. :class:`FenceInputs` is ``compute(key)`` for the reconciler: it reads the
fence, its Sidecar and the cluster from the watch cache, the learned hosts from the learned-state table,
and says when the fence is not this worker's or cannot be decided now.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from lazystream.controller.reconciler import Desired, NotReady, Observed
from lazystream.domain.autofence import AutoFenceOptions, fence_in_revision_scope
from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.domain.fences import (
    FenceOptions,
    compute_domains,
    expire_transitions,
    fence_from_object,
    render_status,
)
from lazystream.domain.sidecars import render_sidecar, sidecar_hosts

DEADLINE_SLACK = 0.05
"""Seconds after a deadline its run is asked for (a deadline is "passed" strictly after it)."""


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


class LearnedView(Protocol):
    """The learned-state table as the reconciler reads it (``lazystream.stream.app.WorkerApp`` fits)."""

    def owns(self, key: ObjectKey, /) -> bool:
        """Whether this worker holds the fence's learned state (its partition is assigned here)."""
        ...

    def learned_hosts(self, key: ObjectKey, /) -> set[str]: ...


class FenceCache(Protocol):
    """The watch cache as the reconciler reads and indexes it (``lazystream.kube.informers.ClusterCache``)."""

    state: ClusterState

    @property
    def sidecars(self) -> Mapping[ObjectKey, dict[str, Any]]: ...

    def fence(self, key: ObjectKey, /) -> dict[str, Any] | None: ...

    def reading(self) -> AbstractContextManager[Any]: ...

    def set_fence_hosts(self, key: ObjectKey, hosts: Iterable[str], /) -> None: ...

    def forget_fence(self, key: ObjectKey, /) -> None: ...


@dataclass
class FenceInputs:
    """``compute(key)`` over learned state and the cluster: what the reconciler writes for a fence now."""

    computer: FenceComputer
    learned: LearnedView
    cache: FenceCache
    readable: Callable[[], bool]
    """Whether the learned-state table can be trusted now (not while it recovers, rebalances or stops:
    a fence computed then would look as if it had learned nothing)."""
    in_scope: Callable[[ObjectKey], bool] = lambda key: True
    revision_scope: AutoFenceOptions = field(default_factory=AutoFenceOptions)
    """``global.istioRev`` / ``strictRev``: fences of other revisions are another controller's."""

    def __call__(self, key: ObjectKey) -> tuple[Desired, Observed] | None:
        """The fence's desired objects and what the cache saw; None when the fence is gone or not this
        worker's. :class:`NotReady` while the table cannot be read: the fence is tried later."""
        if not self.readable():
            raise NotReady(str(key))
        if not self.in_scope(key) or not self.learned.owns(key):
            return None
        cache = self.cache
        with cache.reading():
            fence = cache.fence(key)
            if fence is None:
                self.computer.forget(key)
                cache.forget_fence(key)
                sidecar = cache.sidecars.get(key)
                if sidecar is None:
                    return None
                # a deleted fence leaves no Sidecar of ours behind (no garbage collector is assumed)
                return Desired(status=None, sidecar=None), Observed(status=None, sidecar=sidecar)
            if not fence_in_revision_scope(fence, self.revision_scope):
                self.computer.forget(key)
                return None
            plan = self.computer.plan(
                fence, self.learned.learned_hosts(key), cache.state, cache.sidecars.get(key)
            )
        cache.set_fence_hosts(key, plan.hosts)
        return (
            Desired(status=plan.status, sidecar=plan.sidecar),
            Observed(status=plan.observed_status, sidecar=plan.observed_sidecar),
        )

    def deadline_in(self, key: ObjectKey) -> float | None:
        """Seconds until the fence's next ``spec.host`` deadline has passed, as of its last compute."""
        deadline = self.computer.next_deadline.get(key)
        if deadline is None:
            return None
        return max(0.0, deadline - self.computer.clock()) + DEADLINE_SLACK
