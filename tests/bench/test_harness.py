"""The benchmarks' shared helpers: their arithmetic, and an API server of their own."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
from kubernetes import client

from bench.harness import private_kube, quantile
from lazystream.kube.client import api_client
from tests.fixtures.servers import unavailable


def test_quantiles_are_nearest_rank() -> None:
    hundred = [float(n) for n in range(100, 0, -1)]  # 1..100, unsorted
    assert quantile(hundred, 0.99) == 99.0  # not the largest: one sample in a hundred may be above
    assert quantile(hundred, 0.5) == 50.0
    assert quantile(hundred, 1.0) == 100.0
    assert quantile(hundred, 0.0) == 1.0
    assert quantile([3.0, 1.0, 2.0], 0.99) == 3.0  # too few samples: the p99 is the largest
    assert quantile([7.0], 0.5) == 7.0
    assert math.isnan(quantile([], 0.99))


@pytest.mark.kube
def test_a_private_api_server_serves_then_leaves_nothing_behind(kube_server, tmp_path: Path) -> None:
    if "LAZYSTREAM_TEST_KUBECONFIG" not in os.environ:
        unavailable("the local servers (a private API server uses their binaries)")
    run_dir = tmp_path / "kube"
    with private_kube(run_dir) as kubeconfig:
        assert kubeconfig != Path(os.environ["LAZYSTREAM_TEST_KUBECONFIG"])
        with api_client(kubeconfig) as api:
            names = {ns.metadata.name for ns in client.CoreV1Api(api).list_namespace().items}
        assert "default" in names
        pids = [int((run_dir / "k8s" / f"{name}.pid").read_text()) for name in ("kube-apiserver", "etcd")]
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not run_dir.exists()
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
