"""The whole flow on real servers: the tutorial's bookinfo scenario.

Services, EndpointSlices and the productpage ServiceFence are in the real kube-apiserver; global-sidecar
records built by the testing kit, in Fluent Bit's Kafka JSON shape, go to the access topic; the worker learns
them into its RocksDB table and writes the fence's status and Sidecar. ``lazystream render`` over the same
objects and records is the oracle.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from lazystream.config import load_config
from lazystream.domain.render import render
from lazystream.options import render_options
from lazystream.testing import ClusterBuilder, fluent_bit, global_sidecar_record
from tests.fixtures.kube import AuditLog
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.timeout(240)]
LAZYSTREAM = str(Path(sys.executable).with_name("lazystream"))
FIELD_MANAGER = "lazystream"


def bookinfo_in(namespace: str) -> tuple[ClusterBuilder, dict[str, str]]:
    """The tutorial's bookinfo in ``namespace``, with IPs no other test uses."""
    net, subnet = random.randrange(1, 250), random.randrange(0, 250)  # noqa: S311 - not a secret
    ips = {
        name: f"10.{net}.{subnet}.{10 + i}"
        for i, name in enumerate(["productpage", "details", "reviews", "ratings"])
    }
    builder = ClusterBuilder()
    for name, ip in ips.items():
        builder.service(name, namespace, ips=[ip])
    builder.fence("productpage", namespace, workloadSelector={"fromService": True})
    builder.items = [o for o in builder.items if o["kind"] != "Namespace"]
    return builder, ips


def apply_objects(dynamic: DynamicClient, objects: list[dict[str, Any]], manager: str = "test-setup") -> None:
    for obj in objects:
        api_version = obj.get("apiVersion", "v1")
        resource = dynamic.resources.get(api_version=api_version, kind=obj["kind"])
        resource.server_side_apply(
            body=obj,
            name=obj["metadata"]["name"],
            namespace=obj["metadata"]["namespace"],
            field_manager=manager,
            force_conflicts=True,
        )


def records_from(ips: dict[str, str], calls: list[str]) -> list[bytes]:
    return [
        fluent_bit(
            global_sidecar_record(
                authority=authority, peer_address=f"{ips['productpage']}:{40000 + i}", time=time.time()
            )
        )
        for i, authority in enumerate(calls)
    ]


def worker_env(
    kafka: str, kube: KubeServer, app_id: str, tmp: Path, namespace: str, **extra: str
) -> dict[str, str]:
    env = dict(
        os.environ,
        KUBECONFIG=str(kube.kubeconfig),
        LAZYSTREAM_KAFKA_BOOTSTRAP=kafka,
        LAZYSTREAM_KAFKA_APP_ID=app_id,
        LAZYSTREAM_TOPICS_ACCESS=f"{app_id}-access",
        LAZYSTREAM_TOPICS_EDGES=f"{app_id}-edges",
        LAZYSTREAM_TOPICS_DEAD_LETTER=f"{app_id}-dlq",
        LAZYSTREAM_TOPICS_PARTITIONS="2",
        LAZYSTREAM_TABLES_DATA_DIR=str(tmp / "data"),
        LAZYSTREAM_WEB_PORT=str(free_port()),
        LAZYSTREAM_SINK_COALESCE_SECONDS="0.5",
        LAZYSTREAM_FENCE_REFRESH_PERIOD_SECONDS="2",
        # tests share one API server: each worker manages its own test's namespace only
        LAZYSTREAM_GENERAL_WHITE_NAMESPACE_LIST=namespace,
        LAZYSTREAM_LEADER_ELECTION_LEASE_NAMESPACE=namespace,
        # the fallback objects live in Istio's and the global-sidecar's namespaces, which tests share:
        # only the tests of the fallback objects (which point those namespaces at their own) write them
        LAZYSTREAM_FALLBACK_MANAGE="false",
    )
    env.update(extra)
    return env


async def produce(kafka: str, topic: str, messages: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
    await producer.start()
    try:
        for message in messages:
            await producer.send_and_wait(topic, message)
    finally:
        await producer.stop()


def wait_for(condition, what: str, timeout: float = 60.0, worker: WorkerProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if worker is not None:
            assert worker.proc.poll() is None, f"worker exited waiting for {what}:\n{worker.output()[-4000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + (
            f"\n{worker.output()[-4000:]}" if worker else ""
        )
        time.sleep(0.25)


def get(
    dynamic: DynamicClient, api_version: str, kind: str, namespace: str, name: str
) -> dict[str, Any] | None:
    try:
        return (
            dynamic.resources.get(api_version=api_version, kind=kind)
            .get(name=name, namespace=namespace)
            .to_dict()
        )
    except NotFoundError:
        return None


def oracle(objects: list[dict[str, Any]], records: list[bytes]) -> dict[str, dict[str, Any]]:
    result = render(objects, records, render_options(load_config(None, {})), time.time())
    return {o["kind"]: o for o in result.items if o["metadata"].get("name") == "productpage"}


async def test_tutorial_scenario_end_to_end(
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
    calls = ["details:9080", "reviews:9080", "details:9080", "evil.example.net", "10.0.0.1:80"]
    records = [*records_from(ips, calls), b"not a record", b'{"half": ']
    expected = oracle(builder.objects(), records)

    worker = WorkerProcess(
        [LAZYSTREAM, "worker"],
        worker_env(kafka_bootstrap, kube_server, fresh_name, tmp_path, namespace),
        tmp_path / "worker.log",
    )
    try:
        worker.wait_for_output("lazystream ready", timeout=120)
        await produce(kafka_bootstrap, f"{fresh_name}-access", records)

        def sidecar_learned() -> bool:
            sidecar = get(kube_dynamic, "networking.istio.io/v1alpha3", "Sidecar", namespace, "productpage")
            return sidecar is not None and sidecar["spec"] == expected["Sidecar"]["spec"]

        wait_for(sidecar_learned, "the learned Sidecar", worker=worker)
        fence = get(kube_dynamic, "microservice.slime.io/v1alpha1", "ServiceFence", namespace, "productpage")
        assert fence["status"] == expected["ServiceFence"]["status"]
        assert sorted(fence["status"]["domains"]) == [
            f"details.{namespace}.svc.cluster.local",
            f"reviews.{namespace}.svc.cluster.local",
        ]
        assert fence["spec"] == {"enable": True, "workloadSelector": {"fromService": True}}
        sidecar = get(kube_dynamic, "networking.istio.io/v1alpha3", "Sidecar", namespace, "productpage")
        assert sidecar["metadata"]["ownerReferences"][0]["uid"] == fence["metadata"]["uid"]
        assert {m["manager"] for m in sidecar["metadata"]["managedFields"]} == {FIELD_MANAGER}

        # the changelog topic and the RocksDB directories exist: no silent memory:// store
        assert sorted(p.name for p in (tmp_path / "data").rglob("learned-*.db"))
        wait_for(
            lambda: "dead_letter:unrecognised_line" in worker.output() or "dead_letter" in worker.output(),
            "counters in the log",
            worker=worker,
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            topics = await consumer.topics()
            assert f"{fresh_name}-learned-changelog" in topics
            tps = [TopicPartition(f"{fresh_name}-dlq", p) for p in range(2)]
            consumer.assign(tps)
            dead = []
            end = time.monotonic() + 20
            while len(dead) < 2 and time.monotonic() < end:
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    dead += batch
        finally:
            await consumer.stop()
        reasons = sorted(dict(m.headers)["lazystream-reason"].decode() for m in dead)
        assert reasons == ["invalid_json", "unrecognised_line"]
        assert sorted(m.value for m in dead) == [b"not a record", b'{"half": ']  # nothing lost
        log = worker.output()
        assert "rejected_not_admitted" in log
        assert "ignored_ip_authority" in log

        # writes are coalesced: nothing changes, so no further writes
        writes = len(
            audit_log.find(verb="patch", resource="sidecars", namespace=namespace, name="productpage")
        )
        time.sleep(5)  # two refresh periods
        assert (
            len(audit_log.find(verb="patch", resource="sidecars", namespace=namespace, name="productpage"))
            == writes
        )
        assert writes <= 3

        # a cluster change with no new records: a VirtualService for reviews routes to reviews-v2
        apply_objects(
            kube_dynamic,
            ClusterBuilder()
            .service("reviews-v2", namespace)
            .virtual_service("reviews", namespace, hosts=["reviews"], destinations=["reviews", "reviews-v2"])
            .items[1:],
        )
        wait_for(
            lambda: (
                f"*/reviews-v2.{namespace}.svc.cluster.local"
                in (
                    get(kube_dynamic, "networking.istio.io/v1alpha3", "Sidecar", namespace, "productpage")
                    or {"spec": {"egress": [{"hosts": []}]}}
                )["spec"]["egress"][0]["hosts"]
            ),
            "the VirtualService to reach the Sidecar",
            worker=worker,
        )
    finally:
        code = worker.stop()
    assert code == 0, worker.output()[-3000:]
