"""Outages and faults with real worker processes, Kafka and a kube-apiserver of the test's own.

The API server (and, for the broker fault, Kafka) are private servers (``tests/fixtures/private.py``): the
test stops and starts their processes, which the shared servers must never suffer. After each outage or
fault every fence equals what ``lazystream render`` computes from all the records sent (the oracle), and the
audit log shows that replaying everything and restarting the worker write nothing.
"""

from __future__ import annotations

import asyncio
import random
import signal
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
from lazystream.domain.render import render
from lazystream.kube import crds
from lazystream.kube.client import api_client
from lazystream.options import render_options
from lazystream.testing import ClusterBuilder, fluent_bit, global_sidecar_record
from tests.fixtures.kube import AuditLog
from tests.fixtures.private import PrivateKafka, PrivateKube
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer
from tests.integration.test_ops_kafka import _delete_topics, cli
from tests.integration.test_ops_worker import FENCE, group_lag, learned_hosts, sidecar_spec, writes_in
from tests.integration.test_worker_e2e import LAZYSTREAM, apply_objects, get, produce, wait_for, worker_env

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
        crds.apply_crds(api, crds.load_crds(crds.default_crd_dir()))
        yield DynamicClient(api)


class Mesh:
    """Services with IPs no other test uses, ServiceFences for ``FENCES``, and records between them."""

    def __init__(self, namespace: str) -> None:
        net, subnet = random.randrange(1, 250), random.randrange(0, 250)  # noqa: S311 - not a secret
        self.ips = {name: f"10.{net}.{subnet}.{10 + i}" for i, name in enumerate(SERVICES)}
        builder = ClusterBuilder()
        for name, ip in self.ips.items():
            builder.service(name, namespace, ips=[ip])
        for name in FENCES:
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
        return {n: (by[("Sidecar", n)]["spec"], by[("ServiceFence", n)]["status"]) for n in FENCES}


def actual(dynamic: DynamicClient, namespace: str) -> dict[str, tuple[Any, Any]]:
    out = {}
    for name in FENCES:
        fence = get(dynamic, FENCE, "ServiceFence", namespace, name) or {}
        out[name] = (sidecar_spec(dynamic, namespace, name), fence.get("status"))
    return out


def metric(env: dict[str, str], name: str, **labels: str) -> float:
    """A counter of the worker (``name`` without ``_total``) summed over the series with ``labels``, from
    its endpoint."""
    url = f"http://127.0.0.1:{env['LAZYSTREAM_WEB_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == name
        for sample in family.samples
        if sample.name == f"{name}_total" and labels.items() <= sample.labels.items()
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
        asyncio.run(_delete_topics(kafka_bootstrap, f"{fresh_name}-"))


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


async def produce_fast(kafka: str, topic: str, messages: list[bytes]) -> None:
    """Send without waiting for each acknowledgement, then flush: a burst, as Fluent Bit sends."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
    await producer.start()
    try:
        for message in messages:
            await producer.send(topic, message)
        await producer.flush()
    finally:
        await producer.stop()


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
        asyncio.run(_delete_topics(kafka_bootstrap, f"{fresh_name}-"))


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
