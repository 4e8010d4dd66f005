"""The API client. Against an API server that accepts connections and never answers (a hung server, not a
stopped one): requests end within their bound, and a stopping cache does not wait out its sync timeout.
Against the real one: the connection pool keeps as many connections as the client is told it holds."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
import yaml
from kubernetes import client

from lazystream.kube import client as kube_client
from lazystream.kube.client import api_client
from lazystream.kube.informers import ClusterCache
from tests.fixtures.servers import KubeServer


class SilentServer:
    """A TCP server that accepts every connection, reads nothing and writes nothing."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)  # accept() in a loop that sees close(): close alone does not wake it
        self.closed = threading.Event()
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.closed.set()
        self.thread.join(5)
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_kubeconfig(tmp_path: Path) -> Iterator[Path]:
    server = SilentServer()
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    try:
        yield path
    finally:
        server.close()


def test_a_request_without_its_own_timeout_is_bounded(
    silent_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube_client, "DEFAULT_REQUEST_TIMEOUT", (0.5, 0.5))
    api = api_client(silent_kubeconfig)
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError):
        client.CoreV1Api(api).list_namespace()
    assert time.monotonic() - started < 20  # urllib3 retries three times: four bounded attempts
    api.close()


def test_a_request_timeout_of_its_own_wins(silent_kubeconfig: Path) -> None:
    api = api_client(silent_kubeconfig)
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError):
        client.CoreV1Api(api).list_namespace(_request_timeout=(1.0, 0.5))
    assert time.monotonic() - started < 10  # not the 60 s default
    api.close()


def test_a_stopped_cache_stops_waiting_for_its_first_sync(silent_kubeconfig: Path) -> None:
    api = api_client(silent_kubeconfig)
    cache = ClusterCache(api, kinds=["Namespace"])
    cache.start()
    threading.Timer(0.5, cache.stop, kwargs={"timeout": 0.1}).start()
    started = time.monotonic()
    assert not cache.wait_synced(60)
    assert time.monotonic() - started < 5
    api.close()


def test_connections_returned_together_are_kept_up_to_the_pool_size(
    kube_server: KubeServer, caplog: pytest.LogCaptureFixture
) -> None:
    # a worker's watches all end at once when it stops: each connection beyond the pool was closed with
    # urllib3's "Connection pool is full" warning (eight per worker stop, with the client's default pool)
    def hold_connections(api: client.ApiClient, count: int) -> None:
        barrier = threading.Barrier(count)

        def request() -> None:
            barrier.wait(10)  # all in flight together: each takes a connection of its own
            client.CoreV1Api(api).list_namespace(timeout_seconds=1, watch=True, _preload_content=False).read()

        threads = [threading.Thread(target=request) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    small = api_client(kube_server.kubeconfig, connections=2)
    hold_connections(small, 6)
    small.close()
    # six at once, two kept: four closed (fewer if a slow thread started after another had ended)
    assert 0 < sum("Connection pool is full" in r.getMessage() for r in caplog.records) <= 4

    caplog.clear()
    enough = api_client(kube_server.kubeconfig, connections=6)
    hold_connections(enough, 6)
    enough.close()
    assert not [r for r in caplog.records if "Connection pool is full" in r.getMessage()]
