"""How lazystream scales with the number of fences (issue 11): two workers, each fence learning ``deps``
dependencies, at 1k, 3k and 10k fences by default.

Per size it reports: records/s through the two workers (from the ingest group's commits), the time until
every fence's Sidecar lists all its dependencies, produce-to-Sidecar p50/p99 in steady state (over a full
sweep of every fence, started with the phase), each worker's
RSS, the RocksDB size on disk, and the recovery time of a restarted worker (start to "lazystream ready").
Targets at 10k fences: RSS ≤ 300 MB per worker, recovery ≤ 30 s, p99 ≤ 2 s.

Needs the real servers and is not run in CI (the test suite runs a 20-fence smoke):
``eval "$(scripts/infra/servers.sh env)"; python -m bench.bench_scale [fences ...]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kubernetes import client

from bench.bench_worker import committed, fill, sidecar_hosts
from bench.harness import auth_headers, cluster_api, private_kube, quantile, worker_env
from lazystream.testing import ClusterBuilder, fluent_bit, global_sidecar_record
from lazystream.testing.kafka import create_topics, delete_topics

PARTITIONS = 4
WORKERS = 2
LATENCY_HOSTS = 10
"""Callee Services no fence learns during the fill: each latency sample is a new (caller, host) pair."""
LATENCY_MIN_SAMPLES = 100
"""Samples of the latency phase however soon the sweep is through (about 15 s of them): with fewer, the
p99 is the maximum (the sweep of 1k fences was through in 3 s, after ten samples)."""
LATENCY_PAUSE_S = 0.1
"""Between two latency samples (each teaches another fence a host, so none waits for the one before)."""
LATENCY_SECONDS = 60.0
"""Default limit of the latency phase (``BENCH_SCALE_LATENCY_SECONDS``). It starts with a full sweep on
both workers (``POST /sweep``), the heaviest periodic work of a worker, so the p99 includes one: ten samples
right after convergence had given anything from 0.42 to 6.32 s at 10k fences, depending on whether a sweep
fell into them. The phase ends when both sweeps are through (``GET /sweep``) or at this limit. (Until
2026-11-28 21:30 the phase waited 300 s, one period of the periodic sweep, and until 2026-11-29 00:15 it
sampled for the whole 60 s.)"""
SETUP_ATTEMPTS = 5
"""Applies of one object before the setup gives up (a shared API server at a full core timed out one of
15k applies with a 504 at 10k fences)."""
SETUP_THREADS = 10
"""Concurrent applies while setting up: as many as the API client's connection pool holds (more only open
and drop TLS connections). The API server, not the benchmark, is the bound: it runs at a full core."""


@dataclass
class ScaleFigures:
    fences: int
    deps: int
    records: int
    records_per_s: float = 0.0
    converged_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    swept: list[int] = field(default_factory=list)
    """Fences each worker's sweep at the start of the latency phase scheduled."""
    sweep_s: float | None = None
    """Seconds until both workers' sweeps were through (None: not within the latency phase)."""
    rss_mb: list[float] = field(default_factory=list)
    """Each worker's RSS at the end of the run, in MB (10^6 bytes, as the target's 300 MB)."""
    peak_rss_mb: list[float] = field(default_factory=list)
    """Each worker's highest RSS over the run (the kernel's ``VmHWM``), in MB."""
    rocksdb_mb: float = 0.0
    recovery_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds spent in each phase of the run: setup (API objects), fill (Kafka), converge, latency."""
    incomplete: str = ""
    """How far a run that timed out got (then latency is not measured)."""
    memory: list[dict[str, Any]] = field(default_factory=list)
    """Each worker's ``/debug/memory?deep=1`` at the end of the run, and its RSS after a ``malloc_trim``."""

    def __str__(self) -> str:
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = quantile(lat, 0.99)
        worst = lat[-1] if lat else float("nan")
        rss = ", ".join(f"{r:.0f}" for r in self.rss_mb)
        if self.peak_rss_mb:
            rss += " (peak " + ", ".join(f"{r:.0f}" for r in self.peak_rss_mb) + ")"
        phases = ", ".join(f"{k} {v:.0f} s" for k, v in self.phases.items())
        sweep = "still going" if self.sweep_s is None else f"through after {self.sweep_s:.1f} s"
        if self.incomplete:
            return (
                f"{self.fences} fences x {self.deps} deps ({self.records} records): INCOMPLETE, "
                f"{self.incomplete}; {self.records_per_s:,.0f} records/s; RSS {rss} MB; RocksDB "
                f"{self.rocksdb_mb:.1f} MB; recovery {self.recovery_s:.1f} s; phases {phases}"
            )
        return (
            f"{self.fences} fences x {self.deps} deps ({self.records} records): {self.records_per_s:,.0f} "
            f"records/s, all Sidecars complete after {self.converged_s:.1f} s; produce-to-Sidecar p50 "
            f"{p50:.2f} s, p99 {p99:.2f} s, max {worst:.2f} s ({len(lat)} samples, from a sweep of "
            f"{' + '.join(map(str, self.swept)) or 'no'} fences on, {sweep}); RSS {rss} MB; "
            f"RocksDB {self.rocksdb_mb:.1f} MB; recovery {self.recovery_s:.1f} s; phases {phases}"
        )

    def memory_lines(self) -> list[str]:
        """The memory breakdown of each worker, one line per figure, in MB."""
        lines = []
        for n, report in enumerate(self.memory):
            proc, alloc, native = report["process"], report["allocator"], report["native"]
            lines.append(
                f"  worker {n}: RSS {proc['rss'] / 1e6:.0f} MB (anonymous {proc['anonymous'] / 1e6:.0f}, "
                f"files "
                f"{proc['rssfile'] / 1e6:.0f}), threads {proc['threads']}; malloc arenas "
                f"{alloc.get('arena', 0) / 1e6:.0f} MB (in use {alloc.get('in_use', 0) / 1e6:.0f}, free "
                f"{alloc.get('free', 0) / 1e6:.0f}), mmapped {alloc.get('mmapped', 0) / 1e6:.0f} MB; after "
                f"malloc_trim RSS {report['trimmed_rss'] / 1e6:.0f} MB"
            )
            lines.append(
                "    RocksDB: "
                + ", ".join(
                    f"{k.removeprefix('rocksdb.')} {v / 1e6:.1f}"
                    for k, v in native.items()
                    if "open" not in k
                )
                + f"; {native.get('rocksdb.open_partitions', 0)} partitions open"
            )
            top = list(report.get("structures", {}).items())[:12]
            lines.append("    structures (MB): " + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in top))
        return lines


def setup(api: client.ApiClient, namespace: str, fences: int, targets: int) -> list[str]:
    """``fences`` calling Services with fences, ``targets`` (+ samples) callee Services, in parallel."""
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    builder = ClusterBuilder()
    if fences > 62_500:
        raise ValueError("at most 62,500 fences: one 10.N.0.0/16 block of caller addresses per run")
    # A block of its own per run: the workers resolve addresses cluster-wide, and a caller address that
    # another run's namespace also uses teaches that namespace's fences too (seen: 5 edges per record
    # instead of 2, with three runs left behind on the shared API server).
    block = 10 + zlib.crc32(namespace.encode()) % 190  # 10.0/16 is the Service range; bench_worker uses 252
    ips = [f"10.{block}.{(i // 250) % 250}.{1 + i % 250}" for i in range(fences)]
    for i, ip in enumerate(ips):
        builder.service(f"caller-{i}", namespace, ips=[ip])
        builder.fence(f"caller-{i}", namespace, workloadSelector={"fromService": True})
    for j in range(targets + LATENCY_HOSTS):
        builder.service(f"target-{j}", namespace)
    objects = [o for o in builder.items if o["kind"] != "Namespace"]

    config = api.configuration
    http, host = api.rest_client.pool_manager, config.host
    headers = {"Content-Type": "application/json", **auth_headers(api)}

    def create(obj: dict[str, Any]) -> None:
        """POST the object as JSON and read no answer back: at 30k objects the client's own work (server-side
        apply, typed answers) cost as much CPU as the API server's."""
        group, _, version = obj["apiVersion"].rpartition("/")
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        path = f"{prefix}/namespaces/{namespace}/{obj['kind'].lower()}s"
        for attempt in range(SETUP_ATTEMPTS):
            try:
                response = http.request(
                    "POST", f"{host}{path}", body=orjson.dumps(obj), headers=headers, preload_content=True
                )
                if response.status < 300 or response.status == 409:  # 409: an earlier attempt made it
                    return
                raise client.ApiException(status=response.status, reason=response.data[:300].decode())
            except client.ApiException as exc:  # an overloaded API server answers 429, 500 or 504
                if exc.status not in (429, 500, 503, 504) or attempt == SETUP_ATTEMPTS - 1:
                    raise
                time.sleep(2.0 * (attempt + 1))

    with ThreadPoolExecutor(SETUP_THREADS) as pool:
        list(pool.map(create, objects))
    return ips


def complete_sidecars(api: client.ApiClient, namespace: str, deps: int) -> int:
    """Sidecars of ``namespace`` listing all ``deps`` targets: read as raw JSON, a page at a time (the
    dynamic client's objects for 10k Sidecars cost the benchmark more CPU than the workers had)."""
    custom = client.CustomObjectsApi(api)
    done, token = 0, None
    while True:
        response = custom.list_namespaced_custom_object(
            "networking.istio.io",
            "v1alpha3",
            namespace,
            "sidecars",
            limit=1000,
            _continue=token,
            _preload_content=False,
        )
        body = orjson.loads(response.data)
        for sidecar in body.get("items") or []:
            egress = (sidecar.get("spec") or {}).get("egress") or [{}]
            done += sum("target-" in h for h in egress[0].get("hosts") or []) >= deps
        token = (body.get("metadata") or {}).get("continue")
        if not token:
            return done


def sweep(port: int, headers: dict[str, str]) -> int:
    """Start a full sweep on a worker (``POST /sweep``, with the kubeconfig's token in ``headers``); how
    many fences it scheduled."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/sweep", method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - a fixed http:// URL
        return int(json.loads(resp.read())["scheduled"])


def sweep_pending(port: int) -> int:
    """Fences of a worker's sweeps not yet checked (``GET /sweep``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/sweep", timeout=30) as resp:
        return int(json.loads(resp.read())["pending"])


def debug_memory(port: int, headers: dict[str, str]) -> dict[str, Any]:
    """A worker's memory report, then its RSS after ``malloc_trim`` (as ``trimmed_rss``)."""

    def get(flag: str) -> Any:
        url = f"http://127.0.0.1:{port}/debug/memory?{flag}=1"
        request = urllib.request.Request(url, headers=headers)
        return urllib.request.urlopen(request, timeout=60)  # noqa: S310 - a fixed http:// URL

    with get("deep") as resp:
        report: dict[str, Any] = json.loads(resp.read())
    with get("trim") as resp:
        report["trimmed_rss"] = json.loads(resp.read())["process"]["rss"]
    return report


def status_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory line of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``: the peak RSS) in MB (10^6 bytes; the
    kernel counts kB of 1,024 bytes). Until 2026-11-28 17:45 the summary's RSS was in MiB, labelled MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / 1e6
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


@dataclass
class Run:
    """One size's run: its figures as they are measured, its name, and the Kafka it uses."""

    figures: ScaleFigures
    run_id: str
    """The namespace of the run's objects, and the prefix of its topics and consumer groups."""
    bootstrap: str


async def run_size(
    fences: int,
    deps: int = 50,
    timeout: float | None = None,
    report: Callable[[ScaleFigures], None] | None = None,
    latency_seconds: float | None = None,
    latency_samples: int = LATENCY_MIN_SAMPLES,
) -> ScaleFigures:
    """One size, on an API server of its own (:func:`bench.harness.private_kube`) and the shared Kafka;
    ``timeout`` (default ``BENCH_SCALE_TIMEOUT`` seconds, else 900) bounds convergence, and
    ``latency_seconds`` (default ``BENCH_SCALE_LATENCY_SECONDS``, else :data:`LATENCY_SECONDS`) the
    steady-state latency phase after it, which takes at least ``latency_samples``.
    ``report`` gets the figures as soon as they are measured, before the clean-up.
    ``BENCH_SCALE_KEEP=1`` keeps the run's topics and its API server."""
    timeout = timeout or float(os.environ.get("BENCH_SCALE_TIMEOUT", "900"))
    if latency_seconds is None:
        latency_seconds = float(os.environ.get("BENCH_SCALE_LATENCY_SECONDS", LATENCY_SECONDS))
    keep = bool(os.environ.get("BENCH_SCALE_KEEP"))
    run = Run(
        figures=ScaleFigures(fences, deps, fences * deps),
        run_id=f"scale-{uuid.uuid4().hex[:8]}",
        bootstrap=os.environ["LAZYSTREAM_TEST_KAFKA_BOOTSTRAP"],
    )
    with private_kube(Path(tempfile.mkdtemp(prefix="lazystream-scale-kube-")), keep=keep) as kubeconfig:
        api = cluster_api(kubeconfig)
        try:
            await measure(run, api, kubeconfig, timeout, latency_seconds, latency_samples, report)
        finally:
            api.close()
            if not keep:
                await delete_topics(run.run_id, bootstrap_servers=run.bootstrap)
    return run.figures


async def measure(
    run: Run,
    api: client.ApiClient,
    kubeconfig: Path,
    timeout: float,
    latency_seconds: float,
    latency_samples: int,
    report: Callable[[ScaleFigures], None] | None,
) -> None:
    """Set up the cluster objects and the records, start two workers, and measure (see :func:`run_size`)."""
    figures, run_id, bootstrap = run.figures, run.run_id, run.bootstrap
    mark = time.monotonic()
    ips = setup(api, run_id, figures.fences, figures.deps)  # before any worker runs: blocking is harmless
    figures.phases["setup"] = time.monotonic() - mark
    mark = time.monotonic()
    await create_topics([f"{run_id}-access"], PARTITIONS, bootstrap_servers=bootstrap)
    await fill(bootstrap, f"{run_id}-access", ips, figures.deps, figures.records)
    figures.phases["fill"] = time.monotonic() - mark

    base = Path(tempfile.mkdtemp(prefix="lazystream-scale-"))
    envs = [worker_env(run_id, bootstrap, kubeconfig, base / f"w{i}", PARTITIONS) for i in range(WORKERS)]
    logs = [base / f"w{i}.log" for i in range(WORKERS)]
    procs = [await start_worker(env, log) for env, log in zip(envs, logs, strict=True)]
    try:
        start = time.monotonic()
        await converge(figures, api, bootstrap, run_id, start, timeout)
        if not figures.incomplete:
            mark = time.monotonic()
            ports = [int(env["LAZYSTREAM_WEB_PORT"]) for env in envs]
            figures.swept = [sweep(port, auth_headers(api)) for port in ports]
            await latencies(figures, bootstrap, api, run_id, ips, ports, latency_seconds, latency_samples)
            figures.phases["latency"] = time.monotonic() - mark
        figures.rss_mb = [status_mb(p.pid) for p in procs]
        figures.peak_rss_mb = [status_mb(p.pid, "VmHWM") for p in procs]
        for env in envs:
            try:
                figures.memory.append(debug_memory(int(env["LAZYSTREAM_WEB_PORT"]), auth_headers(api)))
            except OSError as exc:  # a figure missing is no reason to lose the run's others
                print(f"no memory report: {exc}", file=sys.stderr)
        figures.rocksdb_mb = du_mb(base)
        if figures.incomplete:  # recovery is still measured: a restart with the state as far as it got
            print(f"{figures.incomplete}; worker logs in {base}", file=sys.stderr)
        procs[0].terminate()
        await procs[0].wait()
        restart = time.monotonic()
        procs[0] = await start_worker(envs[0], base / "w0-restart.log")
        await wait_log(base / "w0-restart.log", "lazystream ready", timeout)
        figures.recovery_s = time.monotonic() - restart
        if report is not None:
            report(figures)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()


async def converge(
    figures: ScaleFigures, api: client.ApiClient, bootstrap: str, run_id: str, start: float, timeout: float
) -> None:
    """Wait until the ingest group has committed every record, then until every Sidecar is complete,
    noting when the table agents have committed every edge; on ``timeout``, how far it got
    (``figures.incomplete``). A progress line goes to stderr every 30 s."""
    first: tuple[float, int] | None = None  # throughput from the first commit on: start-up excluded
    shown = start
    while (done := await committed(bootstrap, f"{run_id}-ingest", f"{run_id}-access")) < figures.records:
        if time.monotonic() - start > timeout:
            figures.incomplete = f"{done}/{figures.records} records ingested after {timeout:.0f} s"
            return
        if first is None and done > 0:
            first = (time.monotonic(), done)
        await asyncio.sleep(1.0)
    first = first or (start, 0)
    elapsed = max(time.monotonic() - first[0], 1.0)  # the commit poll's resolution
    figures.records_per_s = (figures.records - first[1]) / elapsed
    figures.phases["ingest"] = time.monotonic() - start
    edges = await end_offset(bootstrap, f"{run_id}-edges")  # every edge is produced by now
    complete = 0
    while True:
        applied = await committed(bootstrap, run_id, f"{run_id}-edges")
        if "edges" not in figures.phases and applied >= edges:
            figures.phases["edges"] = time.monotonic() - start  # the table agents are through
        if "edges" in figures.phases or time.monotonic() - shown > 30:
            # a list of 10k Sidecars of 50 hosts is 30 MB of JSON: not while the table agents are busy
            complete = complete_sidecars(api, run_id, figures.deps)  # blocks the loop: nothing else runs
            if complete >= figures.fences:
                break
        now = time.monotonic()
        if now - start > timeout:
            figures.incomplete = (
                f"after {timeout:.0f} s: {applied}/{edges} edges through the table agents, "
                f"{complete}/{figures.fences} Sidecars complete"
            )
            return
        if now - shown > 30:
            shown = now
            print(
                f"  {now - start:.0f} s: {applied}/{edges} edges, {complete} Sidecars complete",
                file=sys.stderr,
            )
        await asyncio.sleep(max(2.0, figures.fences / 1000))  # each poll lists every Sidecar
    figures.converged_s = time.monotonic() - start
    figures.phases["converge"] = figures.converged_s


async def end_offset(bootstrap: str, topic: str) -> int:
    """The sum of the topic's end offsets: how many messages it has had."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def latencies(
    figures: ScaleFigures,
    bootstrap: str,
    api: client.ApiClient,
    namespace: str,
    ips: list[str],
    ports: list[int],
    seconds: float,
    min_samples: int,
) -> None:
    """Produce-to-Sidecar seconds of new dependencies (``figures.latencies``), one at a time, until the
    sweeps of the workers on ``ports`` are through (``figures.sweep_s``) or ``seconds`` have passed, and
    at least ``min_samples``: each sample teaches another fence a host, so no sample waits for
    the coalescing interval of the one before (the same fence written 0.6 s earlier had added 0.4 s to
    each)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    out = figures.latencies
    start = time.monotonic()
    try:
        for k in range(len(ips) * LATENCY_HOSTS):
            if figures.sweep_s is None and not any(sweep_pending(port) for port in ports):
                figures.sweep_s = time.monotonic() - start
            done = figures.sweep_s is not None or time.monotonic() - start >= seconds
            if len(out) >= min_samples and done:
                break
            caller, host = k % len(ips), f"target-{figures.deps + k // len(ips)}"
            record = global_sidecar_record(authority=host, peer_address=f"{ips[caller]}:1", time=time.time())
            sent = time.perf_counter()
            await producer.send_and_wait(f"{namespace}-access", fluent_bit(record))
            wanted = f"*/{host}.{namespace}.svc.cluster.local"
            while wanted not in sidecar_hosts(api, namespace, f"caller-{caller}"):
                await asyncio.sleep(0.02)
                if time.perf_counter() - sent > 60:
                    raise RuntimeError(f"{host} never reached the Sidecar of caller-{caller}")
            out.append(time.perf_counter() - sent)
            await asyncio.sleep(LATENCY_PAUSE_S)
    finally:
        await producer.stop()


def show(figures: ScaleFigures) -> None:
    print(f"{figures}  [{time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}]", flush=True)
    print("\n".join(figures.memory_lines()), flush=True)


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 3000, 10000]
    for size in sizes:
        asyncio.run(run_size(size, report=show))
