"""reconcile(key) without Kubernetes or faust: what FenceInputs computes from learned state and the cluster,
and what the controller does with each answer (a writer that records what it is given)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pytest

from lazystream.controller.compute import DEADLINE_SLACK, FenceComputer, FenceInputs
from lazystream.controller.reconciler import Desired, FenceController, NotReady, Observed
from lazystream.domain.autofence import AutoFenceOptions
from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.domain.fences import FenceOptions
from lazystream.testing import ClusterBuilder

pytestmark = pytest.mark.timeout(30)

WEB = ObjectKey("shop", "web")
DETAILS = "details.shop.svc.cluster.local"


class Cache:
    def __init__(
        self, builder: ClusterBuilder, sidecars: Mapping[ObjectKey, dict[str, Any]] | None = None
    ) -> None:
        self.state: ClusterState = builder.build()
        self.fences = {
            ObjectKey(o["metadata"]["namespace"], o["metadata"]["name"]): o
            for o in builder.objects()
            if o["kind"] == "ServiceFence"
        }
        self.sidecars = dict(sidecars or {})
        self.hosts: dict[ObjectKey, set[str]] = {}
        self.lock = threading.Lock()

    def fence(self, key: ObjectKey) -> dict[str, Any] | None:
        assert self.lock.locked()
        return self.fences.get(key)

    @contextlib.contextmanager
    def reading(self) -> Iterator[ClusterState]:
        with self.lock:
            yield self.state

    def set_fence_hosts(self, key: ObjectKey, hosts: Iterable[str]) -> None:
        self.hosts[key] = set(hosts)

    def forget_fence(self, key: ObjectKey) -> None:
        self.hosts.pop(key, None)


class Learned:
    def __init__(self, hosts: Mapping[ObjectKey, set[str]], owned: set[ObjectKey] | None = None) -> None:
        self.hosts = hosts
        self.owned = owned if owned is not None else set(hosts)

    def owns(self, key: ObjectKey) -> bool:
        return key in self.owned

    def learned_hosts(self, key: ObjectKey) -> set[str]:
        return set(self.hosts.get(key, set()))


def mesh(**spec: Any) -> ClusterBuilder:
    return ClusterBuilder().service("web", "shop").service("details", "shop").fence("web", "shop", **spec)


def inputs(cache: Cache, learned: Learned, **kw: Any) -> FenceInputs:
    return FenceInputs(FenceComputer(FenceOptions()), learned, cache, readable=lambda: True, **kw)


def test_a_fence_is_computed_from_its_learned_hosts_and_its_hosts_are_indexed() -> None:
    cache = Cache(mesh())
    computed = inputs(cache, Learned({WEB: {DETAILS}}))(WEB)
    assert computed is not None
    desired, observed = computed
    assert desired.status is not None
    assert DETAILS in str(desired.status["metricStatus"])
    assert desired.sidecar is not None
    assert f"*/{DETAILS}" in desired.sidecar["spec"]["egress"][0]["hosts"]
    assert observed == Observed(status=None, sidecar=None)
    assert DETAILS in cache.hosts[WEB]


def test_what_is_not_this_workers_or_cannot_be_read_now() -> None:
    cache = Cache(mesh())
    with pytest.raises(NotReady):
        FenceInputs(FenceComputer(FenceOptions()), Learned({}), cache, readable=lambda: False)(WEB)
    assert inputs(cache, Learned({WEB: {DETAILS}}, owned=set()))(WEB) is None  # another worker's partition
    assert inputs(cache, Learned({WEB: {DETAILS}}), in_scope=lambda key: False)(WEB) is None
    other_revision = Cache(mesh().fence("rev", "shop", labels={"istio.io/rev": "canary"}))
    scoped = inputs(
        other_revision,
        Learned({ObjectKey("shop", "rev"): set()}),
        revision_scope=AutoFenceOptions(istio_revs=("stable",), strict_rev=True),
    )
    assert scoped(ObjectKey("shop", "rev")) is None


def test_a_deleted_fence_asks_for_its_sidecar_to_go_and_is_forgotten() -> None:
    sidecar = {"metadata": {"name": "gone", "namespace": "shop"}, "spec": {}}
    cache = Cache(ClusterBuilder().service("web", "shop"), {ObjectKey("shop", "gone"): sidecar})
    cache.hosts[ObjectKey("shop", "gone")] = {DETAILS}
    computed = inputs(cache, Learned({ObjectKey("shop", "gone"): set()}))(ObjectKey("shop", "gone"))
    assert computed == (Desired(status=None, sidecar=None), Observed(status=None, sidecar=sidecar))
    assert ObjectKey("shop", "gone") not in cache.hosts
    assert inputs(cache, Learned({ObjectKey("shop", "x"): set()}))(ObjectKey("shop", "x")) is None


def test_a_deadline_ahead_asks_for_a_run_just_after_it() -> None:
    now = 1000.0
    cache = Cache(mesh(host={DETAILS: {"deadline": {"expire": {"seconds": int(now) + 30}}}}))
    computer = FenceComputer(FenceOptions(), clock=lambda: now)
    fence_inputs = FenceInputs(computer, Learned({WEB: set()}), cache, readable=lambda: True)
    assert fence_inputs(WEB) is not None
    assert fence_inputs.deadline_in(WEB) == pytest.approx(30 + DEADLINE_SLACK)
    assert fence_inputs.deadline_in(ObjectKey("shop", "other")) is None


class Writer:
    def __init__(self, retry_later: bool = False) -> None:
        self.writes_total: Counter[str] = Counter()
        self.written: list[tuple[ObjectKey, Desired]] = []
        self.forgotten: list[ObjectKey] = []
        self.retry_later = retry_later
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def write(
        self, key: ObjectKey, desired: Desired, observed: Observed | None, *, stopping: bool
    ) -> bool:
        self.written.append((key, desired))
        return self.retry_later

    def forget(self, key: ObjectKey) -> None:
        self.forgotten.append(key)


async def test_reconcile_writes_what_compute_says_and_counts_what_it_skips() -> None:
    desired = Desired(status={"metricStatus": {}}, sidecar=None)
    answers: dict[ObjectKey, Any] = {WEB: (desired, None), ObjectKey("shop", "gone"): None}

    def compute(key: ObjectKey) -> tuple[Desired, Observed | None] | None:
        answer = answers[key]
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    writer = Writer()
    controller = FenceController(compute, writer, deadline_in=lambda key: 60.0 if key == WEB else None)
    await controller.start()
    assert writer.started
    controller.schedule(WEB)
    controller.schedule(ObjectKey("shop", "gone"))
    assert await controller.wait_idle(2)
    assert writer.written == [(WEB, desired)]
    assert writer.forgotten == [ObjectKey("shop", "gone")]
    assert controller.writes_total["fence:skipped"] == 1
    assert controller.queue.timed == 1  # the deadline's run, for WEB only
    answers[WEB] = NotReady("recovering")
    answers[ObjectKey("shop", "bad")] = ValueError("bad fence")
    controller.schedule(ObjectKey("shop", "bad"))
    assert await controller.wait_idle(2)
    assert controller.writes_total["error:ValueError"] == 1
    await controller.stop()
    assert writer.stopped


async def test_not_ready_and_an_outage_run_the_fence_again_later() -> None:
    calls: list[float] = []

    def compute(key: ObjectKey) -> tuple[Desired, Observed | None] | None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 1:
            raise NotReady("recovering")
        return Desired(status={"x": 1}, sidecar=None), None

    writer = Writer(retry_later=True)
    controller = FenceController(compute, writer, retry_later_seconds=0.1, coalesce_seconds=0.0)
    await controller.start()
    controller.schedule(WEB)
    await asyncio.sleep(0.35)
    assert controller.writes_total["fence:not_ready"] == 1
    assert len(writer.written) >= 2  # the write asked for "later" each time, and was run again
    assert all(b - a >= 0.09 for a, b in itertools.pairwise(calls))
    await controller.stop()
