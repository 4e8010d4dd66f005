"""``global.istioRev`` on the real servers: a fence of another Istio revision is neither computed nor written
by the worker (no status, no Sidecar, no write in the API server's audit log), while fences in scope learn
as usual; ``lazystream render`` with the same configuration agrees."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kubernetes.dynamic import DynamicClient

from lazystream.config import load_config
from lazystream.config.options import render_options
from lazystream.domain.render import render
from lazystream.testing import fluent_bit, global_sidecar_record
from tests.fixtures.kube import AuditLog
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer
from tests.fixtures.worker import LAZYSTREAM, apply_objects, bookinfo_in, get, produce, wait_for, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.timeout(240)]
SIDECAR = ("networking.istio.io/v1alpha3", "Sidecar")
FENCE = ("microservice.slime.io/v1alpha1", "ServiceFence")


async def test_a_fence_of_another_revision_is_left_alone(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
    audit_log: AuditLog,
) -> None:
    builder, ips = bookinfo_in(namespace)
    builder.fence("details", namespace, workloadSelector={"fromService": True})
    builder.fence("reviews", namespace, workloadSelector={"fromService": True})
    revisions = {"details": "canary", "reviews": "1-30"}  # productpage: none
    for obj in builder.objects():
        if obj["kind"] == "ServiceFence" and obj["metadata"]["name"] in revisions:
            obj["metadata"]["labels"] = {"istio.io/rev": revisions[obj["metadata"]["name"]]}
    apply_objects(kube_dynamic, builder.objects())
    records = [
        fluent_bit(global_sidecar_record(authority=authority, peer_address=f"{ips[caller]}:{40000 + i}",
                                         time=time.time()))
        for i, (caller, authority) in enumerate(
            [("productpage", "details:9080"), ("details", "ratings:9080"), ("reviews", "ratings:9080")]
        )
    ]  # fmt: skip
    environ = {"LAZYSTREAM_GLOBAL_ISTIO_REV": "1-30", "LAZYSTREAM_GLOBAL_STRICT_REV": "true"}
    expected = {
        o["metadata"]["name"]: o
        for o in render(
            builder.objects(), records, render_options(load_config(None, environ)), time.time()
        ).items
        if o["kind"] == "Sidecar"
    }
    assert set(expected) == {"reviews"}  # productpage has no revision: out of scope under strictRev

    env = {**worker_env(kafka_bootstrap, kube_server, fresh_name, tmp_path, namespace), **environ}
    worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker.log")
    try:
        worker.wait_for_output("lazystream ready", timeout=120)
        await produce(kafka_bootstrap, f"{fresh_name}-access", records)

        def reviews_learned() -> bool:
            sidecar = get(kube_dynamic, *SIDECAR, namespace, "reviews")
            return sidecar is not None and sidecar["spec"] == expected["reviews"]["spec"]

        wait_for(reviews_learned, "the in-scope fence's Sidecar", worker=worker)
        time.sleep(3)  # a refresh period and more: the others would have been written by now
        ours = audit_log.find(verb="patch", resource="sidecars", namespace=namespace, name="reviews")
        assert [
            e for e in ours if "fieldManager=lazystream" in e.raw["requestURI"]
        ]  # the filter finds writes
        for name in ("details", "productpage"):
            assert get(kube_dynamic, *SIDECAR, namespace, name) is None
            assert not (get(kube_dynamic, *FENCE, namespace, name) or {}).get("status")
            for resource in ("sidecars", "servicefences"):
                events = audit_log.find(verb="patch", resource=resource, namespace=namespace, name=name)
                assert [e for e in events if "fieldManager=lazystream" in e.raw["requestURI"]] == []
    finally:
        code = worker.stop()
    assert code == 0, worker.output()[-3000:]
