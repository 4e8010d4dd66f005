"""Outages and faults with real worker processes (issue 11): the API server stopped for 60 s, a worker
killed -9 under load, the Kafka broker restarted, a rebalance between two workers mid-stream.

The API server and, for the broker fault, Kafka are private servers (``tests/fixtures/private.py``): the
test stops and starts their processes, which the shared servers must never suffer; the other faults use the
shared servers with topics, groups and a namespace of their own. After each one every fence equals what
``lazystream render`` computes from all the records sent (the oracle), the table's changelog holds every
dependency, the worker ran on without a restart, and the errors were counted in its metrics; after the API
server outage the audit log also shows that replaying everything and restarting the worker write nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from prometheus_client.parser import text_string_to_metric_families

from lazystream.config import load_config
from lazystream.config.options import render_options
from lazystream.domain.render import render
from lazystream.kafka import clients as kafka_clients
from lazystream.kube.client import api_client
from lazystream.ops import kafka as ops_kafka
from lazystream.stream.partitioning import partition_of_key
from lazystream.testing import ClusterBuilder, fluent_bit, global_sidecar_record
from lazystream.testing.crds import install_test_crds
from tests.fixtures.kafka import delete_topics, produce_fast
from tests.fixtures.kube import AuditLog
from tests.fixtures.ops import FENCE, cli, config_of, group_lag, learned_hosts, sidecar_spec, writes_in
from tests.fixtures.private import PrivateKafka, PrivateKube
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer, free_port
from tests.fixtures.worker import LAZYSTREAM, apply_objects, get, produce, wait_for, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.heavy]
FENCES = ("productpage", "reviews")
SERVICES = ("productpage", "details", "reviews", "ratings", "extra-0", "extra-1", "extra-2", "extra-3")
API_OUTAGE_S = 60
API_RECOVERY_S = 90
"""Seconds within which every fence is written after the API server returns: a fence whose writes gave up
is retried ``retry_later_seconds`` (30 s) later, and the watch cache re-lists after its backoff."""
BROKER_OUTAGE_S = 10


@pytest.fixture
def private_dynamic(private_kube: PrivateKube) -> Iterator[DynamicClient]:
    """A dynamic client of the private API server, with lazystream's CRDs applied."""
    with api_client(private_kube.server.kubeconfig) as api:
        install_test_crds(api)
        yield DynamicClient(api)


class Mesh:
    """Services with IPs no other test uses, ServiceFences for ``fences``, and records between them."""

    def __init__(
        self, namespace: str, fences: tuple[str, ...] = FENCES, services: tuple[str, ...] = SERVICES
    ) -> None:
        net, subnet = random.randrange(1, 250), random.randrange(0, 250)  # noqa: S311 - not a secret
        self.fences = fences
        self.ips = {name: f"10.{net}.{subnet}.{10 + i}" for i, name in enumerate(services)}
        builder = ClusterBuilder()
        for name, ip in self.ips.items():
            builder.service(name, namespace, ips=[ip])
        for name in fences:
            builder.fence(name, namespace, workloadSelector={"fromService": True})
        self.objects = [o for o in builder.objects() if o["kind"] != "Namespace"]
        self.sent: list[bytes] = []
        self.port = 40000

    def calls(self, source: str, *authorities: str) -> list[bytes]:
        out = []
        for authority in authorities:
            self.port += 1
            record = global_sidecar_record(
                authority=authority, peer_address=f"{self.ips[source]}:{self.port}", time=time.time()
            )
            out.append(fluent_bit(record))
        return out

    def send(self, kafka: str, topic: str, records: list[bytes]) -> None:
        asyncio.run(produce(kafka, topic, records))
        self.sent += records

    def oracle(self) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        """Fence → (Sidecar spec, ServiceFence status) that ``render`` computes from every record sent."""
        result = render(self.objects, self.sent, render_options(load_config(None, {})), time.time())
        by = {(o["kind"], o["metadata"]["name"]): o for o in result.items}
        return {n: (by[("Sidecar", n)]["spec"], by[("ServiceFence", n)]["status"]) for n in self.fences}


def actual(
    dynamic: DynamicClient, namespace: str, fences: tuple[str, ...] = FENCES
) -> dict[str, tuple[Any, Any]]:
    out = {}
    for name in fences:
        fence = get(dynamic, FENCE, "ServiceFence", namespace, name) or {}
        out[name] = (sidecar_spec(dynamic, namespace, name), fence.get("status"))
    return out


def metric(env: dict[str, str], name: str, series: str = "_total", **labels: str) -> float:
    """A counter of the worker (``name`` without ``_total``; a gauge with ``series=""``) summed over the
    series with ``labels``, from its endpoint."""
    url = f"http://127.0.0.1:{env['LAZYSTREAM_WEB_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == name
        for sample in family.samples
        if sample.name == f"{name}{series}" and labels.items() <= sample.labels.items()
    )


def kafka_errors(env: dict[str, str]) -> dict[str, float]:
    """``lazystream_kafka_errors_total`` by client."""
    return {c: metric(env, "lazystream_kafka_errors", client=c) for c in ("ingest", "faust")}


def api_errors(env: dict[str, str]) -> float:
    return metric(env, "lazystream_api_errors")


def make_namespace(kube: PrivateKube, namespace: str) -> None:
    with api_client(kube.server.kubeconfig) as api:
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
        )


@pytest.mark.timeout(420)
def test_worker_and_api_server_outage_then_replay_writes_nothing(
    kafka_bootstrap: str,
    private_kube: PrivateKube,
    private_dynamic: DynamicClient,
    fresh_name: str,
    tmp_path: Path,
) -> None:
    namespace = f"ns-{fresh_name}"[:63]
    make_namespace(private_kube, namespace)
    mesh = Mesh(namespace)
    apply_objects(private_dynamic, mesh.objects)
    env = worker_env(kafka_bootstrap, private_kube.server, fresh_name, tmp_path, namespace)
    access = f"{fresh_name}-access"
    audit = AuditLog(private_kube.server.audit_log)
    try:
        cli(env, "topics", "create")
        # 1. the worker learns while everything is up
        worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker1.log")
        try:
            worker.wait_for_output("lazystream ready", timeout=120)
            mesh.send(kafka_bootstrap, access, mesh.calls("productpage", "details:9080"))
            mesh.send(kafka_bootstrap, access, mesh.calls("reviews", "ratings:9080"))
            want = mesh.oracle()
            wait_for(lambda: actual(private_dynamic, namespace) == want, "the first fences", worker=worker)
        finally:
            assert worker.stop() == 0, worker.output()[-3000:]

        # 2. records keep arriving while the worker is stopped
        mesh.send(
            kafka_bootstrap,
            access,
            mesh.calls("productpage", "reviews:9080", "extra-0:9080", "evil.example.net")
            + mesh.calls("reviews", "extra-1:9080")
            + [b"not a record"],
        )

        # 3. the worker is back; the API server goes away for a while and records keep arriving
        worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker2.log")
        try:
            worker.wait_for_output("lazystream ready", timeout=120)
            errors_before = api_errors(env)
            watch_errors_before = metric(env, "lazystream_api_watch_errors")
            private_kube.stop()
            down_until = time.monotonic() + API_OUTAGE_S
            rounds = [
                mesh.calls("productpage", "extra-2:9080"),
                mesh.calls("reviews", "extra-3:9080", "details:9080"),
                mesh.calls("productpage", "ratings:9080", "details:9080"),
                mesh.calls("reviews", "productpage:9080"),
            ]
            for batch in rounds:
                mesh.send(kafka_bootstrap, access, batch)
                time.sleep(API_OUTAGE_S / len(rounds))
                assert worker.proc.poll() is None, worker.output()[-4000:]
            time.sleep(max(0.0, down_until - time.monotonic()))
            assert worker.proc.poll() is None, (
                f"worker died with the API server down:\n{worker.output()[-4000:]}"
            )
            # counted while the server is away: the failed writes and the failed list/watch requests
            assert api_errors(env) > errors_before
            assert metric(env, "lazystream_api_watch_errors") > watch_errors_before
            private_kube.start()
            back = time.monotonic()
            want = mesh.oracle()
            wait_for(
                lambda: actual(private_dynamic, namespace) == want,
                "every fence equal to the oracle after the outage",
                timeout=API_RECOVERY_S,
                worker=worker,
            )
            print(f"fences equal to the oracle {time.monotonic() - back:.1f} s after the API server returned")
            wait_for(lambda: group_lag(env, f"{fresh_name}-edges") == 0, "edges consumed", worker=worker)
            assert worker.output().count("lazystream ready") == 1  # one process throughout, never restarted
        finally:
            assert worker.stop() == 0, worker.output()[-3000:]
        assert learned_dependencies(env, namespace) == oracle_dependencies(want)  # nothing learned was lost

        # 4. a full replay of access and edges, then a worker restart: no write to fences or Sidecars
        before = writes_in(audit, namespace)
        assert before, "the audit log shows the worker's writes"
        cli(env, "replay", "--from-beginning", "--topic", "access", "--topic", "edges")
        worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker3.log")
        try:
            worker.wait_for_output("lazystream ready", timeout=120)
            wait_for(lambda: group_lag(env, access) == 0, "the access replay consumed", worker=worker)
            wait_for(lambda: group_lag(env, f"{fresh_name}-edges") == 0, "the edges replay", worker=worker)
            time.sleep(5)  # two refresh periods and the sink's coalescing
            assert writes_in(audit, namespace) == before
            assert actual(private_dynamic, namespace) == want
        finally:
            assert worker.stop() == 0, worker.output()[-3000:]
    finally:
        asyncio.run(delete_topics(f"{fresh_name}-", bootstrap_servers=kafka_bootstrap))


# -- faults (issue 11) ------------------------------------------------------------------------------------

LOAD = 1500  # records per burst: enough that the worker is still busy when the fault strikes


def load(mesh: Mesh, seed: int) -> list[bytes]:
    """A burst of calls between the mesh's services (all admitted), with some garbage for the dead letters."""
    rng = random.Random(seed)  # noqa: S311 - not a secret
    out: list[bytes] = []
    for i in range(LOAD):
        if i % 500 == 0:
            out.append(b'{"half": ')
        source = rng.choice(FENCES)
        out += mesh.calls(source, f"{rng.choice([s for s in SERVICES if s != source])}:9080")
    return out


def burst(mesh: Mesh, kafka: str, topic: str, records: list[bytes]) -> None:
    asyncio.run(produce_fast(kafka, topic, records))
    mesh.sent += records


def learned_dependencies(env: dict[str, str], namespace: str) -> dict[str, set[str]]:
    """Fence → hosts in the learned table's changelog (what a restarted worker recovers)."""
    return {
        key.split("/", 1)[1]: set(hosts)
        for key, hosts in learned_hosts(env).items()
        if key.startswith(f"{namespace}/")
    }


def oracle_dependencies(want: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, set[str]]:
    return {name: set(status.get("domains") or {}) for name, (_, status) in want.items()}


def wait_busy(worker: WorkerProcess, env: dict[str, str]) -> float:
    """Wait until the table agent has handled some of the burst's edges; return how many it had handled."""
    seen = 0.0

    def started() -> bool:
        nonlocal seen
        try:
            seen = metric(env, "lazystream_edge_messages")
        except OSError:
            return False
        return seen > 0

    worker.wait_until(started, "the worker to start on the burst", timeout=60)
    return seen


@pytest.mark.timeout(300)
def test_kill_9_worker_under_load_loses_nothing(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
) -> None:
    mesh = Mesh(namespace)
    apply_objects(kube_dynamic, mesh.objects)
    env = worker_env(kafka_bootstrap, kube_server, fresh_name, tmp_path, namespace)
    access = f"{fresh_name}-access"
    try:
        cli(env, "topics", "create")
        worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker1.log")
        try:
            worker.wait_for_output("lazystream ready", timeout=120)
            first = load(mesh, 1)
            burst(mesh, kafka_bootstrap, access, first)
            read = wait_busy(worker, env)
            worker.proc.send_signal(signal.SIGKILL)
            assert worker.proc.wait(timeout=10) == -signal.SIGKILL
        finally:
            worker.stop()
        print(f"killed after {read:.0f} edge messages of a burst of {len(first)} access records")
        burst(mesh, kafka_bootstrap, access, load(mesh, 2))

        worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker2.log")
        try:
            worker.wait_for_output("lazystream ready", timeout=120)
            want = mesh.oracle()
            wait_for(
                lambda: actual(kube_dynamic, namespace) == want,
                "every fence equal to the oracle after kill -9",
                timeout=120,
                worker=worker,
            )
            wait_for(lambda: group_lag(env, f"{fresh_name}-edges") == 0, "edges consumed", worker=worker)
            assert metric(env, "lazystream_records_dead_lettered") > 0  # the restarted worker counts
        finally:
            assert worker.stop() == 0, worker.output()[-3000:]
        # what a worker recovers from the changelog (another worker after a rebalance, or a fresh disk)
        assert learned_dependencies(env, namespace) == oracle_dependencies(want)
    finally:
        asyncio.run(delete_topics(f"{fresh_name}-", bootstrap_servers=kafka_bootstrap))


@pytest.mark.timeout(300)
def test_kafka_broker_restart_under_load_loses_nothing(
    private_kafka: PrivateKafka,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
) -> None:
    kafka = private_kafka.bootstrap
    mesh = Mesh(namespace)
    apply_objects(kube_dynamic, mesh.objects)
    env = worker_env(kafka, kube_server, fresh_name, tmp_path, namespace)
    access = f"{fresh_name}-access"
    cli(env, "topics", "create")
    worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker.log")
    try:
        worker.wait_for_output("lazystream ready", timeout=120)
        burst(mesh, kafka, access, load(mesh, 1))
        read = wait_busy(worker, env)
        errors_before = kafka_errors(env)
        private_kafka.stop()
        time.sleep(BROKER_OUTAGE_S)
        assert worker.proc.poll() is None, f"worker died with the broker down:\n{worker.output()[-4000:]}"
        errors_down = kafka_errors(env)  # counted while the broker is away, by both clients
        print(f"Kafka client errors before the stop {errors_before}, with the broker down {errors_down}")
        assert errors_down["ingest"] > errors_before["ingest"]
        assert errors_down["faust"] > errors_before["faust"]
        private_kafka.start()
        print(f"broker stopped after {read:.0f} edge messages")
        burst(mesh, kafka, access, load(mesh, 2))
        want = mesh.oracle()
        wait_for(
            lambda: actual(kube_dynamic, namespace) == want,
            "every fence equal to the oracle after the broker restart",
            timeout=150,
            worker=worker,
        )
        wait_for(lambda: group_lag(env, f"{fresh_name}-edges") == 0, "edges consumed", worker=worker)
        assert metric(env, "lazystream_records_dead_lettered") > 0
    finally:
        assert worker.stop() == 0, worker.output()[-3000:]
    assert learned_dependencies(env, namespace) == oracle_dependencies(want)


# -- a rebalance between two workers mid-stream -----------------------------------------------------------

REBALANCE_PARTITIONS = 4
FENCES_PER_PARTITION = 3
TICK_S = 0.25
NEW_PER_TICK = 3
"""Dependencies never seen before, per tick: learning goes on through both rebalances (12 fences x 47
services last about 50 s)."""
REPEATS_PER_TICK = 40
"""Calls repeating a known dependency, per tick: the bulk of real traffic."""
SPLIT_S = 5.0
"""Seconds both workers learn side by side before A stops."""
AFTER_S = 5.0
"""Seconds B learns alone before the stream stops."""


def fences_on_every_partition(namespace: str) -> tuple[str, ...]:
    """Fence names that put ``FENCES_PER_PARTITION`` fences on each edges partition, so both workers own
    fences whatever the namespace hashes to."""
    per: dict[int, list[str]] = {p: [] for p in range(REBALANCE_PARTITIONS)}
    names = (f"app-{i}" for i in itertools.count())
    while any(len(held) < FENCES_PER_PARTITION for held in per.values()):
        name = next(names)
        held = per[partition_of_key(f"{namespace}/{name}".encode(), REBALANCE_PARTITIONS)]
        if len(held) < FENCES_PER_PARTITION:
            held.append(name)
    return tuple(sorted(n for held in per.values() for n in held))


class SteadyStream(threading.Thread):
    """Sends a tick of records every ``TICK_S`` until stopped: new dependencies in a fixed random order,
    repeats of earlier ones, and now and then a truncated record (dead-lettered)."""

    def __init__(self, mesh: Mesh, kafka: str, topic: str, seed: int) -> None:
        super().__init__(name="steady-stream", daemon=True)
        self.rng = random.Random(seed)  # noqa: S311 - not a secret
        self.pairs = [(f, s) for f in mesh.fences for s in mesh.ips if s != f]
        self.rng.shuffle(self.pairs)
        self.mesh, self.kafka, self.topic = mesh, kafka, topic
        self.stopping = threading.Event()
        self.dealt = 0
        self.garbage = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._send())
        except BaseException as exc:  # the test reports it
            self.error = exc

    async def _send(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.kafka, acks="all", linger_ms=5)
        await producer.start()
        try:
            tick = 0
            while not self.stopping.is_set():
                new = self.pairs[self.dealt : self.dealt + NEW_PER_TICK]
                self.dealt += len(new)
                known = self.pairs[: self.dealt]
                calls = new + [self.rng.choice(known) for _ in range(REPEATS_PER_TICK)]
                records = [r for source, host in calls for r in self.mesh.calls(source, f"{host}:9080")]
                if tick % 20 == 0:
                    records.append(b'{"truncated": ')
                    self.garbage += 1
                for record in records:
                    await producer.send(self.topic, record)
                await producer.flush()  # acknowledged: part of what the oracle sees
                self.mesh.sent += records
                tick += 1
                await asyncio.sleep(TICK_S)
        finally:
            await producer.stop()

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout=30)
        assert not self.is_alive(), "the stream did not stop"
        assert self.error is None, repr(self.error)


def assignments(env: dict[str, str]) -> dict[str, list[dict[str, list[int]]]]:
    """Each member's partitions (topic → partitions) in faust's group and in the ingest's group."""
    config = config_of(env)

    async def describe() -> dict[str, list[dict[str, list[int]]]]:
        async with kafka_clients.admin_client(config) as admin:
            groups = [config.kafka.app_id, config.kafka.ingest_group]
            return {
                g: [m.assignment for m in (await ops_kafka.describe_group(admin, g)).members] for g in groups
            }

    return asyncio.run(describe())


def spread_over(env: dict[str, str], workers: int) -> bool:
    """Whether the edges and the access partitions are spread over ``workers`` members, each holding some
    (faust's group and the ingest's group)."""
    app = env["LAZYSTREAM_KAFKA_APP_ID"]
    groups = assignments(env)
    for group, topic in ((app, f"{app}-edges"), (f"{app}-ingest", f"{app}-access")):
        members = groups[group]
        held = [m.get(topic) or [] for m in members]
        if (
            len(members) != workers
            or not all(held)
            or sorted(p for ps in held for p in ps) != list(range(REBALANCE_PARTITIONS))
        ):
            return False
    return True


def dead_letters(env: dict[str, str]) -> int:
    described = json.loads(cli(env, "topics", "describe", "--scan", "0", "-o", "json").stdout)
    dlq = env["LAZYSTREAM_TOPICS_DEAD_LETTER"]
    (topic,) = [t for t in described["topics"] if t["name"] == dlq]
    return sum(p["end"] - p["beginning"] for p in topic["partitions"])


@pytest.mark.timeout(300)
def test_rebalance_between_two_workers_mid_stream_loses_nothing(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
) -> None:
    """Worker A learns from a steady stream; B joins (partitions move to it), A stops cleanly (they move
    back to B), and records keep flowing throughout. Every fence ends equal to the oracle of all records
    sent and the changelog holds every dependency."""
    fences = fences_on_every_partition(namespace)
    mesh = Mesh(namespace, fences, fences + tuple(f"svc-{i}" for i in range(36)))
    apply_objects(kube_dynamic, mesh.objects)
    env = worker_env(
        kafka_bootstrap,
        kube_server,
        fresh_name,
        tmp_path,
        namespace,
        LAZYSTREAM_TOPICS_PARTITIONS=str(REBALANCE_PARTITIONS),
    )
    env_b = dict(
        env, LAZYSTREAM_TABLES_DATA_DIR=str(tmp_path / "data-b"), LAZYSTREAM_WEB_PORT=str(free_port())
    )
    stream = SteadyStream(mesh, kafka_bootstrap, f"{fresh_name}-access", seed=7)
    try:
        cli(env, "topics", "create")
        a = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "a.log")
        b: WorkerProcess | None = None
        try:
            a.wait_for_output("lazystream ready", timeout=120)
            stream.start()
            b = WorkerProcess([LAZYSTREAM, "worker"], env_b, tmp_path / "b.log")
            b.wait_for_output("lazystream ready", timeout=120)
            wait_for(
                lambda: spread_over(env, 2), "the partitions split between A and B", timeout=90, worker=b
            )
            wait_for(
                lambda: min(metric(e, "lazystream_fences_owned", series="") for e in (env, env_b)) > 0,
                "both workers owning fences",
                timeout=30,
                worker=b,
            )
            learned_at_split = stream.dealt
            time.sleep(SPLIT_S)
            assert a.stop() == 0, a.output()[-3000:]  # a clean stop: its partitions move back to B
            learned_at_stop = stream.dealt
            wait_for(lambda: spread_over(env, 1), "every partition on B", timeout=60, worker=b)
            time.sleep(AFTER_S)
            stream.stop()
            assert learned_at_split < learned_at_stop < stream.dealt  # new dependencies in every phase
            print(
                f"dependencies sent: {learned_at_split} when B had joined, {learned_at_stop} when A stopped, "
                f"{stream.dealt} in all; {len(mesh.sent)} records"
            )
            want = mesh.oracle()
            wait_for(
                lambda: actual(kube_dynamic, namespace, mesh.fences) == want,
                "every fence equal to the oracle on B",
                timeout=90,
                worker=b,
            )
            wait_for(lambda: group_lag(env, f"{fresh_name}-edges") == 0, "edges consumed", worker=b)
            assert metric(env_b, "lazystream_fences_owned", series="") == len(mesh.fences)
            assert b.output().count("lazystream ready") == 1  # one process throughout
            assert dead_letters(env) >= stream.garbage  # every truncated record dead-lettered (at least once)
            print(
                f"B's Kafka client errors {metric(env_b, 'lazystream_kafka_errors')}, "
                f"ingest commits refused {metric(env_b, 'lazystream_ingest_commits_failed')}"
            )
        finally:
            stream.stop()
            a.stop()
            if b is not None:
                assert b.stop() == 0, b.output()[-3000:]
        assert learned_dependencies(env, namespace) == oracle_dependencies(want)
    finally:
        asyncio.run(delete_topics(f"{fresh_name}-", bootstrap_servers=kafka_bootstrap))
