"""The reconcile loop writing through FenceSink against the real kube-apiserver: writes are counted from the
API server's audit log."""

from __future__ import annotations

import asyncio
import copy
import itertools
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from lazystream.controller.reconciler import Desired, FenceController, NotReady, Observed
from lazystream.domain.cluster import ObjectKey
from lazystream.kube.client import api_client
from lazystream.kube.sink import fence_controller
from tests.fixtures.kube import AuditEvent, AuditLog
from tests.fixtures.servers import KubeServer, unique_name

pytestmark = [pytest.mark.kube, pytest.mark.timeout(60)]

FENCE_API = "microservice.slime.io/v1alpha1"
SIDECAR_API = "networking.istio.io/v1alpha3"


# -- helpers -------------------------------------------------------------------------------------------------


@pytest.fixture
def sink_api(request: pytest.FixtureRequest, kube_server: KubeServer) -> Iterator[client.ApiClient]:
    """The sink's own client, with a user agent unique to the test: the audit log then tells this sink's
    requests from any other writer's (another test's worker also writes with field manager lazystream)."""
    with api_client(kube_server.kubeconfig) as api:
        api.user_agent = f"lazystream-sink-test/{unique_name(request, 'ua')}"
        yield api


def create_fence(dyn: DynamicClient, namespace: str, name: str) -> dict[str, Any]:
    """A ServiceFence with a spec written by another field manager (the sink must never touch it)."""
    fences = dyn.resources.get(api_version=FENCE_API, kind="ServiceFence")
    body = {
        "apiVersion": FENCE_API,
        "kind": "ServiceFence",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"enable": True, "host": {"details.other.svc.cluster.local": {"stable": {}}}},
    }
    return dict(fences.create(body=body, namespace=namespace, field_manager="test-setup").to_dict())


def status_for(hosts: list[str]) -> dict[str, Any]:
    return {
        "domains": {h: {"hosts": [h], "status": "ACTIVE"} for h in sorted(hosts)},
        "metricStatus": {f'{{destination_service="{h}"}}': "1" for h in sorted(hosts)},
    }


def sidecar_for(fence: dict[str, Any], hosts: list[str]) -> dict[str, Any]:
    meta = fence["metadata"]
    return {
        "apiVersion": SIDECAR_API,
        "kind": "Sidecar",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "lazystream"},
            "ownerReferences": [
                {
                    "apiVersion": FENCE_API,
                    "kind": "ServiceFence",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "egress": [{"hosts": sorted(["istio-system/*", *(f"*/{h}" for h in hosts)])}],
            "workloadSelector": {"labels": {"app": meta["name"]}},
        },
    }


def sink_writes(
    audit_log: AuditLog, api: client.ApiClient, namespace: str, resource: str, name: str | None = None
) -> list[AuditEvent]:
    """This test's sink's write requests (by its user agent) on one resource kind of a namespace."""
    match = {"verb": "patch", "resource": resource, "namespace": namespace}
    if name is not None:
        match["name"] = name
    return [e for e in audit_log.find(**match) if e.raw.get("userAgent") == api.user_agent]


def settle_audit(audit_log: AuditLog, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """The audit backend writes each request as it completes, possibly a moment after the response."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@asynccontextmanager
async def running(sink: FenceController) -> AsyncIterator[FenceController]:
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


def get(dyn: DynamicClient, kind: str, namespace: str, name: str) -> dict[str, Any]:
    api = FENCE_API if kind == "ServiceFence" else SIDECAR_API
    return dict(dyn.resources.get(api_version=api, kind=kind).get(name=name, namespace=namespace).to_dict())


# -- tests ---------------------------------------------------------------------------------------------------


async def test_applies_status_through_subresource_and_sidecar(
    sink_api: client.ApiClient, kube_dynamic: DynamicClient, namespace: str, audit_log: AuditLog
) -> None:
    fence = create_fence(kube_dynamic, namespace, "productpage")
    key = ObjectKey(namespace, "productpage")
    hosts = ["reviews.default.svc.cluster.local", "details.default.svc.cluster.local"]
    desired = Desired(status=status_for(hosts), sidecar=sidecar_for(fence, hosts))

    async with running(fence_controller(sink_api, lambda k: (desired, None))) as sink:
        sink.schedule(key)
        assert await sink.wait_idle(10)
        assert sink.writes_total["status:applied"] == 1
        assert sink.writes_total["sidecar:applied"] == 1

    after = get(kube_dynamic, "ServiceFence", namespace, "productpage")
    assert after["status"] == desired.status
    assert after["spec"] == fence["spec"]
    assert after["metadata"]["generation"] == fence["metadata"]["generation"]
    managers = {(m["manager"], m.get("subresource", "")) for m in after["metadata"]["managedFields"]}
    assert ("lazystream", "status") in managers
    assert ("test-setup", "") in managers
    # the spec stays owned by its writer alone
    ours = [m for m in after["metadata"]["managedFields"] if m["manager"] == "lazystream"]
    assert all("f:spec" not in m["fieldsV1"] for m in ours)

    sidecar = get(kube_dynamic, "Sidecar", namespace, "productpage")
    assert sidecar["spec"] == sidecar_for_spec(desired)
    assert sidecar["metadata"]["ownerReferences"][0]["uid"] == fence["metadata"]["uid"]
    sidecar_managers = {(m["manager"], m["operation"]) for m in sidecar["metadata"]["managedFields"]}
    assert sidecar_managers == {("lazystream", "Apply")}

    settle_audit(audit_log, lambda: len(sink_writes(audit_log, sink_api, namespace, "sidecars")) >= 1)
    status_writes = sink_writes(audit_log, sink_api, namespace, "servicefences", "productpage")
    assert all("fieldManager=lazystream" in e.raw["requestURI"] for e in status_writes)
    assert [e.ref("subresource") for e in status_writes] == ["status"]
    assert status_writes[0].code == 200
    assert "force=true" in status_writes[0].raw["requestURI"]
    assert "spec" not in status_writes[0].raw.get("requestObject", {})
    sidecar_writes = sink_writes(audit_log, sink_api, namespace, "sidecars", "productpage")
    assert len(sidecar_writes) == 1
    assert sidecar_writes[0].code in (200, 201)


async def test_coalesces_bursts_and_skips_unchanged(
    sink_api: client.ApiClient, kube_dynamic: DynamicClient, namespace: str, audit_log: AuditLog
) -> None:
    fence = create_fence(kube_dynamic, namespace, "reviews")
    key = ObjectKey(namespace, "reviews")
    hosts: list[str] = []

    def compute(k: ObjectKey) -> tuple[Desired, Observed | None]:
        return Desired(status=status_for(hosts), sidecar=sidecar_for(fence, hosts)), None

    async with running(fence_controller(sink_api, compute, coalesce_seconds=0.5)) as sink:
        started = time.monotonic()
        for i in range(200):  # every schedule changes what is desired
            hosts.append(f"h{i:03d}.default.svc.cluster.local")
            sink.schedule(key)
            await asyncio.sleep(0.005)
        duration = time.monotonic() - started
        assert await sink.wait_idle(10)
        bound = math.ceil(duration / 0.5) + 1
        applied = {kind: sink.writes_total[f"{kind}:applied"] for kind in ("status", "sidecar")}

        settle_audit(
            audit_log,
            lambda: len(sink_writes(audit_log, sink_api, namespace, "sidecars")) >= applied["sidecar"],
        )
        status_audit = sink_writes(audit_log, sink_api, namespace, "servicefences")
        sidecar_audit = sink_writes(audit_log, sink_api, namespace, "sidecars")
        assert 2 <= len(status_audit) <= bound, (len(status_audit), duration)
        assert 2 <= len(sidecar_audit) <= bound, (len(sidecar_audit), duration)
        assert (len(status_audit), len(sidecar_audit)) == (applied["status"], applied["sidecar"])
        # the last write carries the final state
        final = get(kube_dynamic, "ServiceFence", namespace, "reviews")
        assert len(final["status"]["metricStatus"]) == 200

        # nothing changes any more: scheduling again writes nothing
        before = sink.writes_total.copy()
        for _ in range(50):
            sink.schedule(key)
            await asyncio.sleep(0.005)
        assert await sink.wait_idle(10)
        assert sink.writes_total["status:applied"] == before["status:applied"]
        assert sink.writes_total["sidecar:applied"] == before["sidecar:applied"]
        assert sink.writes_total["status:unchanged"] > before["status:unchanged"]
    await asyncio.sleep(0.5)  # anything the audit backend still had to write is in the log now
    assert len(sink_writes(audit_log, sink_api, namespace, "servicefences")) == len(status_audit)
    assert len(sink_writes(audit_log, sink_api, namespace, "sidecars")) == len(sidecar_audit)


async def test_foreign_sidecar_edit_is_reverted_when_observed(
    sink_api: client.ApiClient, kube_dynamic: DynamicClient, namespace: str, audit_log: AuditLog
) -> None:
    fence = create_fence(kube_dynamic, namespace, "ratings")
    key = ObjectKey(namespace, "ratings")
    desired = Desired(status=None, sidecar=sidecar_for(fence, ["details.default.svc.cluster.local"]))
    observed: list[Observed | None] = [None]

    async with running(fence_controller(sink_api, lambda k: (desired, observed[0]))) as sink:
        sink.schedule(key)
        assert await sink.wait_idle(10)
        assert sink.writes_total["sidecar:applied"] == 1

        # another manager takes the egress hosts over
        sidecars = kube_dynamic.resources.get(api_version=SIDECAR_API, kind="Sidecar")
        foreign = {
            "apiVersion": SIDECAR_API,
            "kind": "Sidecar",
            "metadata": {"name": "ratings", "namespace": namespace},
            "spec": {"egress": [{"hosts": ["*/*"]}]},
        }
        sidecars.server_side_apply(
            body=foreign, namespace=namespace, field_manager="kubectl", force_conflicts=True
        )
        edited = get(kube_dynamic, "Sidecar", namespace, "ratings")
        assert edited["spec"]["egress"] == [{"hosts": ["*/*"]}]

        # without an observation the sink trusts its own last write: no write
        sink.schedule(key)
        assert await sink.wait_idle(10)
        assert sink.writes_total["sidecar:applied"] == 1
        assert sink.writes_total["sidecar:unchanged"] == 1

        # the watch cache shows the edit: the sink repairs it
        observed[0] = Observed(status=None, sidecar=edited)
        sink.schedule(key)
        assert await sink.wait_idle(10)
        assert sink.writes_total["sidecar:applied"] == 2

        repaired = get(kube_dynamic, "Sidecar", namespace, "ratings")
        assert repaired["spec"] == sidecar_for_spec(desired)
        owners = {m["manager"]: m for m in repaired["metadata"]["managedFields"]}
        assert "f:spec" in owners["lazystream"]["fieldsV1"]
        assert "kubectl" not in owners or "f:egress" not in owners["kubectl"]["fieldsV1"].get("f:spec", {})

        # once the cache shows the repaired object, nothing is written
        observed[0] = Observed(status=None, sidecar=repaired)
        sink.schedule(key)
        assert await sink.wait_idle(10)
        assert sink.writes_total["sidecar:applied"] == 2

    settle_audit(
        audit_log, lambda: len(sink_writes(audit_log, sink_api, namespace, "sidecars", "ratings")) >= 2
    )
    writes = sink_writes(audit_log, sink_api, namespace, "sidecars", "ratings")
    assert len(writes) == 2
    foreign_writes = audit_log.find(verb="patch", resource="sidecars", name="ratings", namespace=namespace)
    assert [e for e in foreign_writes if "fieldManager=kubectl" in e.raw["requestURI"]]


async def test_deleted_fence_is_gone_without_retry_storm(
    sink_api: client.ApiClient, kube_dynamic: DynamicClient, namespace: str, audit_log: AuditLog
) -> None:
    fence = create_fence(kube_dynamic, namespace, "details")
    kube_dynamic.resources.get(api_version=FENCE_API, kind="ServiceFence").delete(
        name="details", namespace=namespace
    )
    key = ObjectKey(namespace, "details")
    desired = Desired(status=status_for(["a.default.svc.cluster.local"]), sidecar=sidecar_for(fence, []))

    async with running(fence_controller(sink_api, lambda k: (desired, None), coalesce_seconds=0.1)) as sink:
        sink.schedule(key)
        assert await sink.wait_idle(10)
        await asyncio.sleep(0.5)  # a retry (if any) would have happened by now
        assert not sink.queue._dirty  # nothing re-scheduled
        assert sink.writes_total["status:gone"] == 1
        assert sink.writes_total["status:applied"] == 0
        assert sink.writes_total["sidecar:applied"] == 0  # no orphan Sidecar for a deleted fence
        assert not [k for k in sink.writes_total if k.startswith("error:") or k.endswith(":retry")]

    settle_audit(audit_log, lambda: bool(sink_writes(audit_log, sink_api, namespace, "servicefences")))
    attempts = sink_writes(audit_log, sink_api, namespace, "servicefences")
    assert [(e.code, e.ref("subresource")) for e in attempts] == [(404, "status")]
    assert not sink_writes(audit_log, sink_api, namespace, "sidecars")


async def test_concurrency_is_bounded(
    sink_api: client.ApiClient, kube_dynamic: DynamicClient, namespace: str, audit_log: AuditLog
) -> None:
    fences = {f"svc{i:02d}": create_fence(kube_dynamic, namespace, f"svc{i:02d}") for i in range(20)}
    seen_in_flight: list[int] = []
    computed: list[ObjectKey] = []
    holder: list[FenceController] = []

    def compute(k: ObjectKey) -> tuple[Desired, Observed | None]:
        seen_in_flight.append(holder[0].queue.in_flight)
        computed.append(k)
        hosts = [f"{k.name}-dep.default.svc.cluster.local"]
        return Desired(status=status_for(hosts), sidecar=sidecar_for(fences[k.name], hosts)), None

    sink = fence_controller(sink_api, compute, concurrency=2)
    holder.append(sink)
    async with running(sink):
        for name in fences:
            sink.schedule(ObjectKey(namespace, name))
        assert await sink.wait_idle(20)
        assert sorted(k.name for k in computed) == sorted(fences)
        assert max(seen_in_flight) <= 2
        assert sink.queue.peak_in_flight == 2
        assert sink.writes_total["status:applied"] == sink.writes_total["sidecar:applied"] == 20
        assert len({t.name for t in threading.enumerate() if t.name.startswith("lazystream-sink")}) <= 2

    # the API server's own view: never more than two of the sink's requests open at once
    settle_audit(audit_log, lambda: len(sink_writes(audit_log, sink_api, namespace, "sidecars")) >= 20)
    events = sink_writes(audit_log, sink_api, namespace, "servicefences") + sink_writes(
        audit_log, sink_api, namespace, "sidecars"
    )
    assert len(events) == 40
    edges = sorted(
        [(timestamp(e.raw["requestReceivedTimestamp"]), 1) for e in events]
        + [(timestamp(e.raw["stageTimestamp"]), -1) for e in events]
    )
    open_requests = peak = 0
    for _, delta in edges:
        open_requests += delta
        peak = max(peak, open_requests)
    assert peak <= 2


async def test_writes_reuse_the_clients_connections(
    sink_api: client.ApiClient, kube_dynamic: DynamicClient, namespace: str
) -> None:
    """The sink does not read the API server's answers, but it must give their connections back: an
    answer left unread keeps its connection, and every write then opened a new TLS connection."""
    fences = {f"svc{i:02d}": create_fence(kube_dynamic, namespace, f"svc{i:02d}") for i in range(15)}

    def compute(k: ObjectKey) -> tuple[Desired, Observed | None]:
        hosts = [f"{k.name}-dep.default.svc.cluster.local"]
        return Desired(status=status_for(hosts), sidecar=sidecar_for(fences[k.name], hosts)), None

    def connections_made() -> int:
        pools = sink_api.rest_client.pool_manager.pools  # iterating it directly raises: ask for its keys
        return sum(pools[key].num_connections for key in pools.keys())  # noqa: SIM118

    async with running(fence_controller(sink_api, compute, concurrency=1)) as sink:
        before = connections_made()
        for name in fences:
            sink.schedule(ObjectKey(namespace, name))
        assert await sink.wait_idle(20)
        assert sink.writes_total["status:applied"] == sink.writes_total["sidecar:applied"] == 15
        assert connections_made() - before <= 1  # 30 requests, one at a time, over one connection


async def test_stop_drains_pending_write(
    sink_api: client.ApiClient, kube_dynamic: DynamicClient, namespace: str, audit_log: AuditLog
) -> None:
    fence = create_fence(kube_dynamic, namespace, "drain")
    key = ObjectKey(namespace, "drain")
    hosts = ["first.default.svc.cluster.local"]

    def compute(k: ObjectKey) -> tuple[Desired, Observed | None]:
        return Desired(status=status_for(hosts), sidecar=sidecar_for(fence, hosts)), None

    threads_before = set(threading.enumerate())
    sink = fence_controller(sink_api, compute, coalesce_seconds=30)
    await sink.start()
    sink.schedule(key)
    assert await sink.wait_idle(10)
    # within the 30 s interval: this change waits for a trailing write that only stop() can bring forward
    hosts.append("second.default.svc.cluster.local")
    sink.schedule(key)
    await asyncio.sleep(0.2)
    assert sink.writes_total["status:applied"] == 1
    started = time.monotonic()
    await sink.stop()
    assert time.monotonic() - started < 5
    assert sink.writes_total["status:applied"] == 2
    assert sink.writes_total["sidecar:applied"] == 2
    assert get(kube_dynamic, "ServiceFence", namespace, "drain")["status"] == status_for(hosts)

    # nothing left behind: no task, no worker thread; scheduling after stop is ignored
    current = asyncio.current_task()
    assert not [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    sink.schedule(key)
    assert not sink.queue._active


async def test_invalid_object_is_counted_not_retried(
    sink_api: client.ApiClient, kube_dynamic: DynamicClient, namespace: str, audit_log: AuditLog
) -> None:
    fence = create_fence(kube_dynamic, namespace, "invalid")
    key = ObjectKey(namespace, "invalid")
    bad_status = {"domains": {"a.default.svc.cluster.local": {"hosts": [], "status": "BOGUS"}}}
    desired = Desired(status=bad_status, sidecar=sidecar_for(fence, []))

    async with running(fence_controller(sink_api, lambda k: (desired, None), coalesce_seconds=0.1)) as sink:
        sink.schedule(key)
        assert await sink.wait_idle(10)
        await asyncio.sleep(0.5)
        assert sink.writes_total["error:422"] == 1
        assert sink.writes_total["status:retry"] == 0
        assert sink.writes_total["sidecar:applied"] == 1  # the Sidecar is still written

    settle_audit(audit_log, lambda: bool(sink_writes(audit_log, sink_api, namespace, "servicefences")))
    assert [e.code for e in sink_writes(audit_log, sink_api, namespace, "servicefences")] == [422]


def sidecar_for_spec(desired: Desired) -> Any:
    assert desired.sidecar is not None
    return desired.sidecar["spec"]


async def test_conflict_is_retried_then_rescheduled_not_lost(
    sink_api: client.ApiClient, kube_dynamic: DynamicClient, namespace: str, audit_log: AuditLog
) -> None:
    fence = create_fence(kube_dynamic, namespace, "conflict")
    key = ObjectKey(namespace, "conflict")
    good = sidecar_for(fence, ["a.default.svc.cluster.local"])
    # a stale resourceVersion precondition: the real API server answers 409 Conflict every time
    stale = copy.deepcopy(sidecar_for(fence, ["b.default.svc.cluster.local"]))
    stale["metadata"]["resourceVersion"] = "1"
    current: list[dict[str, Any]] = [good]
    sink = fence_controller(
        sink_api,
        lambda k: (Desired(status=None, sidecar=current[0]), None),
        max_retries=3,
        backoff_initial=0.05,
        retry_later_seconds=1.0,
    )
    async with running(sink):
        sink.schedule(key)
        assert await sink.wait_idle(10)
        current[0] = stale
        sink.schedule(key)
        for _ in range(500):  # up to 10 s for three attempts to fail
            if sink.writes_total["error:409"]:
                break
            await asyncio.sleep(0.02)
        assert sink.writes_total["sidecar:conflict"] == 3
        assert sink.writes_total["sidecar:retry"] == 2  # three attempts, then given up for now
        assert sink.writes_total["error:409"] == 1
        assert not sink.idle()  # not lost: scheduled again for later
        fixed = copy.deepcopy(stale)
        del fixed["metadata"]["resourceVersion"]
        current[0] = fixed
        assert await sink.wait_idle(10)
        assert sink.writes_total["sidecar:applied"] == 2
    assert get(kube_dynamic, "Sidecar", namespace, "conflict")["spec"] == fixed["spec"]
    settle_audit(audit_log, lambda: len(sink_writes(audit_log, sink_api, namespace, "sidecars")) >= 5)
    codes = [e.code for e in sink_writes(audit_log, sink_api, namespace, "sidecars")]
    assert codes[1:] == [409, 409, 409, 200]


async def test_threadsafe_schedule_and_out_of_scope_fence(
    sink_api: client.ApiClient, kube_dynamic: DynamicClient, namespace: str, audit_log: AuditLog
) -> None:
    fence = create_fence(kube_dynamic, namespace, "scoped")
    key = ObjectKey(namespace, "scoped")
    in_scope = [False]
    desired = Desired(status=status_for([]), sidecar=sidecar_for(fence, []))

    def compute(k: ObjectKey) -> tuple[Desired, Observed | None] | None:
        return (desired, None) if in_scope[0] else None

    async with running(fence_controller(sink_api, compute)) as sink:
        # from a watch thread, as the cluster cache calls it
        caller = threading.Thread(target=sink.schedule_threadsafe, args=(key,))
        caller.start()
        caller.join()  # it only hands the call to the loop: immediate
        for _ in range(100):
            if sink.writes_total["fence:skipped"]:
                break
            await asyncio.sleep(0.01)
        assert await sink.wait_idle(5)
        assert sink.writes_total == {"fence:skipped": 1}

        # back in scope: written at once, not held back by the skipped attempt's interval
        in_scope[0] = True
        started = time.monotonic()
        sink.schedule(key)
        assert await sink.wait_idle(5)
        assert time.monotonic() - started < 0.4
        assert sink.writes_total["status:applied"] == sink.writes_total["sidecar:applied"] == 1
    settle_audit(audit_log, lambda: len(sink_writes(audit_log, sink_api, namespace, "sidecars")) >= 1)
    assert len(sink_writes(audit_log, sink_api, namespace, "servicefences")) == 1


async def test_not_ready_compute_is_tried_again_not_dropped(
    sink_api: client.ApiClient, kube_dynamic: DynamicClient, namespace: str
) -> None:
    """While the worker's state is recovered or moved, compute raises NotReady: the write comes later."""
    fence = create_fence(kube_dynamic, namespace, "details")
    key = ObjectKey(namespace, "details")
    desired = Desired(status=status_for(["a.default.svc.cluster.local"]), sidecar=sidecar_for(fence, []))
    calls = []

    def compute(k: ObjectKey) -> tuple[Desired, None]:
        calls.append(k)
        if len(calls) == 1:
            raise NotReady(str(k))
        return desired, None

    sink = fence_controller(sink_api, compute, coalesce_seconds=0.1, retry_later_seconds=0.3)
    async with running(sink):
        sink.schedule(key)
        deadline = time.monotonic() + 10
        while sink.writes_total["sidecar:applied"] == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sink.writes_total["fence:not_ready"] == 1
        assert sink.writes_total["status:applied"] == 1
        assert sink.writes_total["sidecar:applied"] == 1
        assert len(calls) == 2


async def test_a_sweep_waits_behind_fences_scheduled_as_they_learn(
    sink_api: client.ApiClient, kube_dynamic: DynamicClient, namespace: str
) -> None:
    """A full sweep of many fences must not hold up a fence that just learned a host: the sweep writes
    one fence at a time, and only while a slot is free."""
    names = [f"swept{i:02d}" for i in range(30)]
    fences = {n: create_fence(kube_dynamic, namespace, n) for n in [*names, "learner"]}
    computed: list[str] = []
    in_flight: list[int] = []
    holder: list[FenceController] = []

    def compute(k: ObjectKey) -> tuple[Desired, Observed | None]:
        computed.append(k.name)
        in_flight.append(holder[0].queue.in_flight)
        hosts = [f"{k.name}-dep.default.svc.cluster.local"]
        return Desired(status=status_for(hosts), sidecar=sidecar_for(fences[k.name], hosts)), None

    sink = fence_controller(sink_api, compute, concurrency=2)
    holder.append(sink)
    async with running(sink):
        sink.sweep(ObjectKey(namespace, n) for n in names)
        await asyncio.sleep(0)  # the first swept writes take their slots
        sink.schedule(ObjectKey(namespace, "learner"))
        sink.sweep([ObjectKey(namespace, "learner"), ObjectKey(namespace, names[-1])])  # no second write
        assert not sink.idle()
        assert sink.sweep_pending == len(names)  # the learner is no longer the sweep's
        assert await sink.wait_idle(30)
        assert sink.sweep_pending == 0
        assert sorted(computed) == sorted(fences)  # every fence once
        assert computed.index("learner") <= 1  # behind at most the one write of the sweep
        assert [n for n in computed if n != "learner"] == names  # swept in order

        # a sweep alone: one fence at a time, though both slots are free
        del in_flight[:]
        sink.sweep(ObjectKey(namespace, n) for n in names)
        assert await sink.wait_idle(30)
    assert in_flight == [1] * len(names)


async def test_a_sweep_leaves_the_loop_free_most_of_the_time(
    sink_api: client.ApiClient, namespace: str
) -> None:
    """Computing swept fences back to back held the worker's loop and GIL for seconds (a new host's way to
    its Sidecar waited behind them): after each swept fence the next waits three times its compute, and a
    fence that learns a host meanwhile is computed at once."""
    cost = 0.02
    names = [f"swept{i:02d}" for i in range(12)]
    computed: dict[str, float] = {}

    def compute(k: ObjectKey) -> tuple[Desired, Observed]:
        computed[k.name] = time.monotonic()
        end = time.perf_counter() + cost
        while time.perf_counter() < end:  # CPU, as computing a fence of many hosts takes
            pass
        desired = Desired(status=status_for([f"{k.name}.default.svc.cluster.local"]), sidecar=None)
        return desired, Observed(status=desired.status, sidecar=None)  # unchanged: nothing to write

    sink = fence_controller(sink_api, compute)
    learners: dict[str, float] = {}
    async with running(sink):
        sink.sweep(ObjectKey(namespace, n) for n in names)
        while not sink.idle():
            swept = sum(n.startswith("swept") for n in computed)
            if swept in (4, 8) and f"learner{swept}" not in learners:
                learners[f"learner{swept}"] = time.monotonic()
                sink.schedule(ObjectKey(namespace, f"learner{swept}"))
            await asyncio.sleep(0.002)
    assert sink.writes_total["status:unchanged"] == len(names) + len(learners) == 14
    for name, scheduled in learners.items():
        assert computed[name] - scheduled < 0.3  # not behind the sweep's pauses (80 ms a fence here)
    times = [computed[n] for n in names]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 3 * cost  # each swept fence's compute, then a pause of three times that
