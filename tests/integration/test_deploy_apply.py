"""Every manifest of every deploy/ overlay and of the Helm chart in each mode, applied to the real
kube-apiserver with server-side apply; and the chart installed, upgraded and uninstalled by the real helm.

The test API server has no controllers, so nothing runs; creating the StatefulSet, Deployments and DaemonSet
is harmless and checks them against the server's own validation (a dry run would check the same, and is
used for the global-sidecar Service a second time to show the leader's port additions are compatible).
The objects go to the overlays' own namespaces (mesh-operator, istio-system, kafka, bookinfo), applied
idempotently under one field manager; Istio's Telemetry and Strimzi's KafkaTopic get stand-in CRDs
(deploy_crds.yaml). The namespaces the user's cluster already has (istio-system, kafka, bookinfo) are
created when missing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from lazystream.kube import crds
from tests.fixtures.deploy import MODES, OVERLAYS, find, render, render_chart

pytestmark = [pytest.mark.kube, pytest.mark.timeout(180)]
MANAGER = "lazystream-deploy-test"
STAND_INS = Path(__file__).with_name("deploy_crds.yaml")


@pytest.fixture(scope="module")
def deploy_dynamic(kube_api: client.ApiClient, kube_crds: list[crds.CRDStatus]) -> DynamicClient:
    crds.apply_crds(kube_api, [d for d in yaml.safe_load_all(STAND_INS.read_text()) if d])
    return DynamicClient(kube_api)


def apply(dynamic: DynamicClient, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    meta = obj["metadata"]
    extra = {"dry_run": "All"} if dry_run else {}
    result = resource.server_side_apply(
        body=obj,
        name=meta["name"],
        namespace=meta.get("namespace") if resource.namespaced else None,
        field_manager=MANAGER,
        force_conflicts=True,
        **extra,
    )
    return dict(result.to_dict())


def ensure_namespaces(core: client.CoreV1Api, objects: list[dict[str, Any]]) -> None:
    declared = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    existing = {n.metadata.name for n in core.list_namespace().items}
    for name in sorted({o["metadata"].get("namespace") for o in objects} - declared - existing - {None}):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))


SOURCES = [
    *(pytest.param(render, o, id=f"overlay-{o}") for o in OVERLAYS),
    *(pytest.param(render_chart, m, id=f"chart-{m}") for m in MODES),
]


@pytest.mark.parametrize(("renderer", "mode"), SOURCES)
def test_every_manifest_is_accepted(
    renderer: Callable[[str], list[dict[str, Any]]],
    mode: str,
    deploy_dynamic: DynamicClient,
    kube_api: client.ApiClient,
) -> None:
    objects = renderer(mode)
    ensure_namespaces(client.CoreV1Api(kube_api), objects)
    # Namespaces first, then RBAC and configuration, then workloads: the order kubectl would take
    order = {"Namespace": 0, "ServiceAccount": 1, "ClusterRole": 1, "Role": 1, "ConfigMap": 2}
    applied = []
    for obj in sorted(objects, key=lambda o: order.get(o["kind"], 3)):
        result = apply(deploy_dynamic, obj)
        assert result["metadata"]["uid"], obj["metadata"]
        owners = {m["manager"] for m in result["metadata"]["managedFields"]}
        assert MANAGER in owners
        applied.append((obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]))
    assert len(applied) == len(objects)
    assert len(set(applied)) == len(applied)  # no object twice in one overlay

    # what the server stored is what the overlay says (a typo'd field would have been dropped or refused)
    worker = find(objects, "StatefulSet", "lazystream", "mesh-operator")
    stored = deploy_dynamic.resources.get(api_version="apps/v1", kind="StatefulSet").get(
        name="lazystream", namespace="mesh-operator"
    )
    assert stored.spec.volumeClaimTemplates[0].metadata.name == "data"
    assert (
        stored.spec.template.spec.containers[0].readinessProbe.httpGet.path
        == worker["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
    )

    # the leader's later server-side apply of the global-sidecar's ports (issue 7) shares the Service with
    # this manifest without a conflict: another manager adds a port (dry run: nothing is stored)
    for service in (
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "global-sidecar"
    ):
        addition = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "global-sidecar", "namespace": service["metadata"]["namespace"]},
            "spec": {"ports": [{"name": "http-9080", "port": 9080, "protocol": "TCP", "targetPort": 9080}]},
        }
        resource = deploy_dynamic.resources.get(api_version="v1", kind="Service")
        result = resource.server_side_apply(
            body=addition,
            name="global-sidecar",
            namespace=service["metadata"]["namespace"],
            field_manager="lazystream",
            dry_run="All",
        )
        assert sorted(p.port for p in result.spec.ports) == [80, 9080]
