"""Dependencies of callers without a fence are held, not dropped (a real worker, Kafka and API server).

A Service calls another before anyone fences it: the record is counted ``held_no_fence``, its dependency
goes to the learned-state table under the fence key it would have, and a fence written later, by hand,
starts with it (as ``render`` on the later cluster says). A caller that goes away (its Service deleted,
no fence) has its held state dropped by the next sweep.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from lazystream.config import load_config
from lazystream.config.options import render_options
from lazystream.domain.render import render
from lazystream.kube.client import bearer_token
from lazystream.testing import ClusterBuilder, fluent_bit, global_sidecar_record
from tests.fixtures.kafka import delete_topics
from tests.fixtures.ops import FENCE, learned_hosts
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer
from tests.fixtures.worker import LAZYSTREAM, apply_objects, get, produce, wait_for, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.timeout(300)]


def test_a_fence_written_later_starts_with_what_its_caller_called_before(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    core: client.CoreV1Api,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
) -> None:
    net = f"10.{hash(namespace) % 200 + 20}.{hash(fresh_name) % 250}"
    builder = ClusterBuilder()
    for i, name in enumerate(["front", "cart", "gone"]):
        builder.service(name, namespace, ips=[f"{net}.{10 + i}"])
    builder.fence("front", namespace, workloadSelector={"fromService": True})
    objects = [o for o in builder.objects() if o["kind"] != "Namespace"]
    fence = objects.pop()  # written only after the records
    apply_objects(kube_dynamic, objects)
    env = worker_env(kafka_bootstrap, kube_server, fresh_name, tmp_path, namespace)
    records = [
        fluent_bit(global_sidecar_record(authority=a, peer_address=f"{net}.{ip}:4000{n}", time=time.time()))
        for n, (ip, a) in enumerate([(10, "cart:9080"), (10, "gone:9080"), (12, "cart:9080")])
    ]
    worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker.log")
    try:
        worker.wait_for_output("lazystream ready", timeout=120)
        asyncio.run(produce(kafka_bootstrap, f"{fresh_name}-access", records))
        front, gone = f"{namespace}/front", f"{namespace}/gone"

        def held() -> bool:
            state = learned_hosts(env)
            return len(state.get(front) or {}) == 2 and len(state.get(gone) or {}) == 1

        wait_for(held, "the dependencies of the unfenced callers held in the table", worker=worker)
        metrics = f"http://127.0.0.1:{env['LAZYSTREAM_WEB_PORT']}/metrics"
        with urllib.request.urlopen(metrics, timeout=10) as response:
            assert 'lazystream_records_held_total{reason="no_fence"} 3.0' in response.read().decode()
        assert get(kube_dynamic, "networking.istio.io/v1alpha3", "Sidecar", namespace, "front") is None

        apply_objects(kube_dynamic, [fence])
        want = render([*objects, fence], records, render_options(load_config(None, env)), time.time()).items
        (status,) = [o["status"] for o in want if o["kind"] == "ServiceFence"]
        assert len(status["domains"]) == 2
        wait_for(
            lambda: (
                (get(kube_dynamic, FENCE, "ServiceFence", namespace, "front") or {}).get("status") == status
            ),
            "the later fence's status equal to render's",
            worker=worker,
        )

        # the caller "gone" goes: its held state is dropped by the next sweep, front's stays
        core.delete_namespaced_service("gone", namespace)
        time.sleep(2)  # the watch
        request = urllib.request.Request(
            f"http://127.0.0.1:{env['LAZYSTREAM_WEB_PORT']}/sweep",
            method="POST",
            headers={"Authorization": f"Bearer {bearer_token(kube_server.kubeconfig)}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
        wait_for(lambda: not learned_hosts(env).get(gone), "gone's held state dropped", worker=worker)
        assert len(learned_hosts(env)[front]) == 2
        assert "learned state dropped for 1 callers that are gone" in worker.output()
    finally:
        assert worker.stop() == 0, worker.output()[-3000:]
        asyncio.run(delete_topics(f"{fresh_name}-", bootstrap_servers=kafka_bootstrap))
