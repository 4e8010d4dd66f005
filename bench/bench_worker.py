"""Records/s through ``lazystream worker`` next to a bare consumer (aiokafka ``getmany`` + ``orjson.loads``)
on the same topic in the same run, and produce-to-Sidecar latency p50/p99.

Needs the real servers: ``eval "$(scripts/infra/servers.sh env)"; python -m bench.bench_worker``.
Targets (issue 5): worker >= 0.3 x the bare consumer and >= 10k records/s; p99 <= 2 s.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from kubernetes import client

from bench.harness import cluster_api, cpu_seconds, quantile, worker_env
from lazystream.kube.client import dynamic_client
from lazystream.testing import ClusterBuilder, fluent_bit, global_sidecar_record
from lazystream.testing.kafka import create_topics

PARTITIONS = 4


@dataclass
class WorkerFigures:
    records: int
    bare_rps: float
    worker_rps: float
    latencies: list[float]
    bare_cpu_us: float = float("nan")
    """CPU time per record of the bare consumer (its process, user + system)."""
    worker_cpu_us: float = float("nan")
    """CPU time per record of the worker process over the same steady-state span as ``worker_rps``."""

    def __str__(self) -> str:
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = quantile(lat, 0.99)
        return (
            f"{self.records} records: bare consumer {self.bare_rps:,.0f}/s, worker {self.worker_rps:,.0f}/s "
            f"(x{self.worker_rps / self.bare_rps:.2f}); produce-to-Sidecar p50 {p50:.2f} s, p99 {p99:.2f} s "
            f"({len(lat)} samples); CPU per record: bare {self.bare_cpu_us:.1f} µs, worker "
            f"{self.worker_cpu_us:.1f} µs (x{self.bare_cpu_us / self.worker_cpu_us:.2f})"
        )


def setup_cluster(api: client.ApiClient, namespace: str, fences: int, targets: int) -> list[str]:
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    builder = ClusterBuilder()
    ips = []
    for i in range(fences):
        ip = f"10.252.{abs(hash(namespace)) % 250}.{10 + i}"
        builder.service(f"caller-{i}", namespace, ips=[ip]).fence(
            f"caller-{i}", namespace, workloadSelector={"fromService": True}
        )
        ips.append(ip)
    for j in range(targets):
        builder.service(f"target-{j}", namespace)
    dyn = dynamic_client(api)
    for obj in builder.items:
        if obj["kind"] == "Namespace":
            continue
        resource = dyn.resources.get(api_version=obj.get("apiVersion", "v1"), kind=obj["kind"])
        resource.server_side_apply(
            body=obj, name=obj["metadata"]["name"], namespace=namespace, field_manager="bench"
        )
    return ips


async def fill(bootstrap: str, topic: str, ips: list[str], targets: int, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        pending = []
        for n in range(count):
            record = global_sidecar_record(
                authority=f"target-{(n // len(ips)) % targets}",
                peer_address=f"{ips[n % len(ips)]}:{n % 60000}",
                time=time.time(),
            )
            pending.append(await producer.send(topic, fluent_bit(record)))  # queued: a future of the ack
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def bare_consumer(bootstrap: str, topic: str, count: int) -> tuple[float, float]:
    """Records/s and CPU µs per record of a consumer that only fetches and decodes."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", max_poll_records=5000
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        # this process's own CPU clock: /proc counts 10 ms ticks, and a 2,000-record smoke run can take less
        start, cpu, seen = time.perf_counter(), time.process_time(), 0
        while seen < count:
            for batch in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                for message in batch:
                    orjson.loads(message.value)
                seen += len(batch)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        return count / elapsed, cpu / count * 1e6
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return sum(max(0, o.offset) for tp, o in offsets.items() if tp.topic == topic)
    except KafkaError:  # the group (or its coordinator) does not exist yet
        return 0
    finally:
        await admin.close()


async def edges_caught_up(bootstrap: str, group: str, topic: str, timeout: float) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()  # fetches metadata
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        end = sum((await consumer.end_offsets(tps)).values()) if tps else 0
    finally:
        await consumer.stop()
    deadline = time.monotonic() + timeout
    while await committed(bootstrap, group, topic) < end and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


def sidecar_hosts(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    try:
        obj = (
            dynamic_client(api)
            .resources.get(api_version="networking.istio.io/v1alpha3", kind="Sidecar")
            .get(name=name, namespace=namespace)
        )
    except Exception:
        return []
    return list(obj.spec.egress[0].hosts)


async def run(count: int = 100_000, samples: int = 30) -> WorkerFigures:
    bootstrap = os.environ["LAZYSTREAM_TEST_KAFKA_BOOTSTRAP"]
    kubeconfig = Path(os.environ["LAZYSTREAM_TEST_KUBECONFIG"])
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    api = cluster_api(kubeconfig)
    ips = setup_cluster(api, run_id, fences=20, targets=samples + 10)
    await create_topics([f"{run_id}-access"], PARTITIONS, bootstrap_servers=bootstrap)
    await fill(bootstrap, f"{run_id}-access", ips, 10, count)
    bare, bare_cpu = await bare_consumer(bootstrap, f"{run_id}-access", count)

    data = Path(tempfile.mkdtemp(prefix="lazystream-bench-"))
    env = worker_env(run_id, bootstrap, kubeconfig, data, PARTITIONS)
    log = (data / "worker.log").open("wb")
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("lazystream")), "worker", env=env, stdout=log, stderr=log
    )
    try:
        # steady state: from the first commit to the last (start-up and the first fetch excluded)
        first: tuple[float, int, float] | None = None
        while (done := await committed(bootstrap, f"{run_id}-ingest", f"{run_id}-access")) < count:
            if proc.returncode is not None:
                raise RuntimeError(f"worker exited; see {data / 'worker.log'}")
            if first is None and done > 0:
                first = (time.perf_counter(), done, cpu_seconds(proc.pid))
            await asyncio.sleep(0.2)
        if first is None:
            first = (start, 0, 0.0)
        worker_rps = (count - first[1]) / (time.perf_counter() - first[0])
        worker_cpu = (cpu_seconds(proc.pid) - first[2]) / (count - first[1]) * 1e6
        # latency is measured in steady state: the table agent has applied every edge of the backlog
        await edges_caught_up(bootstrap, run_id, f"{run_id}-edges", timeout=120)
        latencies = []
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for k in range(samples):
                host = f"target-{10 + k}"
                record = global_sidecar_record(authority=host, peer_address=f"{ips[0]}:1", time=time.time())
                sent = time.perf_counter()
                await producer.send_and_wait(f"{run_id}-access", fluent_bit(record))
                while f"*/{host}.{run_id}.svc.cluster.local" not in sidecar_hosts(api, run_id, "caller-0"):
                    await asyncio.sleep(0.02)
                    if time.perf_counter() - sent > 30:
                        raise RuntimeError(f"{host} never reached the Sidecar")
                latencies.append(time.perf_counter() - sent)
                await asyncio.sleep(0.6)  # past the coalescing interval: each sample is a fresh write
        finally:
            await producer.stop()
    finally:
        proc.terminate()
        await proc.wait()
        log.close()
        api.close()
    return WorkerFigures(count, bare, worker_rps, latencies, bare_cpu, worker_cpu)


if __name__ == "__main__":
    print(asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)))
