"""The fault suite: two workers, a mesh with manual and auto fences, ServiceEntries, VirtualServices, every
record format, malformed and hostile records; a fault strikes mid-stream; ``render`` is the oracle.

Each fault ends with the same checks (:meth:`tests.fixtures.faults.FaultRun.check_end`): every ServiceFence
and Sidecar equal to render's, as many distinct dead letters as render counts, no traceback in any worker
log, and each object written within the README's bound. Each prints its convergence time and writes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from lazystream.kube.client import api_client
from lazystream.testing.mesh import MeshScenario
from tests.fixtures.faults import FaultRun
from tests.fixtures.kafka import delete_topics
from tests.fixtures.ops import cli
from tests.fixtures.private import PrivateKafka, PrivateKube
from tests.fixtures.servers import KubeServer
from tests.fixtures.worker import apply_objects

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.heavy, pytest.mark.timeout(480)]


@pytest.fixture
def scenario(fresh_name: str) -> MeshScenario:
    return MeshScenario(fresh_name[:50], seed=len(fresh_name))


def report(fault: str, run: FaultRun, converged: float) -> None:
    figures = run.check_end()
    print(f"FAULT {fault}: converged {converged:.1f} s after the fault; {json.dumps(figures)}")


@pytest.fixture
def topics_cleanup(kafka_bootstrap: str, fresh_name: str) -> Iterator[None]:
    yield
    asyncio.run(delete_topics(f"{fresh_name}-", bootstrap_servers=kafka_bootstrap))


@contextmanager
def fault_run(
    scenario: MeshScenario, kafka: str, kube: KubeServer, fresh_name: str, tmp_path: Path
) -> Iterator[FaultRun]:
    """A fault's world with its topics created and the scenario applied; its workers stopped at the end."""
    run = FaultRun(scenario, kafka, kube, fresh_name, tmp_path)
    cli(run.env, "topics", "create")
    run.apply_cluster()
    try:
        yield run
    finally:
        run.stop()


def test_records_waiting_at_start(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    scenario: MeshScenario,
    fresh_name: str,
    tmp_path: Path,
    topics_cleanup: None,
) -> None:
    """(1) Every record is on the access topic before either worker starts, and no auto fence exists yet:
    the leader creates them while the ingest is already reading."""
    with fault_run(scenario, kafka_bootstrap, kube_server, fresh_name, tmp_path) as run:
        run.send_all()
        began = time.monotonic()
        run.start("a", "b")
        run.converge("both workers equal to render")
        report("records waiting at start", run, time.monotonic() - began)


def test_kill_9_mid_stream_with_and_without_its_data(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    scenario: MeshScenario,
    fresh_name: str,
    tmp_path: Path,
    topics_cleanup: None,
) -> None:
    """(2) kill -9 of one worker at ~40 % consumed, restarted with its data directory; at ~70 % again,
    restarted with its data directory deleted."""
    with fault_run(scenario, kafka_bootstrap, kube_server, fresh_name, tmp_path) as run:
        feeder = run.mid_stream()
        run.kill("a")
        run.start("a")
        run.wait_until(lambda: run.consumed() >= 0.7, "70 % consumed")
        run.kill("a")
        shutil.rmtree(tmp_path / "data-a")
        run.start("a")
        feeder.finish()
        struck = time.monotonic()
        run.converge("equal to render after two kills")
        report("kill -9", run, time.monotonic() - struck)


def test_broker_restart_mid_stream(
    private_kafka: PrivateKafka,
    kube_server: KubeServer,
    scenario: MeshScenario,
    fresh_name: str,
    tmp_path: Path,
) -> None:
    """(3) The broker stops at ~40 % and comes back 10 s later (the feeder holds its records meanwhile)."""
    with fault_run(scenario, private_kafka.bootstrap, kube_server, fresh_name, tmp_path) as run:
        feeder = run.mid_stream()
        feeder.pause()
        private_kafka.stop()
        time.sleep(10)
        private_kafka.start()
        struck = time.monotonic()
        feeder.finish()
        run.converge("equal to render after the broker restart")
        report("broker restart", run, time.monotonic() - struck)


def test_api_server_down_30_s_mid_stream(
    kafka_bootstrap: str,
    private_kube: PrivateKube,
    scenario: MeshScenario,
    fresh_name: str,
    tmp_path: Path,
    topics_cleanup: None,
) -> None:
    """(4) The API server is away for 30 s from ~40 %; records keep coming."""
    with api_client(private_kube.server.kubeconfig) as api:
        from lazystream.testing.crds import install_test_crds

        install_test_crds(api)
    with fault_run(scenario, kafka_bootstrap, private_kube.server, fresh_name, tmp_path) as run:
        feeder = run.mid_stream()
        private_kube.stop()
        time.sleep(30)
        private_kube.start()
        struck = time.monotonic()
        feeder.finish()
        run.converge("equal to render after the API server outage")
        report("API server down 30 s", run, time.monotonic() - struck)


def test_leadership_change_mid_stream(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    scenario: MeshScenario,
    fresh_name: str,
    tmp_path: Path,
    topics_cleanup: None,
) -> None:
    """(5) The leader stops at ~40 %; the other takes over, and a Service labelled for autoFence right then
    gets its fence from the new leader, with the calls it made before it was labelled."""
    late = next(k for k in scenario.ips if k.namespace == scenario.spaces[1] and k.name == "svc-0")
    (service,) = [
        o
        for o in scenario.objects()
        if o["kind"] == "Service"
        and o["metadata"]["name"] == late.name
        and o["metadata"]["namespace"] == late.namespace
    ]
    with fault_run(scenario, kafka_bootstrap, kube_server, fresh_name, tmp_path) as run:
        with api_client(kube_server.kubeconfig) as api:  # unlabelled at first: not fenced
            client.CoreV1Api(api).patch_namespaced_service(
                late.name, late.namespace, {"metadata": {"labels": {"slime.io/serviceFenced": None}}}
            )
        feeder = run.mid_stream()
        leader = lease_holder(kube_server, scenario.spaces[0])
        run.stop(leader)
        with api_client(kube_server.kubeconfig) as api:
            apply_objects(DynamicClient(api), [service])
        struck = time.monotonic()
        run.wait_until(
            lambda: lease_holder(kube_server, scenario.spaces[0]) not in ("", leader), "a new leader"
        )
        run.start(leader)
        feeder.finish()
        run.converge("equal to render after the leadership change")
        report("leadership change", run, time.monotonic() - struck)


def lease_holder(kube: KubeServer, namespace: str) -> str:
    """The worker name (``a``/``b``) holding the leader Lease, or "" when none does."""
    with api_client(kube.kubeconfig) as api:
        try:
            lease = client.CoordinationV1Api(api).read_namespaced_lease("lazystream-leader", namespace)
        except client.ApiException:
            return ""
    holder = lease.spec.holder_identity or ""
    return holder.removeprefix("worker-")


def test_replay_from_the_beginning_writes_nothing(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    scenario: MeshScenario,
    fresh_name: str,
    tmp_path: Path,
    topics_cleanup: None,
) -> None:
    """(6) After the fences are learned, both workers stop, the access and edges topics are replayed from
    the beginning and the workers start again: not one write."""
    with fault_run(scenario, kafka_bootstrap, kube_server, fresh_name, tmp_path) as run:
        run.start("a", "b")
        run.feeder().finish()
        run.converge("equal to render")
        run.stop()
        before = run.writes()
        cli(run.env, "replay", "--from-beginning", "--topic", "access", "--topic", "edges")
        struck = time.monotonic()
        run.start("a", "b")
        run.wait_until(lambda: run.consumed() >= 1.0, "the replay consumed")
        time.sleep(6)  # refresh periods and the sink's coalescing
        assert run.writes() == before
        run.converge("still equal to render")
        report("replay from the beginning", run, time.monotonic() - struck)


def test_partitions_4_to_12_mid_stream(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    scenario: MeshScenario,
    fresh_name: str,
    tmp_path: Path,
    topics_cleanup: None,
) -> None:
    """(7) At ~40 % the workers stop, ``topics scale --partitions 12`` runs while records keep coming, and
    the workers start on 12 partitions and the next table version."""
    with fault_run(scenario, kafka_bootstrap, kube_server, fresh_name, tmp_path) as run:
        feeder = run.mid_stream()
        run.stop()
        cli(run.env, "topics", "scale", "--partitions", "12")
        scaled = {"LAZYSTREAM_TABLES_VERSION": "2", "LAZYSTREAM_TOPICS_PARTITIONS": "12"}
        run.env.update(scaled)
        for name in ("a", "b"):
            run.worker_env(name, **scaled)
        struck = time.monotonic()
        run.start("a", "b")
        feeder.finish()
        run.converge("equal to render on 12 partitions")
        report("partitions 4 -> 12", run, time.monotonic() - struck)
