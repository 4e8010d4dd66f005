"""Faults on the real servers (issue 11): another writer fighting over a Sidecar lazystream owns."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from kubernetes.dynamic import DynamicClient

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
SIDECAR_API = "networking.istio.io/v1alpha3"


def test_another_writer_changing_the_sidecar_is_overruled(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
    audit_log: AuditLog,
) -> None:
    """A second field manager forces its own egress hosts onto the Sidecar: the worker sees the change
    through its watch and applies the desired object again (taking the fields back), without a crash or a
    write loop; the Sidecar ends equal to the oracle."""
    builder, ips = bookinfo_in(namespace)
    apply_objects(kube_dynamic, builder.objects())
    records = records_from(ips, ["details:9080", "reviews:9080"])
    expected = oracle(builder.objects(), records)["Sidecar"]["spec"]
    worker = WorkerProcess(
        [LAZYSTREAM, "worker"],
        worker_env(kafka_bootstrap, kube_server, fresh_name, tmp_path, namespace),
        tmp_path / "worker.log",
    )
    try:
        worker.wait_for_output("lazystream ready", timeout=120)
        asyncio.run(produce(kafka_bootstrap, f"{fresh_name}-access", records))

        def spec() -> object:
            sidecar = get(kube_dynamic, SIDECAR_API, "Sidecar", namespace, "productpage")
            return sidecar["spec"] if sidecar else None

        wait_for(lambda: spec() == expected, "the learned Sidecar", worker=worker)
        intruder = {
            "apiVersion": SIDECAR_API,
            "kind": "Sidecar",
            "metadata": {"name": "productpage", "namespace": namespace},
            "spec": {"egress": [{"hosts": ["*/*"]}], "workloadSelector": {"labels": {"app": "productpage"}}},
        }
        for _ in range(3):  # it insists
            apply_objects(kube_dynamic, [intruder], manager="intruder")
            wait_for(lambda: spec() == expected, "lazystream's Sidecar back", worker=worker)
        before = len(
            audit_log.find(verb="patch", resource="sidecars", namespace=namespace, name="productpage")
        )
        time.sleep(5)  # quiet now: no write loop between the two managers
        after = len(
            audit_log.find(verb="patch", resource="sidecars", namespace=namespace, name="productpage")
        )
        assert after == before
        assert spec() == expected
        sidecar = get(kube_dynamic, SIDECAR_API, "Sidecar", namespace, "productpage")
        assert sidecar is not None
        owners = {m["manager"] for m in sidecar["metadata"]["managedFields"] if m.get("fieldsV1")}
        assert "lazystream" in owners
        assert "Traceback" not in worker.output()
    finally:
        assert worker.stop() == 0
