from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from lazystream import __version__
from lazystream.cli import main


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["worker", "crds", "--version"]),
        (["worker"], ["--kafka-bootstrap", "--data-dir", "--web-port", "--loglevel", "LAZYSTREAM_DATA_DIR"]),
        (["crds", "apply"], ["--kubeconfig", "--dir", "--timeout", "Established"]),
    ],
)
def test_help_is_complete(args: list[str], expected: list[str]) -> None:
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0
    for text in expected:
        assert text in result.output


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.output.strip() == f"lazystream, version {__version__}"


def test_invalid_setting_fails_at_start_naming_it() -> None:
    result = CliRunner().invoke(main, ["worker"], env={"LAZYSTREAM_TOPIC_PARTITIONS": "zero"})
    assert result.exit_code == 2
    assert "LAZYSTREAM_TOPIC_PARTITIONS: 'zero' is not an integer" in result.output


def test_crds_apply_reports_a_directory_without_manifests(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    result = CliRunner().invoke(
        main, ["crds", "apply", "--dir", str(tmp_path), "--kubeconfig", str(kubeconfig)]
    )
    assert result.exit_code == 1
    assert f"no CRD manifests (*.yaml) in {tmp_path}" in result.output
