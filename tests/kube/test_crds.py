"""CRDs on the real API server: the test cluster runs Istio's own, and ``lazystream crds apply`` (the real
command) never replaces a CRD it does not own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError

from lazystream.kube import crds
from lazystream.kube.client import api_client
from lazystream.testing.crds import ISTIO_MANAGER, install_test_crds
from tests.fixtures.private import PrivateKube
from tests.fixtures.servers import KubeServer
from tests.fixtures.worker import LAZYSTREAM

pytestmark = [pytest.mark.kube, pytest.mark.timeout(120)]
LOOSE_SIDECAR = Path(__file__).with_name("loose_sidecar_crd.yaml")


def sidecar(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"egress": [{"hosts": ["./*"]}], **spec},
    }


def create_strict(dynamic: DynamicClient, body: dict[str, Any]) -> None:
    resource = dynamic.resources.get(api_version=body["apiVersion"], kind=body["kind"])
    resource.create(
        body=body, namespace=body["metadata"]["namespace"], query_params=[("fieldValidation", "Strict")]
    )


def test_the_test_cluster_runs_istios_own_crds(kube_crds: list[crds.CRDStatus], kube_dynamic: DynamicClient,
                                               namespace: str) -> None:  # fmt: skip
    istio = {c.kind for c in kube_crds if c.owner == ISTIO_MANAGER}
    assert {"Sidecar", "EnvoyFilter", "VirtualService", "ServiceEntry", "Telemetry"} <= istio
    create_strict(kube_dynamic, sidecar(namespace, "plain"))
    with pytest.raises(DynamicApiError, match="unknown field"):
        create_strict(kube_dynamic, sidecar(namespace, "unknown", notAField=True))
    with pytest.raises(DynamicApiError, match="Unsupported value"):  # Istio's enum, not a free string
        create_strict(
            kube_dynamic, sidecar(namespace, "badmode", outboundTrafficPolicy={"mode": "SOMETIMES"})
        )


def test_crds_apply_leaves_a_crd_it_does_not_own_alone(
    kube_crds: list[crds.CRDStatus], kube_dynamic: DynamicClient, kube_server: KubeServer, namespace: str
) -> None:
    result = subprocess.run(
        [LAZYSTREAM, "crds", "apply", "--from", str(LOOSE_SIDECAR), "--from", str(crds.default_crd_dir()),
         "--kubeconfig", str(kube_server.kubeconfig)],
        capture_output=True, text=True, env=os.environ, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    sidecar_line = next(line for line in result.stdout.splitlines() if line.startswith("sidecars."))
    assert f"left alone (owned by {ISTIO_MANAGER}; --overwrite replaces it)" in sidecar_line
    fence_line = next(line for line in result.stdout.splitlines() if line.startswith("servicefences."))
    assert "updated" in fence_line
    with pytest.raises(DynamicApiError, match="unknown field"):  # still Istio's schema
        create_strict(kube_dynamic, sidecar(namespace, "after", notAField=True))


@pytest.mark.timeout(240)
def test_crds_apply_overwrite_replaces_a_crd_it_does_not_own(private_kube: PrivateKube) -> None:
    """On an API server of the test's own (the shared one keeps Istio's schemas): ``--overwrite`` is the
    one way lazystream replaces another owner's CRD, and says so."""
    server = private_kube.server
    with api_client(server.kubeconfig) as api:
        install_test_crds(api)
        dynamic = DynamicClient(api)
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="t")))
        argv = [LAZYSTREAM, "crds", "apply", "--from", str(LOOSE_SIDECAR), "--overwrite"]
        result = subprocess.run([*argv, "--kubeconfig", str(server.kubeconfig)], capture_output=True,
                                text=True, env=os.environ, timeout=60, check=False)  # fmt: skip
        assert result.returncode == 0, result.stderr
        sidecar_line = next(line for line in result.stdout.splitlines() if line.startswith("sidecars."))
        assert f"overwritten (was owned by {ISTIO_MANAGER})" in sidecar_line
        create_strict(dynamic, sidecar("t", "loose", notAField=True))  # the loose schema took over
