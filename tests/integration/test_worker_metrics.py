"""The worker's ``/metrics``, scraped by the real Prometheus while a real worker learns on real Kafka and the
real API server: the values Prometheus stores move as records arrive, by reason."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from kubernetes.dynamic import DynamicClient

from lazystream.metrics import METRICS
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import REPO, KubeServer, PrometheusServer
from tests.fixtures.worker import LAZYSTREAM, apply_objects, bookinfo_in, produce, records_from, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.prometheus, pytest.mark.timeout(240)]


def query(url: str, promql: str) -> dict[str, float]:
    """Instant query; each series as ``{label=value,...}`` (test label dropped) → value."""
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}") as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    out = {}
    for series in body["data"]["result"]:
        labels = {
            k: v for k, v in series["metric"].items() if k not in ("__name__", "test", "job", "instance")
        }
        out[",".join(f"{k}={v}" for k, v in sorted(labels.items()))] = float(series["value"][1])
    return out


def scalar(url: str, promql: str) -> float | None:
    values = query(url, promql)
    return sum(values.values()) if values else None


def wait_value(url: str, promql: str, want, worker: WorkerProcess, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = scalar(url, promql)
        if value is not None and want(value):
            return value
        assert worker.proc.poll() is None, worker.output()[-3000:]
        assert time.monotonic() < deadline, f"{promql} is {value} after {timeout} s"
        time.sleep(0.5)


async def test_prometheus_scrapes_a_learning_worker(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    prometheus: PrometheusServer,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
) -> None:
    builder, ips = bookinfo_in(namespace)
    apply_objects(kube_dynamic, builder.objects())
    env = worker_env(
        kafka_bootstrap,
        kube_server,
        fresh_name,
        tmp_path,
        namespace,
        LAZYSTREAM_FENCE_MAX_HOSTS_PER_FENCE="2",
    )
    port = env["LAZYSTREAM_WEB_PORT"]
    worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker.log")
    sd_file = prometheus.targets_dir / f"{fresh_name}.json"
    url = prometheus.url
    sel = f'test="{fresh_name}"'
    try:
        worker.wait_for_output("lazystream ready", timeout=120)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            exposed = resp.read().decode()
        for name in METRICS:  # every family is there from the start (empty label sets aside)
            assert f"# HELP {name} " in exposed, name
        sd_file.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"test": fresh_name}}]))

        # scraped before any record: the fence is owned, nothing read yet
        wait_value(url, f"lazystream_fences_owned{{{sel}}}", lambda v: v == 1, worker)
        assert scalar(url, f"lazystream_access_records_total{{{sel}}}") == 0
        assert scalar(url, f"lazystream_produce_to_sidecar_seconds_count{{{sel}}}") == 0

        # ratings is admitted but refused: productpage already holds fence.maxHostsPerFence (2) hosts
        calls = ["details:9080", "reviews:9080", "details:9080", "evil.example.net", "10.0.0.1:80", "ratings"]
        await produce(
            kafka_bootstrap,
            f"{fresh_name}-access",
            [*records_from(ips, calls), b"not a record", b'{"half": ', b"x" * 70_000],
        )
        wait_value(url, f"lazystream_access_records_total{{{sel}}}", lambda v: v == 9, worker)
        wait_value(
            url, f"lazystream_hosts_learned_total{{{sel},via='observation'}}", lambda v: v == 2, worker
        )
        count = wait_value(
            url, f"lazystream_produce_to_sidecar_seconds_count{{{sel}}}", lambda v: v == 2, worker
        )
        assert count == 2
        mean = scalar(url, f"lazystream_produce_to_sidecar_seconds_sum{{{sel}}}") / count
        assert 0 < mean < 30
        assert scalar(url, f"lazystream_records_learned_total{{{sel}}}") == 4
        limited = wait_value(
            url, f"lazystream_fence_hosts_limit_total{{{sel},fence='productpage'}}", lambda v: v >= 1, worker
        )
        assert limited == 1
        assert scalar(url, f"lazystream_edge_messages_total{{{sel},result='hosts_limit'}}") == 1
        assert query(url, f"lazystream_records_rejected_total{{{sel}}}") == {"reason=not_admitted": 1}
        assert query(url, f"lazystream_records_ignored_total{{{sel}}}") == {"reason=ip_authority": 1}
        assert query(url, f"lazystream_records_dead_lettered_total{{{sel}}}") == {
            "reason=invalid_json": 1,
            "reason=too_large": 1,
            "reason=unrecognised_line": 1,
        }
        fallback = query(url, f"lazystream_fallback_records_total{{{sel}}}")
        assert fallback[f"fence=productpage,namespace={namespace}"] >= 3
        assert query(url, f"lazystream_api_writes_total{{{sel},kind='sidecar',outcome='applied'}}")
        assert scalar(url, f"lazystream_edge_messages_total{{{sel},result='written'}}") >= 2
        wait_value(url, f"lazystream_consumer_lag{{{sel}}}", lambda v: v == 0, worker)
        assert scalar(url, f"process_resident_memory_bytes{{{sel}}}") > 10_000_000

        # every dashboard expression is valid PromQL for the real Prometheus, and finds this worker's series
        dashboard = json.loads((REPO / "deploy" / "grafana" / "lazystream.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$job", ".*").replace("$__rate_interval", "1m")
                expr = expr.replace('job=~".*"', sel)
                assert isinstance(query(url, expr), dict), expr
        assert query(url, f"process_resident_memory_bytes{{{sel}}}")
    finally:
        sd_file.unlink(missing_ok=True)
        code = worker.stop()
    assert code == 0, worker.output()[-3000:]
