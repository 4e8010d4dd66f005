"""No secrets in logs (issue 11 item 3): a worker authenticating with a bearer token, at debug level, through
start-up, learning, writes and shutdown, never writes the token (nor an Authorization header) to its log."""

from __future__ import annotations

import base64
import signal
from pathlib import Path

import pytest
import yaml
from kubernetes.dynamic import DynamicClient

from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer
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

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.timeout(240)]


def kubeconfig_token(path: Path) -> str:
    config = yaml.safe_load(path.read_text())
    (user,) = config["users"]
    token = user["user"].get("token")
    assert token, "the test kubeconfig authenticates with a token"
    return str(token)


async def test_the_token_never_reaches_the_log(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
) -> None:
    token = kubeconfig_token(kube_server.kubeconfig)
    assert len(token) >= 16
    builder, ips = bookinfo_in(namespace)
    apply_objects(kube_dynamic, builder.objects())
    worker = WorkerProcess(
        [LAZYSTREAM, "worker", "--loglevel", "debug"],
        worker_env(kafka_bootstrap, kube_server, fresh_name, tmp_path, namespace),
        tmp_path / "worker.log",
    )
    try:
        worker.wait_for_output("lazystream ready", timeout=120)
        await produce(kafka_bootstrap, f"{fresh_name}-access", records_from(ips, ["details:9080"]))

        def learned() -> bool:
            sidecar = get(kube_dynamic, "networking.istio.io/v1alpha3", "Sidecar", namespace, "productpage")
            return sidecar is not None and any("details" in h for h in sidecar["spec"]["egress"][0]["hosts"])

        wait_for(learned, "the learned Sidecar", worker=worker)
        # the operator's stack dump (SIGQUIT) goes to the same log: it must not carry the token either
        worker.proc.send_signal(signal.SIGQUIT)
        worker.wait_for_output("Current thread", timeout=10)
        assert "lazystream/kube/informers.py" in worker.output()  # every thread's stack, the watches too
        # SIGUSR2 dumps them too (faust's own handler would start pdb and leave the worker at its prompt)
        worker.proc.send_signal(signal.SIGUSR2)
        worker.wait_until(lambda: worker.output().count("Current thread") == 2, "a second dump", timeout=10)
    finally:
        code = worker.stop()
    log = worker.output()
    assert code == 0, log[-3000:]
    assert " DEBUG urllib3." in log  # the HTTP client's own debug logging was on: the check means something
    forms = {token, base64.b64encode(token.encode()).decode(), token[: len(token) // 2]}
    for form in forms:
        assert form not in log, "the API token (or part of it) is in the worker's log"
    assert "authorization" not in log.lower()
    assert "bearer" not in log.lower()
