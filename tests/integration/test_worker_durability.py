"""The worker under restarts and load, on real Kafka, kube-apiserver and RocksDB; render is the oracle."""

from __future__ import annotations

import asyncio
import math
import shutil
import signal
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from kubernetes.dynamic import DynamicClient

from lazystream.testing import ClusterBuilder, fluent_bit, global_sidecar_record
from tests.fixtures.kube import AuditLog
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer
from tests.fixtures.worker import (
    LAZYSTREAM,
    apply_objects,
    bookinfo_in,
    get,
    oracle,
    produce,
    records_from,
    wait_for,
    worker_env,
)

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.heavy, pytest.mark.timeout(300)]
SIDECAR = "networking.istio.io/v1alpha3"


def sidecar_hosts(dynamic: DynamicClient, namespace: str, name: str) -> list[str]:
    sidecar = get(dynamic, SIDECAR, "Sidecar", namespace, name)
    return sidecar["spec"]["egress"][0]["hosts"] if sidecar else []


async def test_kill_9_and_lost_data_dir_lose_nothing(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
    audit_log: AuditLog,
) -> None:
    builder, ips = bookinfo_in(namespace)
    apply_objects(kube_dynamic, builder.objects())
    first = records_from(ips, ["details:9080", "reviews:9080"])
    second = records_from(ips, ["ratings:9080"] * 50)
    expected = oracle(builder.objects(), first + second)["Sidecar"]["spec"]["egress"][0]["hosts"]
    # seeding off: only the changelog and RocksDB can bring learned state back
    env = worker_env(
        kafka_bootstrap,
        kube_server,
        fresh_name,
        tmp_path,
        namespace,
        LAZYSTREAM_FENCE_SEED_FROM_STATUS="false",
    )
    access = f"{fresh_name}-access"

    worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker-1.log")
    try:
        worker.wait_for_output("lazystream ready", timeout=120)
        await produce(kafka_bootstrap, access, first)
        wait_for(
            lambda: len(sidecar_hosts(kube_dynamic, namespace, "productpage")) == 4,
            "first hosts",
            worker=worker,
        )
        await produce(kafka_bootstrap, access, second)
        worker.proc.send_signal(signal.SIGKILL)  # records of the second batch may be unconsumed
    finally:
        worker.stop()

    worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker-2.log")
    try:
        worker.wait_for_output("lazystream ready", timeout=120)
        wait_for(
            lambda: sidecar_hosts(kube_dynamic, namespace, "productpage") == expected,
            "the oracle",
            worker=worker,
        )
    finally:
        assert worker.stop() == 0

    # the whole data directory lost: the changelog restores it, and nothing needs writing
    shutil.rmtree(tmp_path / "data")
    before = len(audit_log.find(verb="patch", resource="sidecars", namespace=namespace, name="productpage"))
    worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker-3.log")
    try:
        worker.wait_for_output("lazystream ready", timeout=120)
        time.sleep(5)  # two refresh periods
        assert sidecar_hosts(kube_dynamic, namespace, "productpage") == expected
        assert sorted(p.name for p in (tmp_path / "data").rglob("learned-*.db"))
    finally:
        assert worker.stop() == 0
    writes = audit_log.find(verb="patch", resource="sidecars", namespace=namespace, name="productpage")
    assert len(writes) == before, "a recovered worker rewrote an unchanged Sidecar"
    assert len(writes) <= 4  # first hosts, ratings, at most one more per restart


async def test_write_amplification_and_service_relabel(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
    audit_log: AuditLog,
) -> None:
    """100k records over 200 edges (20 fences x 10 hosts): at most one Sidecar write per fence per
    coalescing interval, and none once nothing changes."""
    builder = ClusterBuilder()
    callers = [f"caller-{i}" for i in range(20)]
    targets = [f"target-{j}" for j in range(10)]
    for i, name in enumerate(callers):
        builder.service(name, namespace, ips=[f"10.251.{hash(namespace) % 250}.{10 + i}"])
        builder.fence(name, namespace, workloadSelector={"fromService": True})
    for name in targets:
        builder.service(name, namespace, labels={"tier": "back"})
    builder.service("extra", namespace, labels={"tier": "back"})  # called by nobody
    builder.items = [o for o in builder.items if o["kind"] != "Namespace"]
    apply_objects(kube_dynamic, builder.objects())
    caller_ips = [o["endpoints"][0]["addresses"][0] for o in builder.items if o["kind"] == "EndpointSlice"]

    worker = WorkerProcess(
        [LAZYSTREAM, "worker"],
        worker_env(kafka_bootstrap, kube_server, fresh_name, tmp_path, namespace),
        tmp_path / "worker.log",
    )
    try:
        worker.wait_for_output("lazystream ready", timeout=120)
        started = time.monotonic()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20)
        await producer.start()
        try:
            batch = []
            for n in range(100_000):
                ip, target = caller_ips[n % 20], targets[(n // 20) % 10]
                record = global_sidecar_record(
                    authority=target, peer_address=f"{ip}:{n % 60000}", time=time.time()
                )
                batch.append(producer.send(f"{fresh_name}-access", fluent_bit(record)))
                if len(batch) == 2000:
                    await asyncio.gather(*batch)
                    batch = []
            await asyncio.gather(*batch)
        finally:
            await producer.stop()

        def all_learned() -> bool:
            return all(len(sidecar_hosts(kube_dynamic, namespace, c)) == 12 for c in callers)

        wait_for(all_learned, "every caller's 10 targets", timeout=180, worker=worker)
        elapsed = time.monotonic() - started
        bound = math.ceil(elapsed / 0.5) + 1
        for caller in callers:
            writes = audit_log.find(verb="patch", resource="sidecars", namespace=namespace, name=caller)
            assert 1 <= len(writes) <= min(bound, 11), (caller, len(writes), bound)
        quiet = len(audit_log.find(verb="patch", resource="sidecars", namespace=namespace))
        time.sleep(5)
        assert len(audit_log.find(verb="patch", resource="sidecars", namespace=namespace)) == quiet

        # a relabelled Service, with no new records: fences selecting it by label see it
        fence = builder.items[[o["kind"] for o in builder.items].index("ServiceFence")]
        apply_objects(
            kube_dynamic,
            [{**fence, "spec": {**fence["spec"], "labelSelector": [{"selector": {"tier": "front"}}]}}],
        )
        relabelled = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "extra", "namespace": namespace, "labels": {"tier": "front"}},
        }
        apply_objects(kube_dynamic, [relabelled], manager="relabeller")
        wait_for(
            lambda: (
                f"*/extra.{namespace}.svc.cluster.local" in sidecar_hosts(kube_dynamic, namespace, "caller-0")
            ),
            "the labelSelector match",
            worker=worker,
        )
        assert f"*/extra.{namespace}.svc.cluster.local" not in sidecar_hosts(
            kube_dynamic, namespace, "caller-1"
        )
    finally:
        assert worker.stop() == 0
