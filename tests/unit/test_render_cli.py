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
    result = run("--access-log", str(tmp_path / "nope.log"), "--cluster", str(tmp_path))
    assert result.exit_code == 1
    assert "no .yaml, .yml or .json files" in result.stderr
    (tmp_path / "c.yaml").write_text("kind: Namespace\nmetadata: {name: x}\n")
    result = run("--access-log", str(tmp_path / "nope.log"), "--cluster", str(tmp_path))
    assert "nope.log: cannot read" in result.stderr
    assert run("--access-log", "x", "--cluster", str(tmp_path), "--now", "soon").exit_code == 2


def test_help_names_every_option() -> None:
    result = CliRunner().invoke(main, ["render", "--help"])
    for option in ("--access-log", "--cluster", "--config", "--output", "--now"):
        assert option in result.output
