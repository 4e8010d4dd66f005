"""The Helm chart installed, upgraded to another mode and uninstalled by the real helm, on an API server of
this test's own (the chart's cluster-scoped objects must not meet the shared server's, which other tests apply
without Helm's ownership labels)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from lazystream.kube.client import api_client
from lazystream.testing.crds import install_test_crds
from tests.fixtures.deploy import CHART, RELEASE_NAMESPACE, go_tool
from tests.fixtures.private import PrivateKube

pytestmark = [pytest.mark.kube, pytest.mark.timeout(300)]


@pytest.fixture
def cluster(private_kube: PrivateKube) -> Iterator[DynamicClient]:
    """The private API server with Istio's CRDs and the namespaces a user's mesh already has."""
    with api_client(private_kube.server.kubeconfig) as api:
        install_test_crds(api)
        core = client.CoreV1Api(api)
        for name in ("istio-system", "bookinfo"):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        yield DynamicClient(api)


def helm(private_kube: PrivateKube, *args: str) -> str:
    out = subprocess.run(
        [
            str(go_tool("helm")),
            *args,
            "-n",
            RELEASE_NAMESPACE,
            "--kubeconfig",
            str(private_kube.server.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, f"helm {' '.join(args)}:\n{out.stderr}"
    return out.stdout


def exists(
    dynamic: DynamicClient, api_version: str, kind: str, name: str, namespace: str | None = None
) -> bool:
    try:
        dynamic.resources.get(api_version=api_version, kind=kind).get(name=name, namespace=namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_install_upgrade_to_another_mode_and_uninstall(
    cluster: DynamicClient, private_kube: PrivateKube
) -> None:
    mode = str(CHART / "modes" / "cluster-accesslog.yaml")
    out = helm(private_kube, "install", "lazystream", str(CHART), "--create-namespace", "-f", mode)
    assert "STATUS: deployed" in out
    assert "kubectl -n mesh-operator get pods -l app=lazystream" in out

    worker = cluster.resources.get(api_version="apps/v1", kind="StatefulSet").get(
        name="lazystream", namespace=RELEASE_NAMESPACE
    )
    assert worker.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
    assert worker.metadata.annotations["meta.helm.sh/release-name"] == "lazystream"
    assert exists(cluster, "apps/v1", "DaemonSet", "fluent-bit", RELEASE_NAMESPACE)
    assert exists(cluster, "apps/v1", "Deployment", "global-sidecar", RELEASE_NAMESPACE)
    assert exists(
        cluster, "telemetry.istio.io/v1", "Telemetry", "global-sidecar-accesslog", RELEASE_NAMESPACE
    )
    assert exists(
        cluster, "rbac.authorization.k8s.io/v1", "Role", "lazystream-worker-envoyfilters", "istio-system"
    )

    # the same release in namespace mode, prometheus: Fluent Bit and the cluster's global-sidecar go, the
    # bookinfo global-sidecar and the metadata-exchange EnvoyFilter come
    mode = str(CHART / "modes" / "namespace-prometheus.yaml")
    helm(private_kube, "upgrade", "lazystream", str(CHART), "-f", mode)
    assert not exists(cluster, "apps/v1", "DaemonSet", "fluent-bit", RELEASE_NAMESPACE)
    assert not exists(cluster, "apps/v1", "Deployment", "global-sidecar", RELEASE_NAMESPACE)
    assert exists(cluster, "apps/v1", "Deployment", "global-sidecar", "bookinfo")
    assert exists(
        cluster,
        "networking.istio.io/v1alpha3",
        "EnvoyFilter",
        "global-sidecar-metadata-exchange-remove",
        "bookinfo",
    )
    assert not exists(
        cluster, "rbac.authorization.k8s.io/v1", "Role", "lazystream-worker-envoyfilters", "istio-system"
    )
    assert "namespace-prometheus" not in helm(private_kube, "get", "values", "lazystream", "-o", "yaml")
    assert "globalSidecarMode: namespace" in helm(private_kube, "get", "values", "lazystream", "-o", "yaml")

    helm(private_kube, "uninstall", "lazystream")
    assert not exists(cluster, "rbac.authorization.k8s.io/v1", "ClusterRole", "lazystream-worker")
    assert not exists(cluster, "apps/v1", "Deployment", "global-sidecar", "bookinfo")
