"""Prometheus is real: it scrapes a test exporter and answers a PromQL query over what it scraped."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.fixtures.servers import PrometheusServer

pytestmark = pytest.mark.prometheus


class Exporter(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def exporter(fresh_name: str) -> Iterator[tuple[str, str]]:
    """An HTTP exporter on loopback serving istio_requests_total with a per-test label value."""
    handler = type("H", (Exporter,), {})
    handler.body = (
        "# TYPE istio_requests_total counter\n"
        f'istio_requests_total{{source_app="{fresh_name}",'
        'destination_service="details.default.svc.cluster.local"} 7\n'
    ).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="exporter", daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", fresh_name
    server.shutdown()
    server.server_close()
    thread.join()


def query(url: str, promql: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}") as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_promql_over_a_scraped_target(prometheus: PrometheusServer, exporter: tuple[str, str]) -> None:
    address, app = exporter
    sd_file = prometheus.targets_dir / f"{app}.json"
    sd_file.write_text(json.dumps([{"targets": [address], "labels": {"test": app}}]))
    try:
        promql = f'sum by (destination_service) (istio_requests_total{{source_app="{app}"}})'
        deadline = time.monotonic() + 30  # discovery batches updates every 5 s, then a 1 s scrape
        result = query(prometheus.url, promql)
        while not result and time.monotonic() < deadline:
            time.sleep(0.5)
            result = query(prometheus.url, promql)
    finally:
        sd_file.unlink()
    assert [(r["metric"], r["value"][1]) for r in result] == [
        ({"destination_service": "details.default.svc.cluster.local"}, "7")
    ]
