"""Upkeep of learned state without faust or Kubernetes: seeds from metricStatus, idle expiries, orphan
resets, each only for the fences this worker owns and in scope, with a table that records what it is sent."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from lazystream.controller.upkeep import LearnedUpkeep
from lazystream.domain import learned
from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.domain.resolution import ResolveOptions
from lazystream.testing import ClusterBuilder

WEB = ObjectKey("shop", "web")
CART = ObjectKey("shop", "cart")
GONE = ObjectKey("shop", "gone")
DETAILS = "details.shop.svc.cluster.local"
NOW = 10_000.0


class Table:
    def __init__(self, state: Mapping[ObjectKey, learned.LearnedState], owned: set[ObjectKey]) -> None:
        self.state = dict(state)
        self.owned = owned
        self.sent: list[tuple[ObjectKey, Mapping[str, Any]]] = []

    def owns(self, key: ObjectKey) -> bool:
        return key in self.owned

    def learned_state(self, key: ObjectKey) -> learned.LearnedState:
        return self.state.get(key, {})

    def stored_keys(self) -> list[ObjectKey]:
        return list(self.state)

    def is_empty(self) -> bool:
        return not self.state

    async def send_edge(self, key: ObjectKey, message: Mapping[str, Any]) -> None:
        self.sent.append((key, message))


class Cache:
    def __init__(self, builder: ClusterBuilder, *, synced: bool = True) -> None:
        self.state: ClusterState = builder.build()
        self.fences = {
            ObjectKey(o["metadata"]["namespace"], o["metadata"]["name"]): o
            for o in builder.objects()
            if o["kind"] == "ServiceFence"
        }
        self.synced = synced
        self.lock = threading.Lock()

    def fence(self, key: ObjectKey) -> dict[str, Any] | None:
        return self.fences.get(key)

    @contextlib.contextmanager
    def reading(self) -> Iterator[ClusterState]:
        with self.lock:
            yield self.state


def mesh() -> ClusterBuilder:
    builder = ClusterBuilder().service("web", "shop").service("cart", "shop").service("details", "shop")
    builder.fence("web", "shop").fence("cart", "shop")
    for obj in builder.objects():
        if obj["kind"] == "ServiceFence" and obj["metadata"]["name"] == "web":
            obj["status"] = {"metricStatus": {f'{{destination_service="{DETAILS}"}}': "1"}}
    return builder


def upkeep(table: Table, cache: Cache, **kw: Any) -> LearnedUpkeep:
    return LearnedUpkeep(table, cache, ResolveOptions(), clock=lambda: NOW, **kw)


def host(last: float) -> learned.LearnedHost:
    return learned.LearnedHost(first=last, last=last, count=1)


async def test_an_empty_table_is_seeded_from_metric_status_for_owned_fences_only() -> None:
    table = Table({}, owned={WEB, CART})
    assert await upkeep(table, Cache(mesh())).seed() == 1
    assert table.sent == [(WEB, learned.seed([DETAILS], NOW))]
    # not owned, or a table with state already, or seeding off: nothing
    for other, kw in ((Table({}, owned=set()), {}), (Table({}, owned={WEB}), {"seed_from_status": False})):
        assert await upkeep(other, Cache(mesh()), **kw).seed() == 0
        assert other.sent == []
    full = Table({CART: {DETAILS: host(NOW)}}, owned={WEB, CART})
    assert await upkeep(full, Cache(mesh())).seed() == 0


async def test_idle_hosts_expire_only_with_a_ttl() -> None:
    state = {WEB: {DETAILS: host(NOW - 600), "fresh.shop.svc.cluster.local": host(NOW - 5)}}
    table = Table(state, owned={WEB})
    assert await upkeep(table, Cache(mesh())).expire_idle() == 0  # no idleTtlSeconds
    assert await upkeep(table, Cache(mesh()), idle_ttl_seconds=300).expire_idle() == 1
    assert table.sent == [(WEB, learned.expire([DETAILS], NOW, idle_before=NOW - 300))]


async def test_state_of_callers_that_are_gone_is_reset_once_the_cache_is_synced() -> None:
    state = {WEB: {DETAILS: host(NOW)}, GONE: {DETAILS: host(NOW)}}
    table = Table(state, owned={WEB, GONE})
    assert await upkeep(table, Cache(mesh(), synced=False)).drop_orphans() == 0  # not listed yet
    assert await upkeep(table, Cache(mesh())).drop_orphans() == 1
    assert table.sent == [(GONE, learned.reset(NOW))]
    out_of_scope = Table(state, owned={WEB, GONE})
    assert await upkeep(out_of_scope, Cache(mesh()), in_scope=lambda k: k != GONE).drop_orphans() == 0
