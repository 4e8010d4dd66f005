"""The leader's duties on their own, without an API server or Prometheus: the duty loop (a pass at the start
of a term, after each poke, on a timer; cancelled with leadership), what autoFence plans from the cache,
the port set the fallback keeper wants, and the Prometheus poller's rounds. Their writes to a real API
server are tested in tests/kube/test_leader.py and the worker's integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from lazystream.domain import autofence, envoyfilters, prometheus, wormhole
from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.kube.autofencer import AutoFencer
from lazystream.kube.duty import LeaderDuty
from lazystream.kube.fallback import FallbackKeeper
from lazystream.stream.poller import PrometheusPoller
from lazystream.testing import ClusterBuilder

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
async def default_executor() -> AsyncIterator[None]:
    """The duties run their requests with asyncio.to_thread: join the loop's pool after each test."""
    yield
    await asyncio.get_running_loop().shutdown_default_executor()


class Cache:
    """The watch cache as the duties read it: a state, the fences, and a lock."""

    def __init__(self, state: ClusterState, fences: Mapping[ObjectKey, dict[str, Any]] | None = None) -> None:
        self.state = state
        self._fences = dict(fences or {})
        self.lock = threading.Lock()
        self.reads = 0

    @property
    def fences(self) -> Mapping[ObjectKey, dict[str, Any]]:
        assert self.lock.locked(), "read under reading()"
        return self._fences

    @contextlib.contextmanager
    def reading(self) -> Iterator[ClusterState]:
        with self.lock:
            self.reads += 1
            yield self.state


class Counting(LeaderDuty):
    def __init__(self, resync_seconds: float) -> None:
        super().__init__(resync_seconds)
        self.passes = 0
        self.terms = 0
        self.resyncs = 0

    def on_term_start(self) -> None:
        self.terms += 1

    def on_resync(self) -> None:
        self.resyncs += 1

    async def reconcile(self) -> None:
        self.passes += 1


async def test_a_duty_passes_at_the_start_after_a_poke_and_on_its_timer_until_cancelled() -> None:
    duty = Counting(resync_seconds=0.3)
    duty.poke()  # not leading: nothing to wake, nothing fails
    task = asyncio.create_task(duty.run())
    await asyncio.sleep(0.05)
    assert (duty.terms, duty.passes) == (1, 1)
    thread = threading.Thread(target=duty.poke)  # from a watch thread
    thread.start()
    thread.join()
    await asyncio.sleep(0.3)  # the settle pause, then one pass
    assert duty.passes == 2
    assert duty.resyncs == 0
    await asyncio.sleep(0.4)
    assert duty.resyncs >= 1  # the timer's pass
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    passes = duty.passes
    duty.poke()
    await asyncio.sleep(0.05)
    assert duty.passes == passes  # no longer leading: a poke does nothing


def labelled_mesh() -> ClusterBuilder:
    return (
        ClusterBuilder()
        .namespace("shop", {"slime.io/serviceFenced": "true"})
        .service("web", "shop")
        .service("cart", "shop")
        .namespace("other")
        .service("api", "other")
    )


def test_autofence_plans_from_the_cache_within_its_scope() -> None:
    state = labelled_mesh().build()
    stale = autofence.auto_fence_object(
        state.services[ObjectKey("other", "api")], autofence.AutoFenceOptions()
    )
    cache = Cache(state, {ObjectKey("other", "api"): stale})
    options = autofence.AutoFenceOptions(enabled=True)
    fencer = AutoFencer(None, cache, options)  # type: ignore[arg-type]  # plan() sends nothing
    plan = fencer.plan()
    assert sorted(f["metadata"]["name"] for f in plan.create) == ["cart", "web"]
    assert plan.delete == (ObjectKey("other", "api"),)  # its namespace is no longer labelled
    # a worker scoped away from "other" (e.g. its revision) neither creates nor deletes there
    scoped = AutoFencer(None, cache, options, in_scope=lambda key: key.namespace == "shop")  # type: ignore[arg-type]
    assert scoped.plan().delete == ()


async def test_autofence_counts_a_refused_write_and_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(labelled_mesh().build())
    fencer = AutoFencer(None, cache, autofence.AutoFenceOptions(enabled=True))  # type: ignore[arg-type]
    created: list[str] = []

    def create(obj: dict[str, Any]) -> None:
        if obj["metadata"]["name"] == "cart":
            raise ApiException(status=403, reason="Forbidden")
        created.append(obj["metadata"]["name"])

    monkeypatch.setattr(fencer, "_create", create)
    await fencer.reconcile()
    assert created == ["web"]
    assert fencer.counters["error:403"] == 1
    assert fencer.counters["created"] == 1


def test_the_fallback_keeper_adds_service_ports_and_keeps_the_old_ones_unless_told_to_clean_up() -> None:
    state = ClusterBuilder().service("web", "shop", ports=[("http", 9080), ("grpc", 7070)]).build()
    options = envoyfilters.FallbackOptions()
    keep = FallbackKeeper(None, Cache(state), options, wormhole.PortRules(auto_port=True))  # type: ignore[arg-type]
    assert keep.desired_ports(frozenset({8000})) == {80, 8000, 9080}  # grpc is not an HTTP port
    clean = FallbackKeeper(
        None,  # type: ignore[arg-type]
        Cache(state),
        options,
        wormhole.PortRules(auto_port=True, cleanup=True, wormhole_ports=(9999,)),
    )
    assert clean.desired_ports(frozenset({8000})) == {80, 9080, 9999}
    fixed = FallbackKeeper(None, Cache(state), options, wormhole.PortRules(wormhole_ports=(9080,)))  # type: ignore[arg-type]
    assert fixed.desired_ports(frozenset({8000})) == {80, 9080}


def fenced_mesh() -> tuple[Cache, ObjectKey]:
    builder = ClusterBuilder().service("web", "shop").service("details", "shop").fence("web", "shop")
    builder.fence("off", "shop", enable=False)
    state = builder.build()
    fences = {
        ObjectKey(o["metadata"]["namespace"], o["metadata"]["name"]): o
        for o in builder.objects()
        if o["kind"] == "ServiceFence"
    }
    return Cache(state, fences), ObjectKey("shop", "web")


def answer(*services: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": {"destination_service": s}} for s in services],
        },
    }


async def test_the_poller_reports_admitted_hosts_of_each_enabled_fence() -> None:
    cache, web = fenced_mesh()
    sent: list[tuple[ObjectKey, Mapping[str, Any]]] = []
    asked: list[str] = []

    async def send(key: ObjectKey, message: Mapping[str, Any]) -> None:
        sent.append((key, message))

    def query(address: str, promql: str) -> Any:
        asked.append(promql)
        return answer("details.shop.svc.cluster.local", "attacker.example", "web.shop.svc.cluster.local")

    poller = PrometheusPoller(
        cache,
        send,
        address="http://prometheus:9090",
        queries={"destination": 'sum(istio_requests_total{source_app="$source_app"})by(destination_service)'},
        period_seconds=10,
        query=query,
        clock=lambda: 1000.0,
    )
    await poller.poll()
    assert [key for key, _ in sent] == [web]  # the disabled fence is not polled
    assert asked == ['sum(istio_requests_total{source_app="web"})by(destination_service)']
    _, message = sent[0]
    # admitted: Services of the mesh; the made-up host is not
    hosts = {"details.shop.svc.cluster.local", "web.shop.svc.cluster.local"}
    assert message == prometheus_report(hosts, 1000.0)
    assert poller.counters["reports"] == 1


def prometheus_report(hosts: set[str], now: float) -> Mapping[str, Any]:
    from lazystream.domain import learned

    return learned.report(prometheus.SOURCE, hosts, now)


async def test_a_failed_query_skips_the_fence_and_clears_nothing() -> None:
    cache, _ = fenced_mesh()
    sent: list[ObjectKey] = []

    async def send(key: ObjectKey, message: Mapping[str, Any]) -> None:
        sent.append(key)

    def query(address: str, promql: str) -> Any:
        raise prometheus.PrometheusError("connection refused")

    poller = PrometheusPoller(
        cache, send, address="http://prometheus:9090", queries={"a": "up"}, period_seconds=10, query=query
    )
    await poller.poll()
    assert sent == []  # no empty report: learned state survives an outage
    assert poller.counters["fences_failed"] == 1
    assert poller.counters["query_errors"] == 1
