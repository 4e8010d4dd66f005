"""``metricSourceType: prometheus`` on the real servers.

The real Prometheus scrapes a test exporter serving ``istio_requests_total`` and
``istio_tcp_connections_opened_total`` with Istio's labels; the leader's two handlers are unioned and the
fence learns the admitted destinations. The worker reaches Prometheus through a switchable relay: while it
answers 503, learned state stays. When the exporter stops serving a series, its destination goes through
EXPIREWAIT.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.dynamic import DynamicClient

from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer, PrometheusServer
from tests.fixtures.worker import LAZYSTREAM, apply_objects, bookinfo_in, get, wait_for, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.prometheus, pytest.mark.timeout(300)]
SVF = ("microservice.slime.io/v1alpha1", "ServiceFence")
LABELS = 'source_app="$source_app",source_workload_namespace="$namespace",reporter="destination"'
HANDLERS = {
    "http": {"query": f"sum(istio_requests_total{{{LABELS}}})by(destination_service)"},
    "tcp": {"query": f"sum(istio_tcp_connections_opened_total{{{LABELS}}})by(destination_service)"},
}


class Served:
    """What the exporter serves, changeable while it runs."""

    def __init__(self) -> None:
        self.lines: list[str] = []


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, threading.Thread]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def exporter(prometheus: PrometheusServer, namespace: str) -> Iterator[Served]:
    served = Served()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = "".join(line + "\n" for line in served.lines).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server, thread = serve(Handler)
    sd_file = prometheus.targets_dir / f"{namespace}.json"
    sd_file.write_text(json.dumps([{"targets": [f"127.0.0.1:{server.server_address[1]}"], "labels": {}}]))
    yield served
    sd_file.unlink()
    server.shutdown()
    server.server_close()
    thread.join()


class Relay:
    up = True


@pytest.fixture
def relay(prometheus: PrometheusServer) -> Iterator[tuple[str, type[Relay]]]:
    """Prometheus's API through a relay the test can switch off (then it answers 503, not JSON)."""
    state = type("State", (Relay,), {})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if not state.up:
                self.send_response(503)
                self.end_headers()
                self.wfile.write(b"down for the test")
                return
            try:
                with urllib.request.urlopen(prometheus.url + self.path) as resp:
                    status, body = resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server, thread = serve(Handler)
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()
    thread.join()


def series(metric: str, namespace: str, destination: str, value: int = 5) -> str:
    labels = {
        "reporter": "destination",
        "source_app": "productpage",
        "source_workload": "productpage-v1",
        "source_workload_namespace": namespace,
        "destination_service": destination,
        "destination_service_name": destination.split(".")[0],
        "destination_service_namespace": namespace,
        "response_code": "200",
    }
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "} " + str(value)


def domains(dynamic: DynamicClient, namespace: str) -> dict[str, Any]:
    fence = get(dynamic, *SVF, namespace, "productpage") or {}
    return (fence.get("status") or {}).get("domains") or {}


async def test_prometheus_source_learns_survives_an_outage_and_expires_dropped_series(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
    exporter: Served,
    relay: tuple[str, type[Relay]],
) -> None:
    address, switch = relay
    builder, _ = bookinfo_in(namespace)
    apply_objects(kube_dynamic, builder.objects())
    fqdn = {name: f"{name}.{namespace}.svc.cluster.local" for name in ("details", "reviews", "ratings")}
    exporter.lines = [
        "# TYPE istio_requests_total counter",
        series("istio_requests_total", namespace, fqdn["details"]),
        series("istio_requests_total", namespace, fqdn["reviews"]),
        series("istio_requests_total", namespace, "evil.example.net"),  # not admitted
        "# TYPE istio_tcp_connections_opened_total counter",
        series("istio_tcp_connections_opened_total", namespace, fqdn["ratings"]),
    ]
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "general": {"metricSourceType": "prometheus"},
                "metric": {"prometheus": {"address": address, "handlers": HANDLERS}},
            }
        )
    )
    env = worker_env(
        kafka_bootstrap,
        kube_server,
        fresh_name,
        tmp_path,
        namespace,
        LAZYSTREAM_LEADER_ELECTION_LEASE_DURATION_SECONDS="4",
        LAZYSTREAM_LEADER_ELECTION_RENEW_DEADLINE_SECONDS="3",
        LAZYSTREAM_LEADER_ELECTION_RETRY_PERIOD_SECONDS="0.5",
    )
    worker = WorkerProcess([LAZYSTREAM, "worker", "--config", str(config)], env, tmp_path / "worker.log")
    try:
        worker.wait_for_output("lazystream ready", timeout=120)
        everything = set(fqdn.values())
        wait_for(lambda: set(domains(kube_dynamic, namespace)) == everything, "learned", 90, worker)
        sidecar = get(kube_dynamic, "networking.istio.io/v1alpha3", "Sidecar", namespace, "productpage")
        assert {f"*/{h}" for h in everything} <= set(sidecar["spec"]["egress"][0]["hosts"])

        # an outage: queries fail (counted), nothing is forgotten
        switch.up = False
        seen = worker.output().count("prometheus: handler")
        wait_for(
            lambda: worker.output().count("prometheus: handler") >= seen + 4, "failed rounds", 60, worker
        )
        current = domains(kube_dynamic, namespace)
        assert set(current) == everything
        assert all("status" not in d for d in current.values()), current
        assert "prometheus:query_errors" in worker.output() or "query_errors" in worker.output()

        # back up; reviews' series disappears: EXPIREWAIT first, then gone
        switch.up = True
        exporter.lines = [line for line in exporter.lines if fqdn["reviews"] not in line]
        wait_for(
            lambda: domains(kube_dynamic, namespace).get(fqdn["reviews"], {}).get("status") == "EXPIREWAIT",
            "reviews in EXPIREWAIT",
            90,
            worker,
        )
        wait_for(lambda: fqdn["reviews"] not in domains(kube_dynamic, namespace), "reviews gone", 60, worker)
        assert set(domains(kube_dynamic, namespace)) == {fqdn["details"], fqdn["ratings"]}
    finally:
        assert worker.stop() == 0
