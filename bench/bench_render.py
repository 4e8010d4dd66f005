"""``lazystream render`` at scale: a mesh of 2,000 Services (20 namespaces, each Service fenced, with a
pod and an EndpointSlice) and 200,000 access records, timed next to parsing the same records alone in
the same run. Run: ``python -m bench.bench_render`` (about a minute); the test suite runs a small one."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import orjson

from lazystream.domain.records import parse_record
from lazystream.domain.render import RenderOptions, render
from lazystream.testing import ClusterBuilder, envoy_json, fluent_bit_cri, istio_text_line

GS = "outbound|9080||global-sidecar.mesh-operator.svc.cluster.local"


@dataclass(frozen=True)
class RenderFigures:
    services: int
    records: int
    parse_s: float
    render_s: float
    objects: int

    @property
    def ratio(self) -> float:
        """How many times longer the whole render takes than parsing alone."""
        return self.render_s / self.parse_s

    def __str__(self) -> str:
        return (
            f"{self.services} services, {self.records} records: parse alone {self.parse_s:.2f} s "
            f"({self.records / self.parse_s:,.0f} records/s), render {self.render_s:.2f} s "
            f"({self.records / self.render_s:,.0f} records/s), x{self.ratio:.2f} of parsing; "
            f"{self.objects} objects out"
        )


def mesh(services: int, namespaces: int = 20) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    builder = ClusterBuilder().namespace("mesh-operator").global_sidecar()
    names = []
    for i in range(services):
        namespace, name = f"ns-{i % namespaces}", f"svc-{i}"
        ip = f"10.{1 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        builder.service(name, namespace, ips=[ip]).pod(f"{name}-0", namespace, labels={"app": name}, ip=ip)
        builder.fence(name, namespace, workloadSelector={"fromService": True})
        names.append((namespace, name, ip))
    return builder.objects(), names


def records(names: list[tuple[str, str, str]], count: int, seed: int = 11) -> list[bytes]:
    rng = random.Random(seed)  # noqa: S311 - a reproducible corpus
    out = []
    for i in range(count):
        _, _, ip = rng.choice(names)
        ns, name, _ = rng.choice(names[:200])  # callers share a few hundred popular dependencies
        authority = f"{name}.{ns}:9080" if i % 2 else f"{name}.{ns}.svc.cluster.local"
        peer = f"{ip}:{40000 + i % 20000}"
        if i % 3 == 0:
            out.append(
                istio_text_line(
                    authority=authority, upstream_cluster="inbound|80||", downstream_remote_address=peer
                ).encode()
            )
        elif i % 3 == 1:
            out.append(envoy_json(authority=authority, upstream_cluster=GS, downstream_remote_address=peer))
        else:
            line = istio_text_line(
                authority=authority, upstream_cluster="inbound|80||", downstream_remote_address=peer
            )
            out.append(fluent_bit_cri(line, namespace=None))
    return out


def run(services: int = 2000, count: int = 200_000) -> RenderFigures:
    objects, names = mesh(services)
    corpus = records(names, count)
    start = time.perf_counter()
    for data in corpus:
        parse_record(data)
    parse_s = time.perf_counter() - start
    start = time.perf_counter()
    result = render(objects, corpus, RenderOptions(), now=1_800_000_000.0)
    render_s = time.perf_counter() - start
    assert result.outcomes["learned"] > 0, result.outcomes
    # keep the output honest: it must serialise
    orjson.dumps(result.items)
    return RenderFigures(services, count, parse_s, render_s, len(result.items))


if __name__ == "__main__":
    print(run())
