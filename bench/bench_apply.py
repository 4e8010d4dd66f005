"""What one write of the sink costs the API server, by the number of hosts a fence has learned (issue 11).

The sink writes each fence's ``status`` (a server-side apply of the status subresource) and its Sidecar. The
API server's CPU per write grows with the object, and at 10k fences it is what bounds how fast the whole
mesh's Sidecars can be written on a small machine (see ``bench/README.md``). Per host count this writes
``fences`` fences ``rounds`` times through the reconcile loop and :class:`~lazystream.kube.sink.FenceSink`,
statuses alone and then Sidecars alone, each round with one host changed (as when a fence learns one), and
reads the API server's own ``process_cpu_seconds_total`` before and after. Baseline in the same run: the
write of a 1-host fence.

Needs a real API server (``eval "$(scripts/infra/servers.sh env)"``; nothing else should be using it while
it runs, since the API server's CPU is counted whole): ``python -m bench.bench_apply [hosts ...]``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from bench.harness import auth_headers, cluster_api, delete_namespace
from lazystream.controller.reconciler import Desired
from lazystream.domain.cluster import ObjectKey
from lazystream.domain.fences import Domain, render_status
from lazystream.kube.sink import Kind, fence_controller

FENCE_API = "microservice.slime.io/v1alpha1"
SIDECAR_API = "networking.istio.io/v1alpha3"


@dataclass
class WriteCost:
    """API server CPU and wall time per write of one kind of object with ``hosts`` hosts."""

    kind: Kind
    hosts: int
    writes: int
    cpu_s: float
    wall_s: float

    @property
    def cpu_ms(self) -> float:
        return self.cpu_s / self.writes * 1e3

    @property
    def per_second(self) -> float:
        return self.writes / self.wall_s


@dataclass
class ApplyFigures:
    fences: int
    rounds: int
    costs: list[WriteCost] = field(default_factory=list)

    def cost(self, kind: Kind, hosts: int) -> WriteCost:
        return next(c for c in self.costs if c.kind == kind and c.hosts == hosts)

    def lines(self) -> list[str]:
        """One line per write measured, with its ratio to the 1-host write of the same kind (the baseline),
        if measured."""
        out = []
        for cost in self.costs:
            base = next((c for c in self.costs if c.kind == cost.kind and c.hosts == 1), None)
            ratio = f", x{cost.cpu_ms / base.cpu_ms:.1f} the 1-host write" if base and base.cpu_ms else ""
            out.append(
                f"{cost.kind} of {cost.hosts} hosts: {cost.cpu_ms:.1f} ms of API server CPU per write"
                f"{ratio}; {cost.per_second:,.0f} writes/s ({cost.writes} writes)"
            )
        return out


def status_of(hosts: Sequence[str]) -> dict[str, Any]:
    """The status lazystream writes for a fence that learned ``hosts`` (the renderer the worker uses)."""
    return render_status({h: Domain(hosts=(h,)) for h in hosts}, hosts)


def sidecar_of(key: ObjectKey, hosts: Sequence[str]) -> dict[str, Any]:
    """A Sidecar of the shape the worker renders: the learned hosts and the system namespace."""
    return {
        "apiVersion": SIDECAR_API,
        "kind": "Sidecar",
        "metadata": {
            "name": key.name,
            "namespace": key.namespace,
            "labels": {"app.kubernetes.io/managed-by": "lazystream"},
        },
        "spec": {
            "egress": [{"hosts": sorted(["istio-system/*", *(f"*/{h}" for h in hosts)])}],
            "workloadSelector": {"labels": {"app": key.name}},
        },
    }


def api_cpu_seconds(api: client.ApiClient) -> float:
    """The API server's ``process_cpu_seconds_total`` from its ``/metrics``."""
    url = f"{api.configuration.host}/metrics"
    response = api.rest_client.pool_manager.request("GET", url, headers=auth_headers(api))
    if response.status != 200:
        raise RuntimeError(f"GET /metrics answered {response.status}: the benchmark needs an admin user")
    for line in response.data.decode().splitlines():
        if line.startswith("process_cpu_seconds_total "):
            return float(line.split()[1])
    raise RuntimeError("the API server's /metrics has no process_cpu_seconds_total")


async def measure(
    api: client.ApiClient,
    keys: list[ObjectKey],
    kind: Kind,
    hosts: int,
    rounds: int,
) -> WriteCost:
    """Write every fence ``rounds`` times, one host changed each round, and count the API server's CPU."""
    current: dict[str, Desired] = {}

    def desired(key: ObjectKey, round_: int) -> Desired:
        names = [f"dep-{j}.{key.namespace}.svc.cluster.local" for j in range(hosts - 1)]
        names.append(f"round-{round_}.{key.namespace}.svc.cluster.local")
        if kind == "status":
            return Desired(status=status_of(names), sidecar=None)
        return Desired(status=None, sidecar=sidecar_of(key, names))

    def compute(key: ObjectKey) -> tuple[Desired, None]:
        return current[key.name], None

    sink = fence_controller(api, compute, coalesce_seconds=0.0)
    await sink.start()
    try:
        # read on the loop (the sink is idle then): the pool's connection is open before the first reading
        api_cpu_seconds(api)
        cpu = api_cpu_seconds(api)
        start = time.perf_counter()
        for round_ in range(rounds):
            for key in keys:
                current[key.name] = desired(key, round_)
                sink.schedule(key)
            if not await sink.wait_idle(600):
                raise RuntimeError(f"the {kind} writes of round {round_} did not finish in 600 s")
        wall = time.perf_counter() - start
        cpu = api_cpu_seconds(api) - cpu
    finally:
        await sink.stop()
    writes = sink.writes_total[f"{kind}:applied"]
    if writes != len(keys) * rounds:
        raise RuntimeError(
            f"{writes} {kind} writes applied of {len(keys) * rounds}: {dict(sink.writes_total)}"
        )
    return WriteCost(kind, hosts, writes, cpu, wall)


def create_fences(api: client.ApiClient, namespace: str, count: int) -> list[ObjectKey]:
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    custom = client.CustomObjectsApi(api)
    for i in range(count):
        body = {
            "apiVersion": FENCE_API,
            "kind": "ServiceFence",
            "metadata": {"name": f"fence-{i}", "namespace": namespace},
            "spec": {"enable": True},
        }
        custom.create_namespaced_custom_object(
            "microservice.slime.io", "v1alpha1", namespace, "servicefences", body
        )
    return [ObjectKey(namespace, f"fence-{i}") for i in range(count)]


async def run(
    hosts: Sequence[int] = (1, 10, 50), fences: int = 100, rounds: int = 4, kubeconfig: Path | None = None
) -> ApplyFigures:
    """Measure each kind at each host count; the first round of Sidecars creates them and is not counted.
    ``kubeconfig`` defaults to ``LAZYSTREAM_TEST_KUBECONFIG``."""
    api = cluster_api(kubeconfig or Path(os.environ["LAZYSTREAM_TEST_KUBECONFIG"]))
    namespace = f"apply-{uuid.uuid4().hex[:8]}"
    figures = ApplyFigures(fences, rounds)
    try:
        keys = create_fences(api, namespace, fences)  # nothing else runs on the loop yet
        await measure(api, keys, "sidecar", 1, 1)  # creates the Sidecars: what follows are updates
        for count in hosts:
            for kind in ("status", "sidecar"):
                figures.costs.append(await measure(api, keys, kind, count, rounds))
    finally:
        delete_namespace(api, namespace)
        api.close()
    return figures


if __name__ == "__main__":
    counts = [int(a) for a in sys.argv[1:]] or [1, 10, 50]
    result = asyncio.run(run(counts))
    print(f"{result.fences} fences x {result.rounds} rounds, {time.strftime('%Y-%m-%d %H:%M')}")
    print("\n".join(result.lines()))
