"""The Dockerfile and docker-compose.yml, parsed and linted without a Docker engine.

The Dockerfile rules are the hadolint-style ones that matter for this image (pinned bases, named stages,
exec form, a numeric non-root user, no remote ADD, no pip cache, ports and paths that agree with
lazystream's settings). The compose checks are the structure the Compose specification requires
(top-level keys, service keys, dependency conditions, declared volumes) plus agreement with the repository:
files it mounts exist, LAZYSTREAM_* variables are real settings, commands are lazystream's commands.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from lazystream.cli import main
from lazystream.config import WebSettings, load_config
from tests.fixtures.servers import REPO

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"


@dataclass(frozen=True)
class Instruction:
    line: int
    op: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        op, _, args = full.partition(" ")
        out.append(Instruction(start, op.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def lint_dockerfile(text: str) -> list[str]:
    """Problems found, as ``line N: rule``; empty when the Dockerfile is clean."""
    problems: list[str] = []
    stages: list[str] = []
    ops = instructions(text)
    for ins in ops:
        where = f"line {ins.line}"
        if ins.op == "FROM":
            parts = ins.args.split()
            image = parts[0]
            if ":" not in image.split("/")[-1] and "@" not in image and image not in stages:
                problems.append(f"{where}: FROM {image} has no tag (DL3006)")
            if image.endswith(":latest"):
                problems.append(f"{where}: FROM {image} uses latest (DL3007)")
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages.append(parts[2])
        elif ins.op == "ADD" and re.search(r"https?://", ins.args):
            problems.append(f"{where}: ADD of a URL; use a verified download (DL3020)")
        elif ins.op == "ADD":
            problems.append(f"{where}: ADD where COPY does (DL3020)")
        elif ins.op in {"ENTRYPOINT", "CMD"}:
            try:
                parsed = json.loads(ins.args)
            except ValueError:
                parsed = None
            if not isinstance(parsed, list):
                problems.append(f"{where}: {ins.op} not in exec (JSON) form (DL3025)")
        elif ins.op == "WORKDIR" and not ins.args.startswith("/"):
            problems.append(f"{where}: WORKDIR must be absolute (DL3000)")
        elif ins.op == "RUN":
            if re.search(r"\bpip3? install\b", ins.args) and "--no-cache-dir" not in ins.args:
                env = " ".join(i.args for i in ops if i.op == "ENV" and i.line < ins.line)
                if "PIP_NO_CACHE_DIR=1" not in env:
                    problems.append(f"{where}: pip install keeps its cache (DL3042)")
            if re.search(r"\bapt-get install\b", ins.args) and "--no-install-recommends" not in ins.args:
                problems.append(f"{where}: apt-get install without --no-install-recommends (DL3015)")
            if re.search(r"\bsudo\b", ins.args):
                problems.append(f"{where}: sudo in RUN (DL3004)")
            if re.search(r"\bcd\s", ins.args):
                problems.append(f"{where}: cd in RUN; use WORKDIR (DL3003)")
        elif ins.op == "COPY":
            source = re.search(r"--from=(\S+)", ins.args)
            if source and source[1] not in stages:
                problems.append(f"{where}: COPY --from={source[1]} names no earlier stage (DL3022)")
    users = [i for i in ops if i.op == "USER"]
    final_from = max(i.line for i in ops if i.op == "FROM")
    final_users = [u for u in users if u.line > final_from]
    if not final_users:
        problems.append("the final stage has no USER: it would run as root (DL3002)")
    elif (
        final_users[-1].args.split(":")[0] in {"root", "0"}
        or not final_users[-1].args.split(":")[0].isdigit()
    ):
        problems.append("the final USER must be a numeric non-root uid (runAsNonRoot can check it)")
    if len(stages) < 1:
        problems.append("not a multi-stage build: build tools would stay in the image")
    return problems


def test_the_dockerfile_is_clean() -> None:
    assert lint_dockerfile(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("snippet", "rule"),
    [
        ("FROM python\nUSER 1\n", "DL3006"),
        ("FROM python:latest\nUSER 1\n", "DL3007"),
        ("FROM a:1 AS b\nFROM a:1\nADD https://x/y /z\nUSER 1\n", "DL3020"),
        ("FROM a:1 AS b\nFROM a:1\nCMD lazystream worker\nUSER 1\n", "DL3025"),
        ("FROM a:1 AS b\nFROM a:1\nRUN pip install x\nUSER 1\n", "DL3042"),
        ("FROM a:1 AS b\nFROM a:1\nCOPY --from=c /a /b\nUSER 1\n", "DL3022"),
        ("FROM a:1 AS b\nUSER 1\nFROM a:1\n", "DL3002"),
        ("FROM a:1 AS b\nFROM a:1\nUSER lazystream\n", "numeric non-root"),
    ],
)
def test_the_linter_catches(snippet: str, rule: str) -> None:
    assert any(rule in p for p in lint_dockerfile(snippet)), lint_dockerfile(snippet)


def test_the_image_agrees_with_the_settings() -> None:
    ops = instructions(DOCKERFILE.read_text())
    final_from = max(i.line for i in ops if i.op == "FROM")
    final = [i for i in ops if i.line > final_from]
    env = dict(
        pair.split("=", 1) for i in final if i.op == "ENV" for pair in shlex.split(i.args) if "=" in pair
    )
    assert int(next(i.args for i in final if i.op == "EXPOSE")) == WebSettings().port
    config = load_config(None, environ={k: v for k, v in env.items() if k.startswith("LAZYSTREAM_")
                                        and k != "LAZYSTREAM_CRDS_DIR"})  # fmt: skip
    assert config.web.host == "0.0.0.0"  # noqa: S104 - reachable by the kubelet's probes
    assert str(config.tables.data_dir) in next(i.args for i in final if i.op == "VOLUME")
    assert json.loads(next(i.args for i in final if i.op == "ENTRYPOINT")) == ["lazystream"]
    copied = [src for i in ops if i.op == "COPY" and "--from" not in i.args for src in i.args.split()[:-1]]
    for source in copied:
        assert (REPO / source).exists(), source
    ignored = (REPO / ".dockerignore").read_text().split()
    for source in copied:
        assert source.rstrip("/") not in ignored, f"{source} is copied but .dockerignore drops it"


# --- docker-compose.yml ------------------------------------------------------------------------------------

TOP_LEVEL = {"version", "name", "services", "networks", "volumes", "configs", "secrets", "include"}
SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "volumes", "ports", "depends_on", "healthcheck",
    "restart", "networks", "working_dir", "user", "labels", "expose", "env_file", "pull_policy",
}  # fmt: skip
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
EXPECTED_SERVICES = {"kafka", "topics", "crds", "worker", "global-sidecar", "fluent-bit", "demo-a", "demo-b"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) are resolved by the YAML loader
    assert isinstance(data, dict)
    return data


def test_compose_structure(compose: dict[str, Any]) -> None:
    assert set(compose) - TOP_LEVEL <= {k for k in compose if k.startswith("x-")}
    services = compose["services"]
    assert set(services) == EXPECTED_SERVICES
    declared_volumes = set(compose.get("volumes", {}))
    for name, service in services.items():
        assert re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name)
        assert set(service) <= SERVICE_KEYS, (name, set(service) - SERVICE_KEYS)
        assert "image" in service or "build" in service, name
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            assert spec["condition"] in CONDITIONS, (name, spec)
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if not source.startswith((".", "/", "$")):
                assert source in declared_volumes, (name, source)
            elif source.startswith("./"):
                assert (REPO / source).exists(), (name, source)
        health = service.get("healthcheck")
        if health:
            assert health["test"][0] in {"CMD", "CMD-SHELL"}, name
        for key in ("command", "entrypoint"):
            assert isinstance(service.get(key, []), list), (name, key)  # exec form, no shell surprises


def test_compose_kafka_runs_in_kraft_mode(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(env)
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"


def test_compose_lazystream_services_use_real_settings_and_commands(compose: dict[str, Any]) -> None:
    commands = set(main.commands)
    for name, service in compose["services"].items():
        env = {
            k: str(v) for k, v in (service.get("environment") or {}).items() if k.startswith("LAZYSTREAM_")
        }
        load_config(None, environ=env)  # an unknown or invalid variable fails here, naming it
        command = service.get("command") or []
        if service.get("image", "").startswith("lazystream") and command and "entrypoint" not in service:
            assert command[0] in commands, (name, command)
            result = CliRunner().invoke(main, [*command, "--help"])
            assert result.exit_code == 0, (name, result.output)
    assert compose["services"]["worker"]["environment"]["LAZYSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_compose_wires_the_fallback_path(compose: dict[str, Any]) -> None:
    """demo-a → global-sidecar → demo-b; the global-sidecar's records → Fluent Bit's forward input → Kafka."""
    services = compose["services"]
    gs = services["global-sidecar"]["command"]
    assert gs[gs.index("--records") + 1] == "forward"
    assert gs[gs.index("--forward-host") + 1] == "fluent-bit"
    port = gs[gs.index("--port") + 1]
    fluent = yaml.safe_load((REPO / "fluentbit" / "fluent-bit.yaml").read_text())
    forward = next(i for i in fluent["pipeline"]["inputs"] if i["name"] == "forward")
    assert forward["port"] == 24224  # the global-sidecar's default forwardPort
    script = services["demo-a"]["entrypoint"][-1]
    assert f"http://global-sidecar:{port}/" in script
    assert '"Host": "demo-b:9080"' in script
    assert services["demo-b"]["entrypoint"][-1] == "9080"
    assert services["fluent-bit"]["environment"]["KAFKA_BROKERS"] == "kafka:9092"
    assert (
        services["fluent-bit"]["environment"]["ACCESS_TOPIC"]
        == services["worker"]["environment"]["LAZYSTREAM_TOPICS_ACCESS"]
    )
    for name in ("fluent-bit.yaml", "lazystream.lua"):
        assert any(v.startswith(f"./fluentbit/{name}:") for v in services["fluent-bit"]["volumes"])
