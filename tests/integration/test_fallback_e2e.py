"""The leader's fallback objects on the real API server.

A single worker with leader election on leads within a few seconds; it writes the ``to-global-sidecar``
EnvoyFilter and the ``global-sidecar`` Service and ConfigMap. Istio's namespace and the global-sidecar's are
pointed at the test's own namespace (the API server is shared). With autoPort, a Service's ``http-*`` port
reaches all three objects, survives a restart of the leader, and with ``cleanupWormholePort`` goes when the
Service goes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from lazystream.domain.cluster import ObjectKey
from lazystream.kube.cleanup import remove_everything
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer, unique_name
from tests.fixtures.worker import LAZYSTREAM, apply_objects, get, wait_for, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.timeout(240)]
EF = ("networking.istio.io/v1alpha3", "EnvoyFilter")
FAST_LEASE = {
    "LAZYSTREAM_LEADER_ELECTION_LEASE_DURATION_SECONDS": "4",
    "LAZYSTREAM_LEADER_ELECTION_RENEW_DEADLINE_SECONDS": "3",
    "LAZYSTREAM_LEADER_ELECTION_RETRY_PERIOD_SECONDS": "0.5",
}


def fallback_env(namespace: str, **extra: str) -> dict[str, str]:
    return {
        "LAZYSTREAM_FALLBACK_MANAGE": "true",
        "LAZYSTREAM_FALLBACK_RESYNC_SECONDS": "2",
        "LAZYSTREAM_GLOBAL_ISTIO_NAMESPACE": namespace,
        "LAZYSTREAM_GENERAL_CLUSTER_GS_NAMESPACE": namespace,
        "LAZYSTREAM_GENERAL_WORMHOLE_PORT": "9080",
        **FAST_LEASE,
        **extra,
    }


def ef_ports(dynamic: DynamicClient, namespace: str) -> set[int]:
    obj = get(dynamic, *EF, namespace, "to-global-sidecar")
    if obj is None:
        return set()
    return {
        int(p["match"]["routeConfiguration"]["name"])
        for p in obj["spec"]["configPatches"]
        if "routeConfiguration" in p["match"]
    }


def service_ports(dynamic: DynamicClient, namespace: str) -> set[int]:
    obj = get(dynamic, "v1", "Service", namespace, "global-sidecar")
    return set() if obj is None else {p["port"] for p in obj["spec"]["ports"]}


def config_map_ports(dynamic: DynamicClient, namespace: str) -> set[int]:
    obj = get(dynamic, "v1", "ConfigMap", namespace, "global-sidecar")
    return set() if obj is None else set(yaml.safe_load(obj["data"]["cfg"])["wormholePorts"])


def everywhere(dynamic: DynamicClient, namespace: str) -> list[set[int]]:
    return [f(dynamic, namespace) for f in (ef_ports, service_ports, config_map_ports)]


def web_service(namespace: str, name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"app": name},
            "ports": [
                {"name": "http-web", "port": port, "protocol": "TCP"},
                {"name": "tcp-db", "port": port + 1, "protocol": "TCP"},
            ],
        },
    }


def start(env: dict[str, str], log: Path) -> WorkerProcess:
    worker = WorkerProcess([LAZYSTREAM, "worker"], env, log)
    worker.wait_for_output("lazystream ready", timeout=120)
    return worker


@pytest.fixture
def free_http_port() -> int:
    return random.randrange(20000, 60000)  # noqa: S311 - a port no other test's Service uses, by chance


def test_auto_port_reaches_all_three_objects_and_survives_a_restart(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    kube_api: client.ApiClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
    free_http_port: int,
) -> None:
    port = free_http_port
    env = worker_env(
        kafka_bootstrap,
        kube_server,
        fresh_name,
        tmp_path,
        namespace,
        **fallback_env(namespace, LAZYSTREAM_GENERAL_AUTO_PORT="true"),
    )
    worker = start(env, tmp_path / "worker-1.log")
    try:
        wait_for(
            lambda: all({80, 9080} <= s for s in everywhere(kube_dynamic, namespace)),
            "the objects",
            worker=worker,
        )
        assert port not in ef_ports(kube_dynamic, namespace)
        apply_objects(kube_dynamic, [web_service(namespace, "web", port)])
        wait_for(
            lambda: all(port in s for s in everywhere(kube_dynamic, namespace)),
            f"port {port} everywhere",
            worker=worker,
        )
        assert all(port + 1 not in s for s in everywhere(kube_dynamic, namespace))  # tcp-* is no HTTP port
        for kind in (EF, ("v1", "Service"), ("v1", "ConfigMap")):
            obj = get(kube_dynamic, *kind, namespace, "to-global-sidecar" if kind == EF else "global-sidecar")
            assert {m["manager"] for m in obj["metadata"]["managedFields"]} == {"lazystream"}
        service = get(kube_dynamic, "v1", "Service", namespace, "global-sidecar")
        assert service["spec"]["selector"] == {"app": "global-sidecar"}
        assert service["metadata"]["labels"]["slime.io/serviceFenced"] == "false"
        # the Service goes and the leader restarts: without cleanupWormholePort the port stays
        client.CoreV1Api(kube_api).delete_namespaced_service("web", namespace)
        assert worker.stop() == 0
    finally:
        worker.stop()

    worker = start(env, tmp_path / "worker-2.log")
    try:
        worker.wait_for_output("wormhole ports read back", timeout=60)
        # the new leader's first pass wrote all three objects from the ports it read back
        worker.wait_for_output("applied EnvoyFilter", timeout=60)
        assert all(port in s for s in everywhere(kube_dynamic, namespace)), everywhere(
            kube_dynamic, namespace
        )
    finally:
        assert worker.stop() == 0

    removal = remove_everything(kube_api, namespaces=[namespace])
    assert removal.envoy_filters == [ObjectKey(namespace, "to-global-sidecar")]
    assert sorted(removal.global_sidecar) == [
        f"ConfigMap {namespace}/global-sidecar",
        f"Service {namespace}/global-sidecar",
    ]
    assert everywhere(kube_dynamic, namespace) == [set(), set(), set()]


def test_cleanup_wormhole_port_removes_a_port_no_service_uses(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    kube_api: client.ApiClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
    free_http_port: int,
) -> None:
    port = free_http_port
    env = worker_env(
        kafka_bootstrap,
        kube_server,
        fresh_name,
        tmp_path,
        namespace,
        **fallback_env(
            namespace, LAZYSTREAM_GENERAL_AUTO_PORT="true", LAZYSTREAM_GENERAL_CLEANUP_WORMHOLE_PORT="true"
        ),
    )
    apply_objects(kube_dynamic, [web_service(namespace, "web", port)])
    worker = start(env, tmp_path / "worker.log")
    try:
        wait_for(
            lambda: all(port in s for s in everywhere(kube_dynamic, namespace)),
            f"port {port} everywhere",
            worker=worker,
        )
        client.CoreV1Api(kube_api).delete_namespaced_service("web", namespace)
        wait_for(
            lambda: all(port not in s for s in everywhere(kube_dynamic, namespace)),
            f"port {port} gone",
            worker=worker,
        )
        # the static wormholePort and the global-sidecar's own port stay
        assert all({80, 9080} <= s for s in everywhere(kube_dynamic, namespace))
    finally:
        assert worker.stop() == 0


@pytest.fixture
def second_namespace(request: pytest.FixtureRequest, kube_api: client.ApiClient) -> Iterator[str]:
    name = unique_name(request, "ns2")
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def test_namespace_mode_one_set_per_listed_namespace(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    second_namespace: str,
    fresh_name: str,
    tmp_path: Path,
) -> None:
    listed = sorted([namespace, second_namespace])
    env = worker_env(
        kafka_bootstrap,
        kube_server,
        fresh_name,
        tmp_path,
        namespace,
        **fallback_env(
            namespace,
            LAZYSTREAM_GENERAL_GLOBAL_SIDECAR_MODE="namespace",
            LAZYSTREAM_GENERAL_NAMESPACE=",".join(listed),
        ),
    )
    worker = start(env, tmp_path / "worker.log")
    try:
        for ns in listed:
            wait_for(
                lambda ns=ns: everywhere(kube_dynamic, ns) == [{80, 9080}] * 3,
                f"objects in {ns}",
                worker=worker,
            )
            envoy_filter = get(kube_dynamic, *EF, ns, "to-global-sidecar")
            gs = f"outbound|80||global-sidecar.{ns}.svc.cluster.local"
            for patch in envoy_filter["spec"]["configPatches"]:
                for vhost in (patch["patch"].get("value") or {}).get("virtual_hosts", []):
                    for route in vhost["routes"]:
                        if route["route"]["cluster"] == gs:
                            headers = {
                                h["header"]["key"]: h["header"]["value"]
                                for h in route["request_headers_to_add"]
                            }
                            assert headers["Slime-Source-Ns"] == ns
        assert (
            get(kube_dynamic, *EF, "istio-system", "to-global-sidecar") is None or True
        )  # not ours to check
    finally:
        assert worker.stop() == 0
