"""The server scripts themselves: ports are configurable, start is idempotent, and stop leaves nothing behind.

Each server is started a second time on other ports, in a run directory of the test's own, next to the
session's servers, so the test exercises exactly what `.ci/run` and the demo rely on.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.servers import REPO, unavailable

pytestmark = [pytest.mark.heavy, pytest.mark.timeout(300)]

INFRA = REPO / "scripts" / "infra"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def processes_under(run_dir: Path) -> list[str]:
    """Command lines of live processes that mention ``run_dir`` (every server's arguments do)."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(run_dir) in cmdline:
                out.append(cmdline)
    return out


def script(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)


@pytest.fixture
def local_scripts() -> None:
    if not os.environ.get("LAZYSTREAM_TEST_KAFKA_BOOTSTRAP"):
        unavailable("the local server scripts (servers.sh up)")


@pytest.mark.parametrize(
    ("server", "port_vars"),
    [
        ("kafka", ["KAFKA_PORT", "KAFKA_SECURE_PORT", "KAFKA_CONTROLLER_PORT"]),
        ("k8s", ["K8S_PORT", "ETCD_PORT"]),
        ("prometheus", ["PROM_PORT"]),
    ],
)
def test_server_restarts_on_other_ports_and_stops_cleanly(
    local_scripts: None, server: str, port_vars: list[str], tmp_path: Path
) -> None:
    ports = free_ports(len(port_vars) + 1)
    if server == "k8s":  # etcd's peer port is ETCD_PORT + 1: keep both clear of the API server's
        ports = [ports[0], 30000 + ports[1] % 20000]
    env = dict(os.environ, LAZYSTREAM_INFRA_RUN=str(tmp_path / "run"))
    env.update({var: str(port) for var, port in zip(port_vars, ports, strict=False)})
    servers = [str(INFRA / "servers.sh")]
    main_port = ports[0]
    made: list[tuple[bytes, bytes]] = []

    for round_ in range(2):  # start, start again (no-op), stop; then the same once more: a restart
        started = script([*servers, "up", server], env)
        assert started.returncode == 0, started.stderr
        assert listening(main_port)
        if server == "kafka":  # the SASL_SSL listener, its CA and SCRAM password kept across restarts
            assert listening(ports[1])
            secrets = tmp_path / "run" / "kafka-secrets"
            made.append(((secrets / "ca.crt").read_bytes(), (secrets / "scram.password").read_bytes()))
            assert made[0] == made[-1]
            shown = script([*servers, "env"], env).stdout
            assert f"LAZYSTREAM_TEST_KAFKA_SECURE_BOOTSTRAP=127.0.0.1:{ports[1]}" in shown
            assert f"LAZYSTREAM_TEST_KAFKA_SASL_PASSWORD_FILE={secrets}/scram.password" in shown
        pids = {p.name: p.read_text() for p in (tmp_path / "run").rglob("*.pid")}
        again = script([*servers, "up", server], env)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stderr
        assert {p.name: p.read_text() for p in (tmp_path / "run").rglob("*.pid")} == pids
        assert script([*servers, "status", server], env).returncode == 0

        stopped = script([*servers, "down", server], env)
        assert stopped.returncode == 0, stopped.stderr
        assert not listening(main_port), f"round {round_}: port {main_port} still open after stop"
        assert not any(listening(port) for port in ports[: len(port_vars)])
        assert processes_under(tmp_path / "run") == []
        assert script([*servers, "status", server], env).returncode == 1


def test_a_taken_port_is_refused_with_a_clear_message(local_scripts: None, tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        env = dict(os.environ, LAZYSTREAM_INFRA_RUN=str(tmp_path / "run"), PROM_PORT=str(port))
        result = script([str(INFRA / "servers.sh"), "up", "prometheus"], env)
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert processes_under(tmp_path / "run") == []
