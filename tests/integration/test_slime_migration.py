"""From Slime to lazystream on a cluster that keeps Slime's own ServiceFence CRD: Slime stopped, a worker
started on the same fences. What Slime learned (``status.metricStatus``) is kept, and what the worker writes
is accepted by Slime's CRD, which types a domain's status as an integer (so the worker writes numbers)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from lazystream.domain.fences import metric_status
from lazystream.kube import crds
from lazystream.kube.client import api_client
from lazystream.testing.crds import ISTIO_MANAGER, istio_crds_file
from tests.fixtures.private import PrivateKube
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.worker import (
    LAZYSTREAM,
    apply_objects,
    bookinfo_in,
    get,
    produce,
    records_from,
    wait_for,
    worker_env,
)

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.timeout(300)]
SLIME_CRD = Path(__file__).with_name("slime_shaped_servicefence_crd.yaml")
FENCE = ("microservice.slime.io/v1alpha1", "ServiceFence")
SIDECAR = ("networking.istio.io/v1alpha3", "Sidecar")


async def test_a_slime_cluster_moves_to_lazystream_keeping_what_slime_learned(
    kafka_bootstrap: str, private_kube: PrivateKube, fresh_name: str, tmp_path: Path
) -> None:
    namespace = "shop"
    with api_client(private_kube.server.kubeconfig) as api:
        crds.apply_crds(api, crds.load_crds(istio_crds_file()), manager=ISTIO_MANAGER)
        (slime,) = crds.apply_crds(api, crds.load_crds(SLIME_CRD), manager="helm")
        assert crds.numeric_domain_status(api)
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
        )
        dynamic = DynamicClient(api)
        builder, ips = bookinfo_in(namespace)
        apply_objects(dynamic, builder.objects(), manager="slime")
        # what Slime left: reviews learned (metricStatus), and a domain no longer generated
        reviews, old = (f"{n}.{namespace}.svc.cluster.local" for n in ("reviews", "old"))
        slime_status = {
            "metricStatus": metric_status([reviews]),
            "domains": {reviews: {"hosts": [reviews]}, old: {"hosts": [old], "status": 0}},
        }
        fences = dynamic.resources.get(api_version=FENCE[0], kind=FENCE[1])
        fences.status.patch(
            body={"status": slime_status}, name="productpage", namespace=namespace,
            content_type="application/merge-patch+json",
        )  # fmt: skip

        env = worker_env(kafka_bootstrap, private_kube.server, fresh_name, tmp_path, namespace)
        worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker.log")
        try:
            worker.wait_for_output("lazystream ready", timeout=120)
            assert "types domain statuses as integers (Slime's): writing numbers" in worker.output()
            await produce(kafka_bootstrap, f"{fresh_name}-access", records_from(ips, ["details:9080"]))
            details = f"details.{namespace}.svc.cluster.local"

            def learned() -> bool:
                sidecar = get(dynamic, *SIDECAR, namespace, "productpage")
                return sidecar is not None and f"*/{details}" in sidecar["spec"]["egress"][0]["hosts"]

            wait_for(learned, "the Sidecar with what Slime and lazystream learned", worker=worker)
            hosts = get(dynamic, *SIDECAR, namespace, "productpage")["spec"]["egress"][0]["hosts"]
            assert f"*/{reviews}" in hosts  # learned by Slime, kept
            assert f"*/{old}" in hosts  # EXPIREWAIT: still listed for now
            time.sleep(1)
            status = get(dynamic, *FENCE, namespace, "productpage")["status"]
            assert set(status["metricStatus"]) == set(metric_status([reviews, details]))
            assert status["domains"][old]["status"] == 2  # EXPIREWAIT, as Slime's enum number
            assert "status" not in status["domains"][details]  # ACTIVE: the zero value, left out
        finally:
            code = worker.stop()
        assert code == 0, worker.output()[-3000:]
        assert slime.action == "created"
        with pytest.raises(Exception, match="must be of type integer"):  # the names are what it refuses
            fences.status.patch(
                body={"status": {"domains": {old: {"hosts": [old], "status": "EXPIREWAIT"}}}},
                name="productpage", namespace=namespace, content_type="application/merge-patch+json",
            )  # fmt: skip
