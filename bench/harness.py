"""Benchmark harness: every figure is a ratio against a baseline measured in the same run, on the same
machine, so results compare across machines and noisy neighbours cancel out as far as possible.

Run a benchmark module directly (``python -m bench.bench_codecs``) for full figures; the test suite runs
each one with ``quick=True`` as a smoke run only.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client
from urllib3.exceptions import HTTPError

from lazystream.kube.client import api_client
from lazystream.testing.crds import install_test_crds
from lazystream.testing.kafka import deployment_env


@dataclass(frozen=True)
class Comparison:
    """Median seconds per call of a baseline and a candidate, and how many times faster the candidate is."""

    name: str
    baseline_s: float
    candidate_s: float

    @property
    def speedup(self) -> float:
        return self.baseline_s / self.candidate_s

    def __str__(self) -> str:
        return (
            f"{self.name}: baseline {self.baseline_s * 1e6:.2f} µs,"
            f" candidate {self.candidate_s * 1e6:.2f} µs, speedup x{self.speedup:.2f}"
        )


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far (``/proc/<pid>/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile: the smallest value with at least ``q`` of the values at or below it
    (the p99 of 100 samples is the 99th, not the largest; NaN for none)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def per_call(fn: Callable[[], object], calls: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean seconds per call of ``fn`` (``calls`` calls per round)."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def compare(
    name: str, baseline: Callable[[], object], candidate: Callable[[], object], *, calls: int, rounds: int
) -> Comparison:
    """Measure baseline and candidate alternately, round by round, so drift affects both alike."""
    base, cand = [], []
    for _ in range(rounds):
        base.append(per_call(baseline, calls, 1))
        cand.append(per_call(candidate, calls, 1))
    return Comparison(name, statistics.median(base), statistics.median(cand))


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports free on loopback now (bound at once, so none is handed out twice)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def worker_env(
    run_id: str, bootstrap: str, kubeconfig: Path, data: Path, partitions: int, **extra: str
) -> dict[str, str]:
    """The environment of a ``lazystream worker`` a benchmark starts: its own app id, topics
    (``<run_id>-access|edges|dlq``), data directory and admin port, scoped to the ``run_id`` namespace."""
    return dict(
        deployment_env(bootstrap, run_id, partitions),
        KUBECONFIG=str(kubeconfig),
        LAZYSTREAM_TABLES_DATA_DIR=str(data / "data"),
        LAZYSTREAM_WEB_PORT=str(free_ports(1)[0]),
        LAZYSTREAM_GENERAL_WHITE_NAMESPACE_LIST=run_id,
        LAZYSTREAM_LEADER_ELECTION_LEASE_NAMESPACE=run_id,
        LAZYSTREAM_FALLBACK_MANAGE="false",  # benchmarks leave cluster-wide objects alone
        **extra,
    )


@contextmanager
def private_kube(run_dir: Path, keep: bool = False) -> Iterator[Path]:
    """An etcd + kube-apiserver pair of the benchmark's own, started by the test servers' script
    (``scripts/infra/k8s/kube-apiserver.sh``: the same binaries, flags and audit log) on free ports in
    ``run_dir``. Yields its kubeconfig; at the end stops the pair and deletes its data, unless ``keep`` (to
    look at what a run left: the pair stays up, and where its kubeconfig is goes to stderr).

    Why not the shared server: a 10k-fence run leaves 40k objects there, and deleting them took it about two
    minutes, a sixth of the run; and a fresh server's figures do not depend on what earlier runs and tests
    left in it."""
    script = REPO / "scripts" / "infra" / "k8s" / "kube-apiserver.sh"
    ports = dict(zip(("K8S_PORT", "ETCD_PORT", "ETCD_PEER_PORT"), map(str, free_ports(3)), strict=True))
    env = dict(os.environ, LAZYSTREAM_INFRA_RUN=str(run_dir), **ports)

    def run(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - the repository's own script
            [str(script), action], env=env, capture_output=True, text=True, timeout=PRIVATE_KUBE_START_S
        )

    started = run("start")
    try:
        if started.returncode != 0:
            raise RuntimeError(f"kube-apiserver.sh start failed: {started.stderr[-2000:]}")
        yield run_dir / "k8s" / "kubeconfig"
    finally:
        if keep:
            print(
                f"the API server is kept running: KUBECONFIG={run_dir / 'k8s' / 'kubeconfig'}",
                file=sys.stderr,
            )
        else:
            run("stop")
            shutil.rmtree(run_dir, ignore_errors=True)


def cluster_api(kubeconfig: Path) -> client.ApiClient:
    """An API client for the benchmark's cluster, with Istio's and lazystream's CRDs applied and
    Established: a benchmark may be the first thing to run against a fresh API server."""
    api = api_client(kubeconfig)
    install_test_crds(api)
    return api


REPO = Path(__file__).resolve().parents[1]
PRIVATE_KUBE_START_S = 600.0
"""Bounds ``kube-apiserver.sh start`` (which builds the API server first on a machine that has none)."""
CLEANUP_TIMEOUT_S = 900.0
"""A deletion of all of a run's objects of one kind is one request: 1k fences took 27 s on a busy server."""
CLEANUP_ATTEMPTS = 10
"""Requests per kind: deleting 4k Services outran the API server's 60 s limit five times over."""


def auth_headers(api: client.ApiClient) -> dict[str, str]:
    """The kubeconfig's bearer token as a header, for requests made without the typed client."""
    token = api.configuration.auth_settings().get("BearerToken")
    return {token["key"]: token["value"]} if token else {}


def delete_namespace(api: client.ApiClient, namespace: str) -> None:
    """Delete a benchmark's objects (Sidecars, ServiceFences, EndpointSlices, Services), the four kinds at
    once, then its namespace: the test API server runs no namespace controller, so deleting the namespace
    alone leaves it "Terminating" with everything in it. One kind after the other kept one of the API
    server's cores busy (bench_scale's 10k-fence clean-up took 150 s so, 100-127 s at once, before each
    size got a server of its own). A kind that fails every attempt is reported, not raised."""
    custom = client.CustomObjectsApi(api)
    timeout = CLEANUP_TIMEOUT_S
    kinds: list[Callable[[], object]] = [
        lambda: custom.delete_collection_namespaced_custom_object(
            "networking.istio.io", "v1alpha3", namespace, "sidecars", _request_timeout=timeout
        ),
        lambda: custom.delete_collection_namespaced_custom_object(
            "microservice.slime.io", "v1alpha1", namespace, "servicefences", _request_timeout=timeout
        ),
        lambda: client.DiscoveryV1Api(api).delete_collection_namespaced_endpoint_slice(
            namespace, _request_timeout=timeout
        ),
        lambda: client.CoreV1Api(api).delete_collection_namespaced_service(
            namespace, _request_timeout=timeout
        ),
    ]

    def delete(request: Callable[[], object]) -> None:
        for attempt in range(CLEANUP_ATTEMPTS):
            try:
                request()
                return
            except (client.ApiException, HTTPError) as exc:
                # a 504 (the server's own 60 s limit) or a read timeout: it deleted some, and goes on
                if attempt == CLEANUP_ATTEMPTS - 1:
                    print(f"cleanup of {namespace}: {type(exc).__name__}: {exc}"[:300], file=sys.stderr)

    with ThreadPoolExecutor(len(kinds)) as pool:
        list(pool.map(delete, kinds))
    delete(lambda: client.CoreV1Api(api).delete_namespace(namespace))
