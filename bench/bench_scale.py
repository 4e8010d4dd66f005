"""How lazystream scales with the number of fences (issue 11): two workers, each fence learning ``deps``
dependencies, at 1k, 3k and 10k fences by default.

Per size it reports: records/s through the two workers (from the ingest group's commits), the time until
every fence's Sidecar lists all its dependencies, produce-to-Sidecar p50/p99 in steady state, each worker's
RSS, the RocksDB size on disk, and the recovery time of a restarted worker (start to "lazystream ready").
Targets at 10k fences: RSS ≤ 300 MB per worker, recovery ≤ 30 s, p99 ≤ 2 s.

Needs the real servers and is not run in CI (the test suite runs a 20-fence smoke):
``eval "$(scripts/infra/servers.sh env)"; python -m bench.bench_scale [fences ...]``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from kubernetes import client

from bench.bench_worker import committed, fill, sidecar_hosts
from bench.harness import cluster_api, worker_env
from lazystream.kube.client import dynamic_client
from lazystream.testing import ClusterBuilder, fluent_bit, global_sidecar_record

PARTITIONS = 4
WORKERS = 2
LATENCY_SAMPLES = 10


@dataclass
class ScaleFigures:
    fences: int
    deps: int
    records: int
    records_per_s: float = 0.0
    converged_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    rocksdb_mb: float = 0.0
    recovery_s: float = 0.0

    def __str__(self) -> str:
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        rss = ", ".join(f"{r:.0f}" for r in self.rss_mb)
        return (
            f"{self.fences} fences x {self.deps} deps ({self.records} records): {self.records_per_s:,.0f} "
            f"records/s, all Sidecars complete after {self.converged_s:.1f} s; produce-to-Sidecar p50 "
            f"{p50:.2f} s, p99 {p99:.2f} s; RSS {rss} MB; RocksDB {self.rocksdb_mb:.1f} MB; recovery "
            f"{self.recovery_s:.1f} s"
        )


def setup(api: client.ApiClient, namespace: str, fences: int, targets: int) -> list[str]:
    """``fences`` calling Services with fences, ``targets`` (+ samples) callee Services, in parallel."""
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    builder = ClusterBuilder()
    ips = [f"10.{200 + i // 62500}.{(i // 250) % 250}.{1 + i % 250}" for i in range(fences)]
    for i, ip in enumerate(ips):
        builder.service(f"caller-{i}", namespace, ips=[ip])
        builder.fence(f"caller-{i}", namespace, workloadSelector={"fromService": True})
    for j in range(targets + LATENCY_SAMPLES):
        builder.service(f"target-{j}", namespace)
    dyn = dynamic_client(api)
    objects = [o for o in builder.items if o["kind"] != "Namespace"]

    def apply(obj: dict[str, Any]) -> None:
        resource = dyn.resources.get(api_version=obj.get("apiVersion", "v1"), kind=obj["kind"])
        resource.server_side_apply(
            body=obj, name=obj["metadata"]["name"], namespace=namespace, field_manager="bench"
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(apply, objects))
    return ips


def complete_sidecars(api: client.ApiClient, namespace: str, deps: int) -> int:
    resource = dynamic_client(api).resources.get(api_version="networking.istio.io/v1alpha3", kind="Sidecar")
    items = resource.get(namespace=namespace).items
    return sum(1 for s in items if sum("target-" in h for h in s.spec.egress[0].hosts) >= deps)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


async def start_worker(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    out = log.open("ab")
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("lazystream")), "worker", env=env, stdout=out, stderr=out
    )


async def wait_log(log: Path, text: str, timeout: float) -> float:
    start = time.monotonic()
    while text not in log.read_text(errors="replace"):  # noqa: ASYNC240 - a small local file, polled
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{text!r} not in {log} after {timeout:.0f} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def run_size(fences: int, deps: int = 50, timeout: float = 600.0) -> ScaleFigures:
    bootstrap = os.environ["LAZYSTREAM_TEST_KAFKA_BOOTSTRAP"]
    kubeconfig = Path(os.environ["LAZYSTREAM_TEST_KUBECONFIG"])
    run_id = f"scale-{uuid.uuid4().hex[:8]}"
    api = cluster_api(kubeconfig)
    figures = ScaleFigures(fences, deps, fences * deps)
    ips = setup(api, run_id, fences, deps)  # before any worker runs: blocking is harmless here
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"{run_id}-access", PARTITIONS, 1)])
    finally:
        await admin.close()
    await fill(bootstrap, f"{run_id}-access", ips, deps, figures.records)

    base = Path(tempfile.mkdtemp(prefix="lazystream-scale-"))
    envs = [worker_env(run_id, bootstrap, kubeconfig, base / f"w{i}", PARTITIONS) for i in range(WORKERS)]
    logs = [base / f"w{i}.log" for i in range(WORKERS)]
    procs = [await start_worker(env, log) for env, log in zip(envs, logs, strict=True)]
    try:
        start = time.monotonic()
        first: tuple[float, int] | None = None  # throughput from the first commit on: start-up excluded
        while (done := await committed(bootstrap, f"{run_id}-ingest", f"{run_id}-access")) < figures.records:
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"{done}/{figures.records} records after {timeout:.0f} s; see {base}")
            if first is None and done > 0:
                first = (time.monotonic(), done)
            await asyncio.sleep(0.5)
        first = first or (start, 0)
        elapsed = max(time.monotonic() - first[0], 0.5)  # the commit poll's resolution
        figures.records_per_s = (figures.records - first[1]) / elapsed
        while complete_sidecars(api, run_id, deps) < fences:
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"Sidecars incomplete after {timeout:.0f} s; see {base}")
            await asyncio.sleep(1.0)
        figures.converged_s = time.monotonic() - start
        figures.latencies = await latencies(bootstrap, api, run_id, ips[0], deps)
        figures.rss_mb = [rss_mb(p.pid) for p in procs]
        figures.rocksdb_mb = du_mb(base)
        procs[0].terminate()
        await procs[0].wait()
        restart = time.monotonic()
        procs[0] = await start_worker(envs[0], base / "w0-restart.log")
        await wait_log(base / "w0-restart.log", "lazystream ready", timeout)
        figures.recovery_s = time.monotonic() - restart
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
        api.close()
    return figures


async def latencies(bootstrap: str, api: client.ApiClient, namespace: str, ip: str, deps: int) -> list[float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    out = []
    try:
        for k in range(LATENCY_SAMPLES):
            host = f"target-{deps + k}"
            record = global_sidecar_record(authority=host, peer_address=f"{ip}:1", time=time.time())
            sent = time.perf_counter()
            await producer.send_and_wait(f"{namespace}-access", fluent_bit(record))
            while f"*/{host}.{namespace}.svc.cluster.local" not in sidecar_hosts(api, namespace, "caller-0"):
                await asyncio.sleep(0.02)
                if time.perf_counter() - sent > 60:
                    raise RuntimeError(f"{host} never reached the Sidecar")
            out.append(time.perf_counter() - sent)
            await asyncio.sleep(0.6)
    finally:
        await producer.stop()
    return out


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 3000, 10000]
    for size in sizes:
        print(asyncio.run(run_size(size)), flush=True)
