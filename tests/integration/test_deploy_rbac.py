"""The worker's end-to-end flow under deploy/'s RBAC, and the API server's audit log compared with the rules.

The rules are those ``kustomize build deploy/overlays/cluster-accesslog`` renders for the worker: the
ClusterRole ``lazystream-worker`` and the Roles of its namespace (leader election, the global-sidecar's
ConfigMap and Service) and of Istio's (the fallback EnvoyFilter). The test binds the same rules to a
ServiceAccount of a fresh "mesh" namespace (standing for mesh-operator, and for istio-system), gets it a token
with the TokenRequest API, and runs ``lazystream worker`` with a kubeconfig holding only that token, as
tests/integration/test_worker_e2e.py runs it: bookinfo in a fresh "app" namespace, records on Kafka, the
learned Sidecar. Then, from the audit log: no request of that identity was denied, each was allowed by one of
the rules, and every (rule, verb, resource) was used, except those listed in NOT_YET_EXERCISED below.
The leader's duties run too: its Lease, autoFence (a labelled Service fenced, then unfenced), the fallback
EnvoyFilter and the global-sidecar's ConfigMap and Service (created beforehand as deploy/ creates them).
Last, an operator resets a fence through the admin API, which has the worker review the operator's token.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from tests.fixtures.deploy import find, render
from tests.fixtures.kube import AuditEvent, AuditLog
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

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.timeout(300)]
OVERLAY = "cluster-accesslog"
HTTP_CREATED = 201
NAMESPACED_ROLES = {
    # Role name in deploy/ -> the namespace it is rendered in (the test binds it in the mesh namespace)
    "lazystream-leader-election": "mesh-operator",
    "lazystream-worker-global-sidecar": "mesh-operator",
    "lazystream-worker-envoyfilters": "istio-system",
}

NOT_YET_EXERCISED: dict[tuple[str, str, str], str] = {
    # (apiGroup, resource, verb): why the flow below does not use a granted pair. Empty: it uses them all.
    # A feature whose rule this test cannot exercise would be listed here, with the reason.
}


@dataclass(frozen=True)
class Grant:
    """One (apiGroup, resource, verb) of one rule, where it applies (None: every namespace)."""

    group: str
    resource: str
    verb: str
    namespace: str | None
    names: tuple[str, ...]

    def allows(self, event: AuditEvent) -> bool:
        """Whether this grant authorizes ``event``. A server-side apply that creates its object is a patch
        answered 201: the API server authorizes it as a patch and as a create, and logs it once, as a
        patch."""
        verbs = (
            {event.verb, "create"} if event.verb == "patch" and event.code == HTTP_CREATED else {event.verb}
        )
        resource = event.ref("resource") or ""
        if event.ref("subresource"):
            resource = f"{resource}/{event.ref('subresource')}"
        return (
            (event.ref("apiGroup") or "") == self.group
            and resource == self.resource
            and self.verb in verbs
            and (self.namespace is None or event.ref("namespace") == self.namespace)
            and (not self.names or event.ref("name") in self.names)
        )


def grants(rules: list[dict[str, Any]], namespace: str | None) -> list[Grant]:
    return [
        Grant(group, resource, verb, namespace, tuple(rule.get("resourceNames", ())))
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]


@pytest.fixture
def mesh_namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """A second fresh namespace, for what deploy/ puts in mesh-operator and istio-system."""
    name = f"mesh-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture
def deploy_identity(
    kube_api: client.ApiClient, kube_server: KubeServer, mesh_namespace: str, tmp_path: Path
) -> Iterator[tuple[Path, list[Grant], str]]:
    """deploy/'s worker rules bound to ServiceAccount ``lazystream`` of the mesh namespace; a kubeconfig with
    its token (TokenRequest); the grants; the identity's user name."""
    objects = render(OVERLAY)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    subject = [client.RbacV1Subject(kind="ServiceAccount", name="lazystream", namespace=mesh_namespace)]
    core.create_namespaced_service_account(
        mesh_namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="lazystream"))
    )
    cluster_rules = find(objects, "ClusterRole", "lazystream-worker")["rules"]
    cluster_name = f"{mesh_namespace}-lazystream-worker"  # cluster-scoped: unique per test
    rbac.create_cluster_role(
        {"metadata": {"name": cluster_name}, "rules": cluster_rules}  # type: ignore[arg-type]
    )
    rbac.create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=cluster_name),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=cluster_name
            ),
            subjects=subject,
        )
    )
    granted = grants(cluster_rules, None)
    # the global-sidecar's ConfigMap and Service, as deploy/ creates them (the leader only patches them)
    for kind in ("ConfigMap", "Service"):
        skeleton = find(objects, kind, "global-sidecar", "mesh-operator")
        skeleton["metadata"]["namespace"] = mesh_namespace
        apply_objects(DynamicClient(kube_api), [skeleton], manager="kubectl")
    for role_name, rendered_namespace in NAMESPACED_ROLES.items():
        rules = find(objects, "Role", role_name, rendered_namespace)["rules"]
        rbac.create_namespaced_role(
            mesh_namespace,
            {"metadata": {"name": role_name}, "rules": rules},  # type: ignore[arg-type]
        )
        rbac.create_namespaced_role_binding(
            mesh_namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name=role_name),
                role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=role_name),
                subjects=subject,
            ),
        )
        granted += grants(rules, mesh_namespace)
    token = core.create_namespaced_service_account_token(
        "lazystream",
        mesh_namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        ),
    ).status.token
    kubeconfig = yaml.safe_load(kube_server.kubeconfig.read_text())
    kubeconfig["users"][0]["user"] = {"token": token}
    path = tmp_path / "kubeconfig-lazystream"
    path.write_text(yaml.safe_dump(kubeconfig))
    try:
        yield path, granted, f"system:serviceaccount:{mesh_namespace}:lazystream"
    finally:
        rbac.delete_cluster_role_binding(cluster_name)
        rbac.delete_cluster_role(cluster_name)


async def test_the_worker_flow_under_deploy_rbac_uses_every_rule_and_is_never_denied(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    mesh_namespace: str,
    deploy_identity: tuple[Path, list[Grant], str],
    fresh_name: str,
    tmp_path: Path,
    audit_log: AuditLog,
) -> None:
    kubeconfig, granted, user = deploy_identity
    builder, ips = bookinfo_in(namespace)
    # a Service that autoFence fences (its label), for the leader once it creates fences
    builder.service("autofenced", namespace, labels={"slime.io/serviceFenced": "true"})
    apply_objects(kube_dynamic, builder.objects())
    records = records_from(ips, ["details:9080", "reviews:9080"])
    learned = [f"details.{namespace}.svc.cluster.local", f"reviews.{namespace}.svc.cluster.local"]

    env = worker_env(
        kafka_bootstrap,
        kube_server,
        fresh_name,
        tmp_path,
        namespace,
        LAZYSTREAM_GENERAL_AUTO_FENCE="true",
        # what deploy/ puts in mesh-operator and istio-system is in the mesh namespace here
        LAZYSTREAM_GLOBAL_SLIME_NAMESPACE=mesh_namespace,
        LAZYSTREAM_GLOBAL_ISTIO_NAMESPACE=mesh_namespace,
        LAZYSTREAM_GENERAL_CLUSTER_GS_NAMESPACE=mesh_namespace,
    )
    env["LAZYSTREAM_LEADER_ELECTION_LEASE_NAMESPACE"] = mesh_namespace  # deploy/: the worker's namespace
    env["LAZYSTREAM_FALLBACK_MANAGE"] = (
        "true"  # worker_env turns it off: here it writes in the mesh namespace
    )
    env["KUBECONFIG"] = str(kubeconfig)
    worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker.log")
    try:
        worker.wait_for_output("lazystream ready", timeout=120)
        await produce(kafka_bootstrap, f"{fresh_name}-access", records)

        def sidecar_learned() -> bool:
            sidecar = get(kube_dynamic, "networking.istio.io/v1alpha3", "Sidecar", namespace, "productpage")
            hosts = sidecar["spec"]["egress"][0]["hosts"] if sidecar else []
            return all(f"*/{host}" in hosts for host in learned)

        wait_for(sidecar_learned, "the learned Sidecar", worker=worker)
        envoy_filter = ("networking.istio.io/v1alpha3", "EnvoyFilter", mesh_namespace, "to-global-sidecar")
        wait_for(
            lambda: get(kube_dynamic, *envoy_filter) is not None, "the fallback EnvoyFilter", worker=worker
        )
        fence = get(kube_dynamic, "microservice.slime.io/v1alpha1", "ServiceFence", namespace, "productpage")
        assert fence is not None
        assert sorted(fence["status"]["domains"]) == learned

        # autoFence, the leader's duty: the labelled Service's fence and Sidecar are created, and removed
        # (Sidecar first) when the label says no
        def auto(kind: str, api_version: str) -> dict[str, Any] | None:
            return get(kube_dynamic, api_version, kind, namespace, "autofenced")

        wait_for(
            lambda: auto("Sidecar", "networking.istio.io/v1alpha3") is not None,
            "the auto-fence",
            worker=worker,
        )
        label = {"metadata": {"labels": {"slime.io/serviceFenced": "false"}}}
        client.CoreV1Api(kube_dynamic.client).patch_namespaced_service("autofenced", namespace, label)
        wait_for(
            lambda: (
                auto("ServiceFence", "microservice.slime.io/v1alpha1") is None
                and auto("Sidecar", "networking.istio.io/v1alpha3") is None
            ),
            "the auto-fence and its Sidecar removed",
            worker=worker,
        )
        # an operator's reset through the admin API: the worker reviews the operator's token
        operator = dict(env, KUBECONFIG=str(kube_server.kubeconfig))
        admin = f"http://127.0.0.1:{env['LAZYSTREAM_WEB_PORT']}"
        reset = subprocess.run(
            [LAZYSTREAM, "reset", f"{namespace}/productpage", "--admin-url", admin],
            env=operator,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert reset.returncode == 0, reset.stderr
    finally:
        code = worker.stop()
    assert code == 0, worker.output()[-3000:]

    events = [e for e in audit_log.events() if e.user == user and e.raw.get("objectRef")]
    assert events, "no request of the worker's identity in the audit log"
    denied = [(e.verb, e.ref("resource"), e.ref("namespace"), e.ref("name")) for e in events if e.code == 403]
    assert not denied, f"denied under deploy/ RBAC: {denied}"
    unexplained = [
        (e.verb, e.ref("apiGroup"), e.ref("resource"), e.ref("subresource"), e.ref("namespace"))
        for e in events
        if not any(g.allows(e) for g in granted)
    ]
    assert not unexplained, f"allowed by no deploy/ rule (another binding?): {unexplained}"

    used = {(g.group, g.resource, g.verb) for g in granted for e in events if g.allows(e)}
    unused = {(g.group, g.resource, g.verb) for g in granted} - used
    unexpected = sorted(unused - set(NOT_YET_EXERCISED))
    assert not unexpected, f"rules this flow never used (remove them, or list why): {unexpected}"
    # what the flow itself needs is used: the watches of every kind and both writes of the sink
    for pair in [
        ("", "namespaces", "list"),
        ("", "pods", "watch"),
        ("discovery.k8s.io", "endpointslices", "watch"),
        ("networking.istio.io", "virtualservices", "watch"),
        ("microservice.slime.io", "servicefences/status", "patch"),
        ("networking.istio.io", "sidecars", "create"),  # the first apply of a Sidecar
        ("networking.istio.io", "sidecars", "patch"),
        ("networking.istio.io", "sidecars", "get"),  # is the auto-fence's Sidecar lazystream's?
        ("networking.istio.io", "sidecars", "delete"),  # then it goes, first
        ("microservice.slime.io", "servicefences", "create"),  # autoFence
        ("microservice.slime.io", "servicefences", "delete"),
        ("coordination.k8s.io", "leases", "create"),  # leader election
        ("coordination.k8s.io", "leases", "update"),
        ("", "configmaps", "get"),  # the leader reads the wormhole ports back,
        ("", "configmaps", "patch"),  # then keeps the global-sidecar's ConfigMap,
        ("", "services", "patch"),  # Service
        ("networking.istio.io", "envoyfilters", "create"),  # and fallback EnvoyFilter in step
        ("networking.istio.io", "envoyfilters", "patch"),
    ]:
        assert pair in used, pair
    print(
        f"{len(events)} requests; used {len(used)} of {len(used | unused)} (group, resource, verb) grants;"
        f" not yet exercised: {sorted(unused)}"
    )
