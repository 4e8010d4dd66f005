"""Quick smoke runs of the benchmarks: they run and measure something; figures are not tested."""

from __future__ import annotations

import pytest

from bench import bench_codecs
from bench.harness import Comparison, compare
from tests.fixtures.servers import unavailable

pytestmark = pytest.mark.bench


def test_codecs_benchmark_runs() -> None:
    result = bench_codecs.run(quick=True)
    assert result.baseline_s > 0
    assert result.candidate_s > 0
    assert "speedup x" in str(result)


def test_comparison_ratio_is_baseline_over_candidate() -> None:
    assert Comparison("x", baseline_s=3.0, candidate_s=1.5).speedup == 2.0
    calls = {"a": 0, "b": 0}
    result = compare(
        "count",
        lambda: calls.__setitem__("a", calls["a"] + 1),
        lambda: calls.__setitem__("b", calls["b"] + 1),
        calls=10,
        rounds=3,
    )
    assert calls == {"a": 30, "b": 30}
    assert result.name == "count"


def test_resolve_benchmark_runs() -> None:
    from bench import bench_resolve

    corpus = bench_resolve.corpus(50)
    assert len(corpus) == 50
    assert {data[:1] for data in corpus} == {b"[", b"{"}
    result = bench_resolve.run(quick=True)
    assert result.baseline_s > 0
    assert result.candidate_s > 0


def test_render_benchmark_runs() -> None:
    from bench import bench_render

    figures = bench_render.run(services=40, count=400)
    assert figures.objects == 40 * 2 + 1  # a fence and a Sidecar each, one EnvoyFilter
    assert figures.parse_s > 0
    assert figures.render_s > 0
    assert "records/s" in str(figures)


@pytest.mark.kafka
@pytest.mark.kube
@pytest.mark.timeout(240)
async def test_worker_benchmark_runs(kafka_bootstrap: str, kube_server) -> None:
    import os

    from bench import bench_worker

    if "LAZYSTREAM_TEST_KAFKA_BOOTSTRAP" not in os.environ:
        unavailable("the local servers (the worker benchmark starts its own worker processes)")
    figures = await bench_worker.run(count=2000, samples=3)
    assert figures.bare_rps > 0
    assert figures.worker_rps > 0
    assert figures.bare_cpu_us > 0
    assert figures.worker_cpu_us > 0
    assert len(figures.latencies) == 3
    assert "produce-to-Sidecar" in str(figures)


@pytest.mark.timeout(120)
async def test_proxy_benchmark_runs() -> None:
    from bench import bench_proxy

    figures = await bench_proxy.run(seconds=0.5, rounds=1, rate=200)
    assert len(figures.direct_latencies) >= 50
    assert len(figures.proxy_latencies) >= 50
    assert figures.direct_rps[0] > 0
    assert figures.proxy_rps[0] > 0
    assert "added p50" in str(figures)


@pytest.mark.kafka
@pytest.mark.kube
@pytest.mark.timeout(240)
async def test_hostile_benchmark_runs(kafka_bootstrap: str, kube_server) -> None:
    import os

    from bench import bench_hostile

    if "LAZYSTREAM_TEST_KAFKA_BOOTSTRAP" not in os.environ:
        unavailable("the local servers (the hostile-input benchmark starts its own worker processes)")
    run = await bench_hostile.run(count=3000, seed=1)
    assert run.records_per_second > 0
    assert run.rss_samples
    assert run.problems() == []
    assert "hostile records" in str(run)


@pytest.mark.kube
@pytest.mark.timeout(120)
async def test_apply_benchmark_runs(kube_server) -> None:
    from bench import bench_apply
    from lazystream.kube.client import api_client

    figures = await bench_apply.run(hosts=(1, 5), fences=4, rounds=2, kubeconfig=kube_server.kubeconfig)
    assert [(c.kind, c.hosts, c.writes) for c in figures.costs] == [
        ("status", 1, 8),
        ("sidecar", 1, 8),
        ("status", 5, 8),
        ("sidecar", 5, 8),
    ]
    assert all(c.cpu_s >= 0 and c.wall_s > 0 for c in figures.costs)
    with api_client(kube_server.kubeconfig) as api:
        assert bench_apply.api_cpu_seconds(api) > 0  # the API server's own figure is read
    assert "ms of API server CPU per write" in "\n".join(figures.lines())


@pytest.mark.kafka
@pytest.mark.kube
@pytest.mark.timeout(300)
async def test_scale_benchmark_runs(kafka_bootstrap: str, kube_server) -> None:
    import os

    from bench import bench_scale

    if "LAZYSTREAM_TEST_KAFKA_BOOTSTRAP" not in os.environ:
        unavailable("the local servers (the scale benchmark starts its own worker processes)")
    figures = await bench_scale.run_size(20, deps=5, timeout=200, latency_seconds=0, latency_samples=10)
    assert not figures.incomplete
    assert figures.records == 100
    assert figures.records_per_s > 0
    assert figures.converged_s > 0
    assert len(figures.latencies) == 10
    assert sum(figures.swept) == 20  # the latency phase starts with a sweep: each fence has one owner
    assert figures.sweep_s is not None  # 20 fences are swept within the ten samples
    assert len(figures.rss_mb) == 2
    assert all(r > 0 for r in figures.rss_mb)
    assert all(peak >= r for peak, r in zip(figures.peak_rss_mb, figures.rss_mb, strict=True))
    assert figures.rocksdb_mb > 0
    assert figures.recovery_s > 0
    assert "recovery" in str(figures)
    assert len(figures.memory) == 2  # each worker's /debug/memory
    assert all(m["process"]["rss"] > 0 for m in figures.memory)
    assert {"setup", "fill", "ingest", "converge"} <= set(figures.phases)
    assert len(figures.memory_lines()) == 6
