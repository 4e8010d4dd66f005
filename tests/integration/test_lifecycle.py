"""Fence lifecycle on the real servers: autoFence as the tutorial walks through it, the leader failing over,
disabling a fence, and switching lazystream off (issue 6)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from lazystream.kube.cleanup import ENVOY_FILTER, SERVICE_FENCE, SIDECAR, managed_by
from lazystream.testing import ClusterBuilder, fluent_bit, global_sidecar_record
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer
from tests.fixtures.worker import LAZYSTREAM, apply_objects, get, produce, wait_for, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.timeout(300)]
CREATED_BY = "app.kubernetes.io/created-by"
FENCED = "slime.io/serviceFenced"
FAST_LEASE = {
    "LAZYSTREAM_LEADER_ELECTION_LEASE_DURATION_SECONDS": "4",
    "LAZYSTREAM_LEADER_ELECTION_RENEW_DEADLINE_SECONDS": "3",
    "LAZYSTREAM_LEADER_ELECTION_RETRY_PERIOD_SECONDS": "0.5",
}


def autofence_env(
    kafka: str, kube: KubeServer, app_id: str, tmp: Path, namespace: str, **extra: str
) -> dict[str, str]:
    return worker_env(
        kafka,
        kube,
        app_id,
        tmp,
        namespace,
        LAZYSTREAM_GENERAL_AUTO_FENCE="true",
        LAZYSTREAM_GENERAL_DEFAULT_FENCE="true",
        **FAST_LEASE,
        **extra,
    )


def fences(dynamic: DynamicClient, namespace: str) -> dict[str, dict[str, Any]]:
    resource = dynamic.resources.get(api_version=SERVICE_FENCE[0], kind=SERVICE_FENCE[1])
    return {f["metadata"]["name"]: f for f in (i.to_dict() for i in resource.get(namespace=namespace).items)}


def auto_fences(dynamic: DynamicClient, namespace: str) -> set[str]:
    return {
        name
        for name, f in fences(dynamic, namespace).items()
        if (f["metadata"].get("labels") or {}).get(CREATED_BY) == "fence-controller"
    }


def sidecars(dynamic: DynamicClient, namespace: str) -> set[str]:
    resource = dynamic.resources.get(api_version=SIDECAR[0], kind=SIDECAR[1])
    return {i.metadata.name for i in resource.get(namespace=namespace).items}


def label(core: client.CoreV1Api, namespace: str, service: str | None, value: str | None) -> None:
    """Set (or with None remove) the serviceFenced label on a Service, or on the Namespace."""
    patch = {"metadata": {"labels": {FENCED: value}}}
    if service is None:
        core.patch_namespace(namespace, patch)
    else:
        core.patch_namespaced_service(service, namespace, patch)


def lease_holder(kube_api: client.ApiClient, namespace: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(kube_api).read_namespaced_lease("lazystream-leader", namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return lease.spec.holder_identity or None


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def test_autofence_walkthrough_and_disable(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_api: client.ApiClient,
    kube_dynamic: DynamicClient,
    core: client.CoreV1Api,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    builder = ClusterBuilder()
    for i, name in enumerate(["reviews", "ratings", "details", "manual"]):
        builder.service(name, namespace, ips=[f"10.251.{hash(namespace) % 250}.{10 + i}"])
    builder.fence("manual", namespace, workloadSelector={"fromService": True})
    objects = [o for o in builder.objects() if o["kind"] != "Namespace"]
    for obj in objects:
        if obj["kind"] == "ServiceFence":
            obj["metadata"]["labels"] = {"team": "payments"}  # a manual fence: never autoFence's
    apply_objects(kube_dynamic, objects)
    manual_before = fences(kube_dynamic, namespace)["manual"]

    env = autofence_env(kafka_bootstrap, kube_server, fresh_name, tmp_path, namespace)
    workers.append(WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker.log"))
    worker = workers[0]
    worker.wait_for_output("lazystream ready", timeout=120)
    three = {"reviews", "ratings", "details"}

    # defaultFence: the three Services without a manual fence get one, with the created-by label
    wait_for(lambda: auto_fences(kube_dynamic, namespace) == three, "three auto fences", worker=worker)
    created = fences(kube_dynamic, namespace)["reviews"]
    assert created["spec"] == {"enable": True, "workloadSelector": {"fromService": True}}
    assert {m["manager"] for m in created["metadata"]["managedFields"]} == {"lazystream"}
    wait_for(lambda: three <= sidecars(kube_dynamic, namespace), "their Sidecars", worker=worker)

    # the Namespace label false removes every auto fence, and their Sidecars first
    label(core, namespace, None, "false")
    wait_for(lambda: not auto_fences(kube_dynamic, namespace), "no auto fences", worker=worker)
    wait_for(lambda: not (three & sidecars(kube_dynamic, namespace)), "no Sidecars of them", worker=worker)

    # a Service label true wins over the Namespace's: that one fence comes back
    label(core, namespace, "ratings", "true")
    wait_for(lambda: auto_fences(kube_dynamic, namespace) == {"ratings"}, "ratings' fence", worker=worker)

    # removing both labels restores all three
    label(core, namespace, None, None)
    label(core, namespace, "ratings", None)
    wait_for(lambda: auto_fences(kube_dynamic, namespace) == three, "all three again", worker=worker)

    # the manual fence kept its labels and spec throughout
    manual = fences(kube_dynamic, namespace)["manual"]
    assert manual["metadata"]["labels"] == manual_before["metadata"]["labels"] == {"team": "payments"}
    assert manual["spec"] == manual_before["spec"]

    # enable: false on the manual fence removes its Sidecar (no garbage collector involved)
    wait_for(
        lambda: "manual" in sidecars(kube_dynamic, namespace), "the manual fence's Sidecar", worker=worker
    )
    resource = kube_dynamic.resources.get(api_version=SERVICE_FENCE[0], kind=SERVICE_FENCE[1])
    resource.patch(
        name="manual",
        namespace=namespace,
        body={"spec": {"enable": False}},
        content_type="application/merge-patch+json",
    )
    wait_for(lambda: "manual" not in sidecars(kube_dynamic, namespace), "Sidecar removed", worker=worker)

    # deleting an auto fence by hand: its Sidecar goes, and autoFence re-creates the fence (Slime's quirk)
    uid = fences(kube_dynamic, namespace)["details"]["metadata"]["uid"]
    resource.delete(name="details", namespace=namespace)
    wait_for(
        lambda: (
            fences(kube_dynamic, namespace).get("details", {}).get("metadata", {}).get("uid")
            not in (None, uid)
        ),
        "details' fence re-created",
        worker=worker,
    )

    # switching off: restart the worker first (nothing may depend on its memory), stop it, uninstall
    assert worker.stop() == 0
    workers.append(WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker2.log"))
    workers[1].wait_for_output("lazystream ready", timeout=120)
    wait_for(
        lambda: three <= sidecars(kube_dynamic, namespace), "Sidecars after the restart", worker=workers[1]
    )
    assert workers[1].stop() == 0
    done = subprocess.run(
        [LAZYSTREAM, "uninstall", "--yes"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=240,  # a long-lived dev API server may hold thousands of them
    )
    assert "Sidecars" in done.stdout
    leftovers = [
        (kind, (obj["metadata"].get("namespace"), obj["metadata"]["name"]))
        for kind in (SIDECAR, SERVICE_FENCE, ENVOY_FILTER)
        for obj in (
            i.to_dict() for i in kube_dynamic.resources.get(api_version=kind[0], kind=kind[1]).get().items
        )
        # everything lazystream wrote, anywhere; auto-created-looking fences only here, because other tests
        # leave such fences (never lazystream's) in namespaces that stay Terminating on a reused server
        if managed_by(obj)
        or (
            obj["metadata"].get("namespace") == namespace
            and (obj["metadata"].get("labels") or {}).get(CREATED_BY) == "fence-controller"
        )
    ]
    assert leftovers == [], json.dumps(leftovers)
    manual = fences(kube_dynamic, namespace)["manual"]  # the manual fence stays, without lazystream's status
    assert manual["metadata"]["labels"] == {"team": "payments"}


def test_leader_failover_continues_autofence(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_api: client.ApiClient,
    kube_dynamic: DynamicClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    builder = ClusterBuilder().service("first", namespace, ips=["10.249.0.10"])
    apply_objects(kube_dynamic, [o for o in builder.objects() if o["kind"] != "Namespace"])
    for i in range(2):
        env = autofence_env(
            kafka_bootstrap,
            kube_server,
            fresh_name,
            tmp_path / f"w{i}",
            namespace,
            LAZYSTREAM_LEADER_ELECTION_IDENTITY=f"worker-{i}",
        )
        (tmp_path / f"w{i}").mkdir()
        workers.append(WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / f"w{i}.log"))
    for worker in workers:
        worker.wait_for_output("lazystream ready", timeout=150)
    wait_for(lambda: lease_holder(kube_api, namespace) is not None, "a leader")
    wait_for(lambda: auto_fences(kube_dynamic, namespace) == {"first"}, "the first auto fence")

    leader = lease_holder(kube_api, namespace)
    index = int(str(leader).rsplit("-", 1)[1])
    workers[index].proc.kill()  # kill -9: no release, the Lease has to expire
    workers[index].proc.wait()
    other = f"worker-{1 - index}"
    wait_for(lambda: lease_holder(kube_api, namespace) == other, "the other worker to lead", timeout=30)

    more = ClusterBuilder().service("second", namespace, ips=["10.249.0.11"])
    apply_objects(kube_dynamic, [o for o in more.objects() if o["kind"] != "Namespace"])
    wait_for(
        lambda: auto_fences(kube_dynamic, namespace) == {"first", "second"},
        "the new leader's auto fence",
        worker=workers[1 - index],
    )
    assert get(kube_dynamic, SERVICE_FENCE[0], "ServiceFence", namespace, "second") is not None


def test_deadline_takes_effect_when_it_passes(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    host = f"details.{namespace}.svc.cluster.local"
    builder = ClusterBuilder().service("details", namespace).service("productpage", namespace)
    builder.fence("productpage", namespace, workloadSelector={"fromService": True})
    apply_objects(kube_dynamic, [o for o in builder.objects() if o["kind"] != "Namespace"])
    # a refresh period far longer than the test: only the deadline's own timer can remove the host in time
    env = {
        **worker_env(kafka_bootstrap, kube_server, fresh_name, tmp_path, namespace),
        "LAZYSTREAM_FENCE_REFRESH_PERIOD_SECONDS": "600",
    }
    workers.append(WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker.log"))

    def egress() -> list[str]:
        sidecar = get(kube_dynamic, SIDECAR[0], "Sidecar", namespace, "productpage")
        return list(sidecar["spec"]["egress"][0]["hosts"]) if sidecar else []

    workers[0].wait_for_output("lazystream ready", timeout=150)
    # the deadline is set once the worker runs, so a slow start cannot eat it
    deadline = int(time.time()) + 15
    fence_spec = {"host": {host: {"deadline": {"expire": {"seconds": deadline}}}}}
    resource = kube_dynamic.resources.get(api_version=SERVICE_FENCE[0], kind=SERVICE_FENCE[1])
    resource.patch(
        name="productpage",
        namespace=namespace,
        body={"spec": fence_spec},
        content_type="application/merge-patch+json",
    )
    wait_for(lambda: f"*/{host}" in egress(), "the host before its deadline", timeout=60, worker=workers[0])
    assert time.time() < deadline, "the host reached the Sidecar too late for this test to mean anything"
    wait_for(
        lambda: f"*/{host}" not in egress(), "the host gone after its deadline", timeout=60, worker=workers[0]
    )
    gone_at = time.time()
    assert deadline <= gone_at <= deadline + 10, f"removed {gone_at - deadline:+.1f} s from the deadline"
    fence = get(kube_dynamic, SERVICE_FENCE[0], "ServiceFence", namespace, "productpage")
    assert fence is not None
    assert fence["status"]["domains"][host]["status"] == "EXPIRE"


def test_autofence_scoping(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_api: client.ApiClient,
    kube_dynamic: DynamicClient,
    core: client.CoreV1Api,
    fresh_name: str,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    """whiteNamespaceList and managementSelectors choose the namespaces; selfResourceRev labels what autoFence
    creates; istioRev + strictRev keep autoFence's hands off fences of another revision."""
    spaces = [f"{fresh_name}-{suffix}"[:63] for suffix in ("a", "b", "c")]
    labels = [{"team": "mesh"}, {"team": "other"}, {"team": "mesh"}]
    for name, ns_labels in zip(spaces, labels, strict=True):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=ns_labels)))
    try:
        builder = ClusterBuilder()
        for i, name in enumerate(spaces):
            builder.service("web", name, ips=[f"10.248.{i}.10"])
        for rev in ("canary", "stable"):  # created by autoFence once, their Services gone since
            builder.fence(f"gone-{rev}", spaces[2], workloadSelector={"fromService": True})
        objects = [o for o in builder.objects() if o["kind"] != "Namespace"]
        for obj in objects:
            if obj["kind"] == "ServiceFence":
                rev = obj["metadata"]["name"].removeprefix("gone-")
                obj["metadata"]["labels"] = {CREATED_BY: "fence-controller", "istio.io/rev": rev}
        apply_objects(kube_dynamic, objects)
        config = tmp_path / "lazyload.yaml"
        config.write_text(
            "general:\n"
            "  autoFence: true\n"
            "  defaultFence: true\n"
            f"  whiteNamespaceList: {','.join(spaces)}\n"
            "  managementSelectors: [{matchLabels: {team: mesh}}]\n"
            "global:\n"
            "  istioRev: canary\n"
            "  strictRev: true\n"
            "  selfResourceRev: canary\n"
        )
        env = autofence_env(kafka_bootstrap, kube_server, fresh_name, tmp_path, spaces[0])
        del env["LAZYSTREAM_GENERAL_WHITE_NAMESPACE_LIST"]  # the file's list applies
        workers.append(
            WorkerProcess([LAZYSTREAM, "worker", "--config", str(config)], env, tmp_path / "worker.log")
        )
        worker = workers[0]
        worker.wait_for_output("lazystream ready", timeout=120)

        # a and c match the management selector; b does not
        wait_for(lambda: auto_fences(kube_dynamic, spaces[0]) == {"web"}, "a's fence", worker=worker)
        wait_for(lambda: "web" in auto_fences(kube_dynamic, spaces[2]), "c's fence", worker=worker)
        created = fences(kube_dynamic, spaces[0])["web"]
        assert created["metadata"]["labels"] == {CREATED_BY: "fence-controller", "istio.io/rev": "canary"}
        # the canary fence whose Service is gone is deleted; the stable one is another revision's business
        wait_for(
            lambda: auto_fences(kube_dynamic, spaces[2]) == {"web", "gone-stable"},
            "only the in-revision orphan deleted",
            worker=worker,
        )
        # out of the management selectors: nothing created
        assert auto_fences(kube_dynamic, spaces[1]) == set()
        # a relabelled namespace comes into scope
        core.patch_namespace(spaces[1], {"metadata": {"labels": {"team": "mesh"}}})
        wait_for(lambda: auto_fences(kube_dynamic, spaces[1]) == {"web"}, "b's fence", worker=worker)
    finally:
        for running in workers:  # before its namespaces go
            running.stop()
        for name in spaces:
            core.delete_namespace(name)


def test_workload_fences(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    core: client.CoreV1Api,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    """fenceLabelKeyAlias: a fence per value of a pod label while a pod with that label runs; calls from
    those pods teach it; it goes with the last pod."""
    builder = ClusterBuilder().service("cart", namespace, ips=["10.247.0.20"])
    apply_objects(kube_dynamic, [o for o in builder.objects() if o["kind"] != "Namespace"])
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="front-1", labels={"tier": "front"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="app")]),
    )
    core.create_namespaced_pod(namespace, pod)
    # no kubelet here: the pod gets its IP the way a kubelet reports it, through the status subresource
    core.patch_namespaced_pod_status(
        "front-1", namespace, {"status": {"podIP": "10.247.0.10", "podIPs": [{"ip": "10.247.0.10"}]}}
    )
    env = worker_env(
        kafka_bootstrap,
        kube_server,
        fresh_name,
        tmp_path,
        namespace,
        LAZYSTREAM_GENERAL_AUTO_FENCE="true",
        LAZYSTREAM_GENERAL_FENCE_LABEL_KEY_ALIAS="tier:role",
        **FAST_LEASE,
    )
    workers.append(WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker.log"))
    worker = workers[0]
    worker.wait_for_output("lazystream ready", timeout=120)
    name = "role-front.workload.identity"
    wait_for(lambda: auto_fences(kube_dynamic, namespace) == {name}, "the workload fence", worker=worker)
    assert fences(kube_dynamic, namespace)[name]["spec"] == {
        "enable": True,
        "workloadSelector": {"labels": {"tier": "front"}},
    }

    record = fluent_bit(
        global_sidecar_record(authority="cart:8080", peer_address="10.247.0.10:40000", time=time.time())
    )
    asyncio.run(produce(kafka_bootstrap, f"{fresh_name}-access", [record]))

    def learned() -> bool:
        sidecar = get(kube_dynamic, SIDECAR[0], "Sidecar", namespace, name)
        return (
            sidecar is not None
            and f"*/cart.{namespace}.svc.cluster.local" in sidecar["spec"]["egress"][0]["hosts"]
        )

    wait_for(learned, "the workload fence's Sidecar learning cart", worker=worker)
    sidecar = get(kube_dynamic, SIDECAR[0], "Sidecar", namespace, name)
    assert sidecar is not None
    assert sidecar["spec"]["workloadSelector"] == {"labels": {"tier": "front"}}

    core.delete_namespaced_pod("front-1", namespace, grace_period_seconds=0)
    wait_for(lambda: not auto_fences(kube_dynamic, namespace), "the workload fence gone", worker=worker)
    wait_for(lambda: name not in sidecars(kube_dynamic, namespace), "its Sidecar gone", worker=worker)
