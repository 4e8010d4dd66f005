"""`lazystream render`: output formats, order, and readable errors for bad input files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lazystream.cli import main
from tests.domain.test_fences import TUTORIAL_LINES, tutorial_cluster


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    cluster = tmp_path / "cluster"
    cluster.mkdir()
    objects = tutorial_cluster().objects()
    # a directory of files, one of them a List
    (cluster / "a.yaml").write_text(yaml.safe_dump_all(objects[:4]))
    (cluster / "b.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": objects[4:]})
    )
    log = tmp_path / "access.log"
    log.write_text("\n".join(TUTORIAL_LINES) + "\n\n")
    return log, cluster


def run(*args: str):
    return CliRunner().invoke(main, ["render", *args])


def test_json_output_ordered_by_kind_namespace_name(inputs: tuple[Path, Path]) -> None:
    log, cluster = inputs
    result = run("--access-log", str(log), "--cluster", str(cluster), "-o", "json", "--now", "1700000000")
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)["items"]
    assert [(i["kind"], i["metadata"]["name"]) for i in items] == [
        ("ServiceFence", "productpage"),
        ("Sidecar", "productpage"),
        ("EnvoyFilter", "to-global-sidecar"),
    ]
    assert "records: 2 learned" in result.stderr


def test_yaml_output_and_config(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    log, cluster = inputs
    config = tmp_path / "config.yaml"
    config.write_text(
        "general:\n  stableHost: [ratings.default.svc.cluster.local]\n  wormholePort: ['9080']\n"
    )
    result = run("--access-log", str(log), "--cluster", str(cluster), "--config", str(config))
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.stdout))
    assert "*/ratings.default.svc.cluster.local" in documents[1]["spec"]["egress"][0]["hosts"]
    ports = {p["match"]["routeConfiguration"]["name"] for p in documents[2]["spec"]["configPatches"]}
    assert ports == {"80", "9080"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "kind: Service\nmetadata: {name: a}\n---\nkind: a: b\n",
            "bad.yaml: line 4: invalid YAML: mapping values",
        ),
        ("- just\n- a list\n", "bad.yaml: document 1: expected a Kubernetes object (a mapping), got list"),
        ("kind: Service\nmetadata: {}\n", "bad.yaml: document 1: Service without metadata.name"),
        ("kind: List\nitems: 3\n", "bad.yaml: document 1: List without an items list"),
        ("metadata: {name: x}\n", "bad.yaml: document 1: no kind"),
        (
            "kind: Service\nmetadata: {name: a}\nspec: {ports: [{port: http}]}\n",
            "Service default/a: spec.ports[0].port must be an integer",
        ),
        (
            "kind: ServiceFence\nmetadata: {name: f}\n"
            "spec: {host: {a: {deadline: {expire: {seconds: soon}}}}}\n",
            "ServiceFence default/f: spec.host[a].deadline.expire.seconds",
        ),
    ],
)
def test_bad_cluster_files_are_reported_with_place_and_reason(
    tmp_path: Path, content: str, message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    log = tmp_path / "access.log"
    log.write_text("")
    result = run("--access-log", str(log), "--cluster", str(bad))
    assert result.exit_code == 1
    assert message in result.stderr, result.stderr


def test_missing_inputs(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("\n")
    result = run("--access-log", str(log), "--cluster", str(tmp_path))
    assert result.exit_code == 1
    assert "no .yaml, .yml or .json files" in result.stderr
    (tmp_path / "c.yaml").write_text("kind: Namespace\nmetadata: {name: x}\n")
    # every missing file the same way: a usage error naming the option and the path
    for option, args in [
        ("--access-log", ["--access-log", str(tmp_path / "nope.log"), "--cluster", str(tmp_path)]),
        ("--cluster", ["--access-log", str(log), "--cluster", str(tmp_path / "nope.yaml")]),
        ("--config", ["--access-log", str(log), "--cluster", str(tmp_path), "--config", "/nope.yaml"]),
    ]:
        result = run(*args)
        assert result.exit_code == 2, option
        assert f"Invalid value for '{option}'" in result.stderr
        assert "does not exist" in result.stderr
    assert run("--access-log", str(log), "--cluster", str(tmp_path), "--now", "soon").exit_code == 2


def test_help_names_every_option() -> None:
    result = CliRunner().invoke(main, ["render", "--help"])
    for option in ("--access-log", "--cluster", "--config", "--output", "--now"):
        assert option in result.output


def test_a_typo_in_a_kind_is_an_error_other_kinds_are_reported(inputs: tuple[Path, Path]) -> None:
    log, cluster = inputs
    (cluster / "c.yaml").write_text(
        "kind: ConfigMap\nmetadata: {name: settings, namespace: default}\n---\n"
        "kind: Servce\nmetadata: {name: cart, namespace: default}\n"
    )
    result = run("--access-log", str(log), "--cluster", str(cluster))
    assert result.exit_code == 1
    assert (
        f"{cluster / 'c.yaml'}: document 2: unknown kind 'Servce'; did you mean 'Service'?" in result.stderr
    )
    (cluster / "c.yaml").write_text("kind: ConfigMap\nmetadata: {name: settings, namespace: default}\n")
    result = run("--access-log", str(log), "--cluster", str(cluster))
    assert result.exit_code == 0, result.stderr
    assert "warning: skipped 1 ConfigMap object(s) (lazystream does not read them): " in result.stderr
    assert f"{cluster / 'c.yaml'}: document 1" in result.stderr


def test_an_object_twice_and_a_bad_field_name_their_place(inputs: tuple[Path, Path]) -> None:
    log, cluster = inputs
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "shop"},
               "spec": {"selector": {"app": "s"}, "ports": [{"port": 80}]}}  # fmt: skip
    (cluster / "c.yaml").write_text(yaml.safe_dump_all([service, service]))
    result = run("--access-log", str(log), "--cluster", str(cluster))
    assert result.exit_code == 1
    assert (
        f"{cluster / 'c.yaml'}: document 2: Service shop/s again (first at {cluster / 'c.yaml'}: document 1)"
        in (result.stderr)
    )
    service["spec"]["ports"] = [{"port": "eighty"}]
    (cluster / "c.yaml").write_text(yaml.safe_dump_all([service]))
    result = run("--access-log", str(log), "--cluster", str(cluster))
    assert result.exit_code == 1
    assert f"{cluster / 'c.yaml'}: document 1: Service shop/s: spec.ports[0].port" in result.stderr


def test_dead_letters_name_their_lines_and_garbage_is_an_error(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    log, cluster = inputs
    log.write_text(log.read_text() + '{"half": \n\nnot a record\n')
    result = run("--access-log", str(log), "--cluster", str(cluster))
    assert result.exit_code == 0, result.stderr
    lines = len(TUTORIAL_LINES)
    assert (
        f"dead letters: line {lines + 2}: invalid_json, line {lines + 4}: unrecognised_line" in result.stderr
    )
    garbage = tmp_path / "garbage.log"
    garbage.write_bytes(bytes(range(256)) * 16)
    result = run("--access-log", str(garbage), "--cluster", str(cluster))
    assert result.exit_code == 1
    assert "none of its" in result.stderr
    assert "is an access log record lazystream reads (line 1:" in result.stderr
