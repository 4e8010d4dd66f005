"""Leader election against the real kube-apiserver: acquire, wait, hand over, fail over after SIGKILL, never
two leaders, conflicts. Timings are short (a 3 s Lease) and bounds generous: the machine is shared."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from kubernetes import client, watch
from urllib3.exceptions import ProtocolError

from lazystream.kube.client import api_client
from lazystream.kube.leader import (
    Conflict,
    KubeLeaseStore,
    LeaderElector,
    LeaseRecord,
    LeaseSettings,
    Term,
    micro_time,
)
from tests.fixtures.kube import AuditLog
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer, unique_name

pytestmark = [pytest.mark.kube, pytest.mark.timeout(90)]

DURATION, DEADLINE, RETRY = 3.0, 2.0, 0.4
LEASE = "lazystream-leader"


@pytest.fixture
def elector_api(request: pytest.FixtureRequest, kube_server: KubeServer) -> Iterator[client.ApiClient]:
    """A client whose user agent is unique to the test, so the audit log tells its requests apart."""
    with api_client(kube_server.kubeconfig) as api:
        api.user_agent = f"lazystream-leader-test/{unique_name(request, 'ua')}"
        yield api


def settings(namespace: str) -> LeaseSettings:
    return LeaseSettings(namespace, LEASE, DURATION, DEADLINE, RETRY)


@asynccontextmanager
async def running(elector: LeaderElector, release: bool = True) -> AsyncIterator[LeaderElector]:
    await elector.start()
    try:
        yield elector
    finally:
        await elector.stop(release=release)


def read_lease(api: client.ApiClient, namespace: str) -> client.V1Lease:
    return client.CoordinationV1Api(api).read_namespaced_lease(LEASE, namespace)


def by_agent(events: list, api: client.ApiClient) -> list:
    return [e for e in events if e.raw.get("userAgent") == api.user_agent]


def assert_no_overlap(terms: dict[str, list[Term]]) -> None:
    """Leadership periods of all candidates, sorted by start: each ends before the next starts."""
    periods = sorted((t.started, t.ended or float("inf"), who) for who, ts in terms.items() for t in ts)
    for (_, end, who), (start, _, nxt) in itertools.pairwise(periods):
        assert end <= start, f"{who} (until {end:.3f}) and {nxt} (from {start:.3f}) led at the same time"


class HolderHistory:
    """Every holderIdentity the Lease had, in order, from a watch (thread stopped by ``close``)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.holders: list[str] = []
        self._watch = watch.Watch()
        self._stop = threading.Event()
        self._api = client.CoordinationV1Api(api)
        self._namespace = namespace
        self._thread = threading.Thread(target=self._run, name="lease-history", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for event in self._watch.stream(
                    self._api.list_namespaced_lease,
                    self._namespace,
                    field_selector=f"metadata.name={LEASE}",
                    timeout_seconds=2,
                ):
                    holder = event["object"].spec.holder_identity or ""
                    if not self.holders or self.holders[-1] != holder:
                        self.holders.append(holder)
                    if self._stop.is_set():
                        return
            except ProtocolError:
                if self._stop.is_set():
                    return  # the connection closed under the watch by close()
                raise

    def close(self, last: str | None = None) -> None:
        """Stop watching, once the holder ``last`` (if given) has been seen (or after a few seconds)."""
        deadline = time.monotonic() + 5
        while last is not None and self.holders[-1:] != [last] and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._watch.stop()
        self._thread.join(10)
        assert not self._thread.is_alive()


async def test_single_candidate_acquires_and_renews(
    elector_api: client.ApiClient, namespace: str, audit_log: AuditLog
) -> None:
    work_started = asyncio.Event()

    async def lead() -> None:
        work_started.set()
        await asyncio.Event().wait()

    changes: list[bool] = []
    async with running(
        LeaderElector(elector_api, settings(namespace), identity="solo", lead=lead, on_change=changes.append)
    ) as elector:
        assert await elector.wait_leading(10)
        await asyncio.wait_for(work_started.wait(), 5)
        assert elector.is_leader
        assert elector.holder == "solo"
        lease = read_lease(elector_api, namespace)
        assert lease.spec.holder_identity == "solo"
        assert lease.spec.lease_duration_seconds == 3
        first_renewal = lease.spec.renew_time
        await asyncio.sleep(3 * RETRY)
        assert read_lease(elector_api, namespace).spec.renew_time > first_renewal
        assert elector.counters["renewed"] >= 1
    assert changes == [True, False]
    created = by_agent(audit_log.find(verb="create", resource="leases", namespace=namespace), elector_api)
    assert [e.code for e in created] == [201]
    updates = by_agent(audit_log.find(verb="update", resource="leases", namespace=namespace), elector_api)
    assert len(updates) >= 2
    assert all(e.code == 200 for e in updates)
    # released on stop: no holder, a one-second duration
    lease = read_lease(elector_api, namespace)
    assert (lease.spec.holder_identity or "") == ""
    assert lease.spec.lease_duration_seconds == 1


async def test_second_candidate_waits_while_the_leader_renews(
    elector_api: client.ApiClient, namespace: str
) -> None:
    async with running(LeaderElector(elector_api, settings(namespace), identity="first")) as first:
        assert await first.wait_leading(10)
        async with running(LeaderElector(elector_api, settings(namespace), identity="second")) as second:
            # twice the Lease duration: the leader renews, so the candidate never takes over
            assert not await second.wait_leading(2 * DURATION)
            assert second.holder == "first"
            assert first.is_leader
            assert second.counters["acquired"] == 0
        assert first.is_leader
    assert_no_overlap({"first": first.terms, "second": second.terms})


async def test_release_hands_over_at_the_next_attempt(elector_api: client.ApiClient, namespace: str) -> None:
    first = LeaderElector(elector_api, settings(namespace), identity="first")
    second = LeaderElector(elector_api, settings(namespace), identity="second")
    await first.start()
    try:
        assert await first.wait_leading(10)
        async with running(second):
            await asyncio.sleep(2 * RETRY)  # the candidate has seen the Lease held
            assert not second.is_leader
            stopped = time.monotonic()
            await first.stop()
            assert first.terms[-1].reason == "released"
            assert await second.wait_leading(DURATION)
            # released: taken over at the candidate's next attempt, well before the Lease duration
            assert time.monotonic() - stopped < JITTERED_RETRY + 1.0
            lease = read_lease(elector_api, namespace)
            assert lease.spec.holder_identity == "second"
            assert lease.spec.lease_transitions == 1
    finally:
        await first.stop()
    assert_no_overlap({"first": first.terms, "second": second.terms})


JITTERED_RETRY = RETRY * 1.2


def candidate_process(kube_server: KubeServer, namespace: str, identity: str, log: Path) -> WorkerProcess:
    argv = [sys.executable, "-m", "tests.kube.apps.lease_candidate", str(kube_server.kubeconfig), namespace]
    argv += [LEASE, identity, str(DURATION), str(DEADLINE), str(RETRY)]
    return WorkerProcess(argv, dict(os.environ), log)


async def wait_output(child: WorkerProcess, text: str, timeout: float = 30) -> None:
    """Like ``WorkerProcess.wait_for_output``, without blocking the event loop (the electors run on it)."""
    deadline = time.monotonic() + timeout
    while text not in child.output():
        assert child.proc.poll() is None, child.output()
        assert time.monotonic() < deadline, f"timed out waiting for {text!r}:\n{child.output()}"
        await asyncio.sleep(0.05)


async def wait_exit(child: WorkerProcess, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while child.proc.poll() is None:
        assert time.monotonic() < deadline, "the process did not exit"
        await asyncio.sleep(0.02)


def terms_from_output(output: str, killed_at: float | None) -> list[Term]:
    """The child's leadership periods from its LEADING/STOPPED lines; a period open at SIGKILL ends then."""
    terms: list[Term] = []
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word == "LEADING":
            terms.append(Term(started=float(rest)))
        elif word == "STOPPED":
            terms[-1].ended = float(rest.split()[0])
    if terms and terms[-1].ended is None and killed_at is not None:
        terms[-1].ended = killed_at
    return terms


async def test_killed_leader_is_replaced_after_the_lease_duration(
    elector_api: client.ApiClient, namespace: str, kube_server: KubeServer, tmp_path: Path
) -> None:
    """The leader is another process, killed with SIGKILL (no release): the in-process candidate takes over
    one Lease duration after the last renewal it saw, not before, and not much later."""
    history = HolderHistory(elector_api, namespace)
    child = candidate_process(kube_server, namespace, "doomed", tmp_path / "candidate.log")
    killed_at: float | None = None
    try:
        await wait_output(child, "LEADING")
        async with running(LeaderElector(elector_api, settings(namespace), identity="heir")) as heir:
            await asyncio.sleep(DURATION + RETRY)  # longer than a Lease: the living leader keeps it
            assert not heir.is_leader
            assert heir.holder == "doomed"
            child.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await wait_exit(child)
            assert await heir.wait_leading(DURATION + 5)
            took_over = heir.terms[-1].started - killed_at
            # the last renewal came at most one retry period before the kill; the heir then waits a Lease
            # duration from when it saw that renewal, plus at most one jittered retry period
            assert DURATION - RETRY - 0.3 <= took_over <= DURATION + 2 * JITTERED_RETRY + 2.0, took_over
            assert read_lease(elector_api, namespace).spec.holder_identity == "heir"
    finally:
        if child.proc.poll() is None:
            child.proc.kill()
        child.proc.wait()
        history.close(last="")
    assert "STOPPED" not in child.output()  # killed while leading: it never stepped down itself
    assert_no_overlap({"doomed": terms_from_output(child.output(), killed_at), "heir": heir.terms})
    # the Lease went from the killed leader to the heir, and then was released on the heir's clean stop
    assert history.holders == ["doomed", "heir", ""]


async def test_never_two_leaders_through_handovers_and_crashes(
    elector_api: client.ApiClient, namespace: str, kube_server: KubeServer, tmp_path: Path
) -> None:
    """Three in-process candidates and one process; leaders are stopped cleanly, stopped without release
    (a crash: the Lease must expire) and killed, one after another. Leadership periods never overlap and
    the Lease's holders, as watched, follow exactly the order in which candidates led."""
    history = HolderHistory(elector_api, namespace)
    electors = {
        name: LeaderElector(elector_api, settings(namespace), identity=name) for name in ("a", "b", "c")
    }
    child = candidate_process(kube_server, namespace, "proc", tmp_path / "candidate.log")
    killed_at: float | None = None
    try:
        await wait_output(child, "LEADING")  # the process leads first
        for elector in electors.values():
            await elector.start()
        await asyncio.sleep(RETRY * 2)
        child.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await wait_exit(child)
        for how in ("crash", "release"):
            leader = await one_leader([e for n, e in electors.items() if not n.endswith("-stopped")])
            await asyncio.sleep(RETRY * 2)
            await leader.stop(release=how == "release")
            # out of the race; its terms are kept for the check
            electors[f"{leader.identity}-stopped"] = electors.pop(leader.identity)
        last = [e for name, e in electors.items() if not name.endswith("-stopped")]
        assert len(last) == 1
        assert await last[0].wait_leading(DURATION + 5)
    finally:
        for elector in electors.values():
            await elector.stop()
        if child.proc.poll() is None:
            child.proc.kill()
        child.proc.wait()
        history.close(last="")
    terms = {name.removesuffix("-stopped"): e.terms for name, e in electors.items()}
    terms["proc"] = terms_from_output(child.output(), killed_at)
    assert_no_overlap(terms)
    order = [who for _, who in sorted((t.started, who) for who, ts in terms.items() for t in ts)]
    assert [h for h in history.holders if h] == order
    assert len(order) == 4


async def one_leader(electors: list[LeaderElector], timeout: float = DURATION + 5) -> LeaderElector:
    """Wait until one of ``electors`` leads; never more than one at a time."""
    deadline = time.monotonic() + timeout
    while True:
        leading = [e for e in electors if e.is_leader]
        assert len(leading) <= 1, [e.identity for e in leading]
        if leading:
            return leading[0]
        assert time.monotonic() < deadline, "no leader"
        await asyncio.sleep(0.02)


class InterferingStore:
    """The real store; before its first replace, another writer changes the Lease (a real 409 follows)."""

    def __init__(self, inner: KubeLeaseStore, interfere: callable) -> None:
        self.inner = inner
        self.interfere = interfere
        self.interfered = False

    def get(self) -> LeaseRecord | None:
        return self.inner.get()

    def create(self, record: LeaseRecord) -> LeaseRecord:
        return self.inner.create(record)

    def replace(self, record: LeaseRecord) -> LeaseRecord:
        if not self.interfered:
            self.interfered = True
            self.interfere()
        return self.inner.replace(record)


async def test_conflicting_write_is_refused_and_the_candidate_backs_off(
    elector_api: client.ApiClient, namespace: str, audit_log: AuditLog, kube_server: KubeServer
) -> None:
    """Optimistic concurrency: a free Lease is taken by someone else between our read and our write. Our
    write carries the resourceVersion we read, so the API server refuses it (409) and we do not lead."""
    coordination = client.CoordinationV1Api(elector_api)
    now = micro_time(time.time())
    coordination.create_namespaced_lease(
        namespace,
        {
            "metadata": {"name": LEASE},
            "spec": {"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": now, "acquireTime": now},
        },
    )

    with api_client(kube_server.kubeconfig) as other:

        def rival_takes_it() -> None:
            lease = client.CoordinationV1Api(other).read_namespaced_lease(LEASE, namespace)
            lease.spec.holder_identity = "rival"
            lease.spec.lease_duration_seconds = 60
            lease.spec.renew_time = micro_time(time.time())
            client.CoordinationV1Api(other).replace_namespaced_lease(LEASE, namespace, lease)

        store = InterferingStore(
            KubeLeaseStore(elector_api, settings(namespace), request_timeout=5.0), rival_takes_it
        )
        async with running(
            LeaderElector(elector_api, settings(namespace), identity="me", store=store)
        ) as elector:
            await asyncio.sleep(DURATION)
            assert store.interfered
            assert not elector.is_leader
            assert elector.counters["conflict"] == 1
            assert elector.holder == "rival"
    assert read_lease(elector_api, namespace).spec.holder_identity == "rival"
    updates = by_agent(audit_log.find(verb="update", resource="leases", namespace=namespace), elector_api)
    assert [e.code for e in updates] == [409]


def test_store_create_conflict(elector_api: client.ApiClient, namespace: str) -> None:
    """Two candidates creating the Lease at once: the second create is a Conflict, not an error."""
    store = KubeLeaseStore(elector_api, settings(namespace), request_timeout=5.0)
    now = micro_time(time.time())
    record = LeaseRecord("one", 3, now, now, 0)
    created = store.create(record)
    assert created.resource_version
    with pytest.raises(Conflict):
        store.create(LeaseRecord("two", 3, now, now, 0))
    stale = LeaseRecord("two", 3, now, now, 1, resource_version=created.resource_version)
    store.replace(LeaseRecord("one", 3, now, micro_time(time.time()), 0, created.resource_version))
    with pytest.raises(Conflict):
        store.replace(stale)
    assert store.get().holder == "one"


async def test_leader_that_sees_another_holder_stops_its_work_at_once(
    elector_api: client.ApiClient, namespace: str
) -> None:
    """Someone else writes itself into the Lease (an operator, a split brain): at its next renewal the leader
    sees it and cancels its leader work immediately, without waiting for any deadline."""
    cancelled_at: list[float] = []

    async def lead() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled_at.append(time.monotonic())
            raise

    async with running(LeaderElector(elector_api, settings(namespace), identity="me", lead=lead)) as elector:
        assert await elector.wait_leading(10)
        lease = read_lease(elector_api, namespace)
        lease.spec.holder_identity = "usurper"
        lease.spec.renew_time = micro_time(time.time())
        client.CoordinationV1Api(elector_api).replace_namespaced_lease(LEASE, namespace, lease)
        usurped = time.monotonic()
        while elector.is_leader and time.monotonic() - usurped < 5:
            await asyncio.sleep(0.02)
        assert not elector.is_leader
        assert cancelled_at
        assert cancelled_at[0] - usurped < JITTERED_RETRY + 0.5
        assert elector.terms[-1].reason == "lost:usurper"
    # it did not release a Lease it no longer holds
    assert read_lease(elector_api, namespace).spec.holder_identity == "usurper"


class PartitionedStore:
    """The real store until ``cut`` is set; then every request hangs until its timeout (a partition)."""

    def __init__(self, inner: KubeLeaseStore, timeout: float) -> None:
        self.inner = inner
        self.cut = threading.Event()
        self.timeout = timeout

    def _hang(self) -> None:
        time.sleep(self.timeout)
        raise TimeoutError("partitioned")

    def get(self) -> LeaseRecord | None:
        if self.cut.is_set():
            self._hang()
        return self.inner.get()

    def create(self, record: LeaseRecord) -> LeaseRecord:
        return self.inner.create(record)

    def replace(self, record: LeaseRecord) -> LeaseRecord:
        if self.cut.is_set():
            self._hang()
        return self.inner.replace(record)


async def test_leader_cut_off_from_the_api_server_stops_before_the_lease_expires(
    elector_api: client.ApiClient, namespace: str
) -> None:
    """Requests hang (a network partition): the leader stops leading at its renew deadline, counted from the
    start of its last successful renewal, so before any other candidate could take the Lease over."""
    store = PartitionedStore(KubeLeaseStore(elector_api, settings(namespace), request_timeout=1.0), 1.0)
    elector = LeaderElector(elector_api, settings(namespace), identity="me", store=store, request_timeout=1.0)
    async with running(elector, release=False):
        assert await elector.wait_leading(10)
        await asyncio.sleep(RETRY)
        store.cut.set()
        cut = time.monotonic()
        while elector.is_leader:
            await asyncio.sleep(0.02)
        stopped = time.monotonic()
        assert stopped - cut <= DEADLINE + 0.2
        assert stopped - cut < DURATION
        await asyncio.sleep(0.1)
        assert elector.terms[-1].reason == "renew-deadline"


async def test_failed_leader_work_releases_the_lease(elector_api: client.ApiClient, namespace: str) -> None:
    runs: list[float] = []

    async def lead() -> None:
        runs.append(time.monotonic())
        if len(runs) == 1:
            raise RuntimeError("leader work crashed")
        await asyncio.Event().wait()

    async with running(LeaderElector(elector_api, settings(namespace), identity="me", lead=lead)) as elector:
        deadline = time.monotonic() + 10
        while len(runs) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # stepped down and released, then (the only candidate) took the Lease again: the work restarted
        assert len(runs) == 2
        assert elector.terms[0].reason == "lead-failed"
        assert elector.counters["released"] == 1
        assert elector.is_leader
