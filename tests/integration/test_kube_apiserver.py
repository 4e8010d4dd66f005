"""The API server is a real kube-apiserver: pinned version, CRDs served, writes recorded in its audit log."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from lazystream.kube.client import FIELD_MANAGER
from tests.fixtures.kube import AuditLog
from tests.fixtures.servers import KubeServer

pytestmark = pytest.mark.kube


def test_server_reports_the_pinned_version(kube_api: client.ApiClient, kube_server: KubeServer) -> None:
    info = client.VersionApi(kube_api).get_code()
    assert info.git_version.startswith("v1.")
    if kube_server.version:  # the local server is built from a pinned tag (scripts/infra/versions.env)
        assert info.git_version == f"v{kube_server.version}"


def test_crds_are_established_and_served(kube_crds, kube_dynamic: DynamicClient) -> None:
    assert {c.kind for c in kube_crds} >= {
        "ServiceFence",
        "Sidecar",
        "EnvoyFilter",
        "VirtualService",
        "ServiceEntry",
    }
    assert all(c.established for c in kube_crds)
    fences = kube_dynamic.resources.get(api_version="microservice.slime.io/v1alpha1", kind="ServiceFence")
    assert fences.namespaced
    assert fences.name == "servicefences"


def test_servicefence_and_sidecar_lifecycle_is_in_the_audit_log(
    kube_dynamic: DynamicClient, namespace: str, audit_log: AuditLog
) -> None:
    fences = kube_dynamic.resources.get(api_version="microservice.slime.io/v1alpha1", kind="ServiceFence")
    sidecars = kube_dynamic.resources.get(api_version="networking.istio.io/v1alpha3", kind="Sidecar")
    fence = {
        "apiVersion": "microservice.slime.io/v1alpha1",
        "kind": "ServiceFence",
        "metadata": {"name": "reviews", "namespace": namespace},
        "spec": {
            "enable": True,
            "host": {"details.default.svc.cluster.local": {"stable": {}}},
            "workloadSelector": {"fromService": True},
        },
    }
    created = fences.create(body=fence, namespace=namespace)
    assert fences.get(name="reviews", namespace=namespace).spec.enable is True

    # status is a subresource: written with its own server-side apply
    status = {
        "apiVersion": "microservice.slime.io/v1alpha1",
        "kind": "ServiceFence",
        "metadata": {"name": "reviews", "namespace": namespace},
        "status": {
            "domains": {
                "details.default.svc.cluster.local": {"hosts": ["details.default.svc.cluster.local"]}
            },
            "metricStatus": {'{destination_service="details.default.svc.cluster.local"}': "1"},
        },
    }
    fences.status.server_side_apply(
        body=status, name="reviews", namespace=namespace, field_manager=FIELD_MANAGER
    )
    got = fences.get(name="reviews", namespace=namespace)
    assert got.status.metricStatus['{destination_service="details.default.svc.cluster.local"}'] == "1"
    assert got.spec.enable is True, "applying status must not touch the spec"

    sidecar = {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "Sidecar",
        "metadata": {
            "name": "reviews",
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": "microservice.slime.io/v1alpha1",
                    "kind": "ServiceFence",
                    "name": "reviews",
                    "uid": created.metadata.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "egress": [{"hosts": ["istio-system/*", "*/details.default.svc.cluster.local"]}],
            "workloadSelector": {"labels": {"app": "reviews"}},
        },
    }
    sidecars.server_side_apply(body=sidecar, name="reviews", namespace=namespace, field_manager=FIELD_MANAGER)
    # applying the same object again is a no-op for the stored object
    before = sidecars.get(name="reviews", namespace=namespace).metadata.resourceVersion
    sidecars.server_side_apply(body=sidecar, name="reviews", namespace=namespace, field_manager=FIELD_MANAGER)
    assert sidecars.get(name="reviews", namespace=namespace).metadata.resourceVersion == before
    managers = {m.manager for m in sidecars.get(name="reviews", namespace=namespace).metadata.managedFields}
    assert managers == {FIELD_MANAGER}

    sidecars.delete(name="reviews", namespace=namespace)
    fences.delete(name="reviews", namespace=namespace)
    with pytest.raises(NotFoundError):
        fences.get(name="reviews", namespace=namespace)

    # the server's own record of those writes
    common = {"namespace": namespace, "name": "reviews"}
    assert audit_log.wait_for(verb="create", resource="servicefences", **common)[0].code == 201
    status_writes = audit_log.wait_for(verb="patch", resource="servicefences", subresource="status", **common)
    assert [e.code for e in status_writes] == [200]
    sidecar_applies = audit_log.wait_for(verb="patch", resource="sidecars", **common)
    assert len(sidecar_applies) == 2
    assert all(e.raw["userAgent"] for e in sidecar_applies)
    assert audit_log.wait_for(verb="delete", resource="sidecars", **common)[0].code == 200
    assert audit_log.wait_for(verb="delete", resource="servicefences", **common)[0].code == 200


def test_rbac_is_enforced_and_denials_are_audited(
    kube_api: client.ApiClient, kube_server: KubeServer, namespace: str, audit_log: AuditLog
) -> None:
    """A ServiceAccount without a role is refused, and the audit log records the refusal with its user."""
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata={"name": "nobody"}))
    token = core.create_namespaced_service_account_token(
        "nobody", namespace, client.AuthenticationV1TokenRequest(spec={"audiences": []})
    ).status.token
    cfg = client.Configuration()
    cfg.host = kube_api.configuration.host
    cfg.ssl_ca_cert = kube_api.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(cfg) as restricted, pytest.raises(client.ApiException) as denied:
        client.CoreV1Api(restricted).list_namespaced_service(namespace)
    assert denied.value.status == 403
    user = f"system:serviceaccount:{namespace}:nobody"
    events = audit_log.wait_for(verb="list", resource="services", user=user)
    assert [e.code for e in events] == [403]
    assert events[0].raw["annotations"]["authorization.k8s.io/decision"] == "forbid"
