"""`make demo` (scripts/demo.sh) on the real servers: A → global-sidecar → B, and A's Sidecar learning B.

The script runs as a user runs it; the servers are already up here, so it neither starts nor stops them
(it only stops servers it started). Its output is the test's evidence.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.fixtures.servers import REPO, KubeServer

pytestmark = [pytest.mark.heavy, pytest.mark.kafka, pytest.mark.kube, pytest.mark.timeout(420)]


def test_make_demo_shows_the_callers_sidecar_learning_the_callee(
    kafka_bootstrap: str, kube_server: KubeServer
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LAZYSTREAM_") or k.startswith("LAZYSTREAM_TEST_")
    }
    done = subprocess.run(
        ["scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=400, check=False
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    namespace = re.search(r"^namespace (lazystream-demo-[0-9-]+)$", out, re.M)
    assert namespace, out[-3000:]
    wanted = f"'*/details.{namespace[1]}.svc.cluster.local'"
    before, learned, after = out.partition("productpage's Sidecar learned details")
    assert learned, out[-5000:]
    # before the traffic the Sidecar lists only the mesh namespaces; afterwards it lists details, not the
    # undeclared host the caller also sent
    assert "only the mesh namespaces" in before
    assert wanted not in before
    sidecar_yaml = after.split("kind: ServiceFence")[0]
    assert wanted in sidecar_yaml
    assert "evil.example.net" not in sidecar_yaml
    assert re.search(r"learned details \d+\.\d\d s after the first call", out)
    assert out.count("→ global-sidecar → B: 200") == 3
