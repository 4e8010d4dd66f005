"""Hostile input through a real worker (issue 11 item 2): generated hostile records
(:mod:`lazystream.testing.hostile`) on a real access topic, a real ``lazystream worker`` and the real API
server. Reports throughput, dead letters by reason (counted on the dead-letter topic, next to what
``parse_record`` says they must be), the hosts that reached Sidecars, and the worker's resident memory
(from ``/proc``) over the run.

``tests/integration/test_hostile_input.py`` runs 100k records and asserts; the 1M run is this benchmark:
``eval "$(scripts/infra/servers.sh env)"; python -m bench.bench_hostile [COUNT]`` (default 1,000,000).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kubernetes import client

from bench.bench_worker import committed
from bench.harness import cluster_api, worker_env
from lazystream.config import load_config
from lazystream.config.options import render_options
from lazystream.domain.records import ParseError, parse_record
from lazystream.domain.render import render
from lazystream.kube.client import dynamic_client
from lazystream.testing import ClusterBuilder
from lazystream.testing.hostile import HostileRecords
from lazystream.testing.kafka import create_topics

PARTITIONS = 4
FENCES = 5
TARGETS = 10
MAX_RECORD_BYTES = 65536


@dataclass
class HostileRun:
    """What one run measured; ``problems()`` lists every broken promise."""

    count: int
    seconds: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)
    expected_dead: Counter[str] = field(default_factory=Counter)
    """Dead-letter reasons ``parse_record`` gives the records sent."""
    dead_on_topic: Counter[str] = field(default_factory=Counter)
    """Reason headers of the messages on the dead-letter topic."""
    dead_in_metrics: Counter[str] = field(default_factory=Counter)
    sidecar_hosts: dict[str, set[str]] = field(default_factory=dict)
    allowed_hosts: set[str] = field(default_factory=set)
    learned_in_metrics: int = 0
    rss_samples: list[int] = field(default_factory=list)
    exit_code: int | None = None
    log: Path | None = None

    @property
    def peak_rss(self) -> int:
        return max(self.rss_samples, default=0)

    @property
    def records_per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def not_admitted(self) -> dict[str, set[str]]:
        return {
            f: hosts - self.allowed_hosts
            for f, hosts in self.sidecar_hosts.items()
            if hosts - self.allowed_hosts
        }

    def problems(self) -> list[str]:
        found = []
        if self.exit_code != 0:
            found.append(f"worker exit code {self.exit_code}")
        if self.dead_on_topic != self.expected_dead:
            found.append(
                f"dead letters on the topic {dict(self.dead_on_topic)} != {dict(self.expected_dead)}"
            )
        if self.dead_in_metrics != self.expected_dead:
            found.append(
                f"dead letters in metrics {dict(self.dead_in_metrics)} != {dict(self.expected_dead)}"
            )
        if self.not_admitted():
            found.append(f"hosts not admitted in Sidecars: {self.not_admitted()}")
        if len(self.sidecar_hosts) != FENCES:
            found.append(f"Sidecars of {sorted(self.sidecar_hosts)} only")
        return found

    def __str__(self) -> str:
        mib = 1024 * 1024
        third = max(1, len(self.rss_samples) // 3)
        return (
            f"{self.count:,} hostile records in {self.seconds:.1f} s ({self.records_per_second:,.0f}/s); "
            f"dead letters {sum(self.dead_on_topic.values()):,} ({dict(self.dead_on_topic.most_common())}); "
            f"hosts learned {self.learned_in_metrics}; worker RSS peak {self.peak_rss / mib:.0f} MiB "
            f"(first third max {max(self.rss_samples[:third], default=0) / mib:.0f} MiB, "
            f"last third max {max(self.rss_samples[-third:], default=0) / mib:.0f} MiB); "
            f"problems: {self.problems() or 'none'}"
        )


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process from ``/proc/<pid>/status`` (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cluster(namespace: str) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Callers with fences and targets in ``namespace``; their objects, caller IPs and admitted names."""
    net = uuid.uuid4().int % 250
    builder = ClusterBuilder()
    ips = [f"10.253.{net}.{10 + i}" for i in range(FENCES)]
    for i, ip in enumerate(ips):
        builder.service(f"caller-{i}", namespace, ips=[ip])
        builder.fence(f"caller-{i}", namespace, workloadSelector={"fromService": True})
    targets = [f"target-{j}" for j in range(TARGETS)]
    for name in targets:
        builder.service(name, namespace)
    return [o for o in builder.items if o["kind"] != "Namespace"], ips, targets


def apply(api: client.ApiClient, namespace: str, objects: list[dict[str, Any]]) -> None:
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    dyn = dynamic_client(api)
    for obj in objects:
        resource = dyn.resources.get(api_version=obj.get("apiVersion", "v1"), kind=obj["kind"])
        resource.server_side_apply(
            body=obj, name=obj["metadata"]["name"], namespace=namespace, field_manager="bench"
        )


def allowed_hosts(objects: list[dict[str, Any]], namespace: str) -> set[str]:
    """Egress hosts a Sidecar may list: every Sidecar's fixed entries (rendered with no records) and the
    Services of the namespace."""
    options = render_options(load_config(None, {}))
    fixed = {
        h
        for o in render(objects, [], options, time.time()).items
        if o["kind"] == "Sidecar"
        for e in o["spec"]["egress"]
        for h in e["hosts"]
    }
    services = {
        f"*/{o['metadata']['name']}.{namespace}.svc.cluster.local" for o in objects if o["kind"] == "Service"
    }
    return fixed | services


async def produce(bootstrap: str, topic: str, records: HostileRecords, count: int, run: HostileRun) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        pending = []
        for data in records.take(count):
            parsed = parse_record(data, max_bytes=MAX_RECORD_BYTES)
            if isinstance(parsed, ParseError):
                run.expected_dead[parsed.problem.value] += 1
            pending.append(await producer.send(topic, data))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def dead_letters(bootstrap: str, topic: str, want: int, timeout: float = 60.0) -> Counter[str]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", max_poll_records=5000
    )
    await consumer.start()
    reasons: Counter[str] = Counter()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        deadline = time.monotonic() + timeout
        while sum(reasons.values()) < want and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                for message in batch:
                    reasons[dict(message.headers).get("lazystream-reason", b"?").decode()] += 1
        for batch in (await consumer.getmany(timeout_ms=1000)).values():  # nothing more than expected
            for message in batch:
                reasons[dict(message.headers).get("lazystream-reason", b"?").decode()] += 1
    finally:
        await consumer.stop()
    return reasons


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def sidecars(api: client.ApiClient, namespace: str) -> dict[str, set[str]]:
    resource = dynamic_client(api).resources.get(api_version="networking.istio.io/v1alpha3", kind="Sidecar")
    return {
        item.metadata.name: {h for e in item.spec.egress for h in e.hosts}
        for item in resource.get(namespace=namespace).items
    }


async def run(count: int = 1_000_000, seed: int = 11) -> HostileRun:
    bootstrap = os.environ["LAZYSTREAM_TEST_KAFKA_BOOTSTRAP"]
    kubeconfig = Path(os.environ["LAZYSTREAM_TEST_KUBECONFIG"])
    run_id = f"hostile-{uuid.uuid4().hex[:8]}"
    result = HostileRun(count)
    api = cluster_api(kubeconfig)
    objects, ips, targets = cluster(run_id)
    apply(api, run_id, objects)
    result.allowed_hosts = allowed_hosts(objects, run_id)
    topics = [f"{run_id}-{t}" for t in ("access", "edges", "dlq")]
    await create_topics(topics, PARTITIONS, bootstrap_servers=bootstrap)

    data = Path(tempfile.mkdtemp(prefix="lazystream-hostile-"))
    env = worker_env(
        run_id,
        bootstrap,
        kubeconfig,
        data,
        PARTITIONS,
        LAZYSTREAM_FENCE_MAX_RECORD_BYTES=str(MAX_RECORD_BYTES),
    )
    port = int(env["LAZYSTREAM_WEB_PORT"])
    result.log = data / "worker.log"
    log = result.log.open("wb")
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("lazystream")), "worker", env=env, stdout=log, stderr=log
    )

    async def sample_rss() -> None:
        while proc.returncode is None:
            rss = rss_bytes(proc.pid)
            if rss is not None:
                result.rss_samples.append(rss)
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample_rss())
    try:
        deadline = time.monotonic() + 120
        while b"lazystream ready" not in result.log.read_bytes():
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready; see {result.log}")
            await asyncio.sleep(0.2)
        records = HostileRecords(
            sources=ips, admitted=targets, namespace=run_id, seed=seed, max_record_bytes=MAX_RECORD_BYTES
        )
        start = time.perf_counter()
        await produce(bootstrap, f"{run_id}-access", records, count, result)
        result.kinds = records.kinds
        while await committed(bootstrap, f"{run_id}-ingest", f"{run_id}-access") < count:
            if proc.returncode is not None:
                raise RuntimeError(f"worker exited; see {result.log}")
            await asyncio.sleep(0.2)
        result.seconds = time.perf_counter() - start
        result.dead_on_topic = await dead_letters(
            bootstrap, f"{run_id}-dlq", sum(result.expected_dead.values())
        )
        await asyncio.sleep(3)  # the sink's coalescing interval and a trailing write
        metrics = scrape(port)
        result.learned_in_metrics = int(metrics.get('lazystream_hosts_learned_total{via="observation"}', 0))
        for name, value in metrics.items():
            if name.startswith("lazystream_records_dead_lettered_total{"):
                result.dead_in_metrics[name.split('reason="')[1].rstrip('"}')] = int(value)
        result.sidecar_hosts = sidecars(api, run_id)
    finally:
        if proc.returncode is None:
            proc.terminate()
        result.exit_code = await proc.wait()
        await sampler
        log.close()
        api.close()
    return result


if __name__ == "__main__":
    print(asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)))
