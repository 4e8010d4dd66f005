"""The whole flow on real servers: the tutorial's bookinfo scenario.

Services, EndpointSlices and the productpage ServiceFence are in the real kube-apiserver; global-sidecar
records built by the testing kit, in Fluent Bit's Kafka JSON shape, go to the access topic; the worker learns
them into its RocksDB table and writes the fence's status and Sidecar. ``lazystream render`` over the same
objects and records is the oracle.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kubernetes.dynamic import DynamicClient

from lazystream.kube.client import bearer_token
from lazystream.testing import ClusterBuilder
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

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.timeout(240)]
FIELD_MANAGER = "lazystream"


def sweep_pending(env: dict[str, str]) -> int:
    """``GET /sweep``: fences of the worker's sweeps not yet checked."""
    with urllib.request.urlopen(
        f"http://127.0.0.1:{env['LAZYSTREAM_WEB_PORT']}/sweep", timeout=10
    ) as response:
        return int(json.loads(response.read())["pending"])


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

    env = worker_env(kafka_bootstrap, kube_server, fresh_name, tmp_path, namespace)
    worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker.log")
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

        # a sweep on demand recomputes every fence of the worker and, nothing having changed, writes nothing
        sweep = urllib.request.Request(
            f"http://127.0.0.1:{env['LAZYSTREAM_WEB_PORT']}/sweep",
            method="POST",
            headers={"Authorization": f"Bearer {bearer_token(kube_server.kubeconfig)}"},
        )
        with urllib.request.urlopen(sweep, timeout=10) as response:
            assert response.status == 202
            scheduled = json.loads(response.read())["scheduled"]
        fences = kube_dynamic.resources.get(api_version="microservice.slime.io/v1alpha1", kind="ServiceFence")
        assert scheduled == len(fences.get(namespace=namespace).items) > 0
        wait_for(lambda: sweep_pending(env) == 0, "the sweep to be through", worker=worker)
        time.sleep(1)
        assert (
            len(audit_log.find(verb="patch", resource="sidecars", namespace=namespace, name="productpage"))
            == writes
        )

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
    # its watches end together when it stops: the connection pool keeps them all, without warnings
    assert "Connection pool is full" not in worker.output()
