"""The fallback path end to end on the real servers: a caller → ``lazystream global-sidecar`` → a service;
the proxy's records → Fluent Bit's forward input (the test stand-in) → Kafka; ``lazystream worker`` learns
the edge; the caller's Sidecar gains the callee.

Each workload has its own address, as pods do: the callee listens on its own 127.x.y.z; the caller connects
from this machine's own non-loopback address, listed in the Endpoints of its Service in the real API server
(which refuses loopback addresses in Endpoints and EndpointSlices: "may not be in the loopback range").
The caller sends what its sidecar's fallback route would: the short Host, ``Slime-Source-Ns`` and
``Slime-Orig-Dest`` (the callee's address). The proxy completes the Host from its Service cache, a watch of
the API server.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kubernetes.dynamic import DynamicClient

from lazystream.testing import ClusterBuilder
from lazystream.testing.fluentbit import ForwardToKafka
from lazystream.testing.http import Client, EchoUpstream
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer, free_port, unavailable
from tests.fixtures.worker import LAZYSTREAM, apply_objects, get, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.timeout(240)]


def loopback_ip() -> str:
    return f"127.{random.randrange(1, 250)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"  # noqa: S311


def own_address() -> str:
    """This machine's IPv4 address on its default route (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127."):
        unavailable("a non-loopback IPv4 address on this machine (Endpoints may not list loopback ones)")
    return str(address)


async def test_a_call_through_the_global_sidecar_reaches_the_callers_sidecar(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
) -> None:
    caller_ip, callee_ip = own_address(), loopback_ip()
    builder = ClusterBuilder()
    builder.service("productpage", namespace, ips=[caller_ip]).fence(
        "productpage", namespace, workloadSelector={"fromService": True}
    )
    builder.service("details", namespace)  # its address is only dialled, never resolved
    apply_objects(kube_dynamic, [o for o in builder.objects() if o["kind"] != "Namespace"])

    env = worker_env(kafka_bootstrap, kube_server, fresh_name, tmp_path, namespace)
    worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker.log")
    proxy: WorkerProcess | None = None
    try:
        worker.wait_for_output("lazystream ready", timeout=120)
        async with (
            ForwardToKafka(kafka_bootstrap, f"{fresh_name}-access") as stand_in,
            EchoUpstream(host=callee_ip) as details,
        ):
            port, probe = free_port(), free_port()
            proxy = WorkerProcess(
                [LAZYSTREAM, "global-sidecar", "--port", str(port), "--probe-port", str(probe),
                 "--records", "forward", "--forward-port", str(stand_in.port),
                 "--kubeconfig", str(kube_server.kubeconfig)],
                dict(env, LAZYSTREAM_GLOBAL_SIDECAR_LISTEN_ADDRESS="127.0.0.1"),
                tmp_path / "global-sidecar.log",
            )  # fmt: skip
            proxy.wait_for_output("lazystream global-sidecar ready", timeout=60)
            assert "event loop uvloop" in proxy.output()  # the default

            async with Client("127.0.0.1", port, local_host=caller_ip) as caller:
                response = await caller.request(
                    "GET",
                    "/details/0",
                    [
                        ("Host", f"details:{details.port}"),
                        ("Slime-Source-Ns", namespace),
                        ("Slime-Orig-Dest", f"{callee_ip}:{details.port}"),
                        ("User-Agent", "e2e-productpage"),
                    ],
                )
            assert response.status == 200
            seen = {k.lower(): v for k, v in response.json()["headers"]}
            assert seen["host"] == f"details.{namespace}:{details.port}"  # completed: the Service exists

            def sidecar_hosts() -> list[str]:
                sidecar = get(
                    kube_dynamic, "networking.istio.io/v1alpha3", "Sidecar", namespace, "productpage"
                )
                return sidecar["spec"]["egress"][0]["hosts"] if sidecar else []

            wanted = f"*/details.{namespace}.svc.cluster.local"
            # the stand-in and the upstream run on this test's loop: wait without blocking it
            deadline = time.monotonic() + 60
            while wanted not in sidecar_hosts():
                assert worker.proc.poll() is None, worker.output()[-3000:]
                assert time.monotonic() < deadline, (
                    f"the Sidecar never gained details; stand-in received {stand_in.received}, produced "
                    f"{stand_in.produced}\n{worker.output()[-3000:]}"
                )
                await asyncio.sleep(0.25)
            assert stand_in.received == 1
            assert stand_in.produced == 1
            assert stand_in.tags == ["lazystream.access"]
    finally:
        codes = [p.stop() for p in (proxy, worker) if p is not None]
    assert codes == [0] * len(codes), (proxy.output()[-2000:] if proxy else "") + worker.output()[-2000:]

    fence = get(kube_dynamic, "microservice.slime.io/v1alpha1", "ServiceFence", namespace, "productpage")
    assert sorted(fence["status"]["domains"]) == [f"details.{namespace}.svc.cluster.local"]
    # the record on the access topic has out_kafka's JSON shape and the proxy's fields
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        # worker_env: the worker creates its topics with two partitions
        consumer.assign([TopicPartition(f"{fresh_name}-access", p) for p in range(2)])
        messages = []
        end = time.monotonic() + 20
        while not messages and time.monotonic() < end:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                messages += batch
    finally:
        await consumer.stop()
    (message,) = messages
    value = orjson.loads(message.value)
    assert next(iter(value)) == "@timestamp"
    assert value["lazystream"] == "global-sidecar/v1"
    assert value["peer_address"].startswith(f"{caller_ip}:")
    assert value["authority"] == f"details:{details.port}"
    assert value["source_namespace"] == namespace
    assert value["original_destination"] == f"{callee_ip}:{details.port}"
    assert value["response_code"] == 200
    assert "records emitted 1, dropped 0" in proxy.output()
