"""``explain`` and ``reset`` without ``--admin-url``: the CLI finds the worker pods through the API server
and talks to them through its pod proxy, as kubectl and istioctl reach pods.

There is no kubelet here: the worker runs as a process on this machine, and a Pod object labelled as
deploy/'s workers are, whose status carries this machine's address, stands for its pod. The API server
refuses to proxy to loopback addresses, so the worker listens on every address and the Pod has the
machine's own.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer, unavailable
from tests.fixtures.worker import LAZYSTREAM, apply_objects, bookinfo_in, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.timeout(240)]


def machine_address() -> str:
    """An IPv4 address of this machine other than loopback (the API server proxies to no loopback)."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split()
    found = [a for a in out if "." in a and not a.startswith("127.")]
    if not found:
        unavailable("a non-loopback IPv4 address", "the pod proxy test needs one")
    return found[0]


def test_explain_and_reset_find_the_worker_through_the_api_server(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    core: client.CoreV1Api,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
) -> None:
    builder, _ = bookinfo_in(namespace)
    apply_objects(kube_dynamic, builder.objects())
    env = worker_env(
        kafka_bootstrap,
        kube_server,
        fresh_name,
        tmp_path,
        namespace,
        LAZYSTREAM_WEB_HOST="0.0.0.0",  # noqa: S104 - the pod proxy reaches it
    )
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="lazystream-0", labels={"app": "lazystream"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="worker", image="lazystream")]),
    )
    core.create_namespaced_pod(namespace, pod)
    address = machine_address()
    core.patch_namespaced_pod_status(
        "lazystream-0", namespace, {"status": {"podIP": address, "podIPs": [{"ip": address}]}}
    )
    worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker.log")
    cli_env = {k: v for k, v in env.items() if k != "LAZYSTREAM_ADMIN_URL"}
    try:
        worker.wait_for_output("lazystream ready", timeout=120)
        explained = subprocess.run(
            [LAZYSTREAM, "explain", f"{namespace}/productpage"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert explained.returncode == 0, explained.stderr
        first = explained.stdout.splitlines()[0]
        assert first.startswith(f"ServiceFence {namespace}/productpage (enabled, manual; ")
        assert first.endswith(f"from pod {namespace}/lazystream-0)")
        # a write: the token travels past the API server's proxy, and the worker reviews it
        reset = subprocess.run(
            [LAZYSTREAM, "reset", f"{namespace}/productpage"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert reset.returncode == 0, reset.stderr
        assert reset.stdout.strip() == f"reset 1 fence(s): {namespace}/productpage"
        assert (
            f"admin: POST /fences/{namespace}/productpage/reset by lazystream-test-admin" in worker.output()
        )
    finally:
        assert worker.stop() == 0, worker.output()[-3000:]
