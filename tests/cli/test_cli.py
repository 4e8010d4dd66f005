from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from lazystream import __version__
from lazystream.cli import main


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["worker", "config", "crds", "--version"]),
        (
            ["worker"],
            [
                "--config",
                "LAZYSTREAM_CONFIG",
                "--kafka-bootstrap",
                "--data-dir",
                "LAZYSTREAM_TABLES_DATA_DIR",
                "--web-port",
                "--loglevel",
            ],
        ),
        (["config", "show"], ["--config", "LAZYSTREAM_CONFIG", "YAML"]),
        (
            ["global-sidecar"],
            [
                "--port",
                "--records",
                "--event-loop",
                "[uvloop|asyncio]",
                "globalSidecar.eventLoop",
                "uvloop's",
            ],
        ),
        (["crds", "apply"], ["--kubeconfig", "--dir", "--timeout", "Established"]),
        (
            ["explain"],
            ["NAMESPACE/NAME", "--admin-url", "LAZYSTREAM_ADMIN_URL", "--output", "table|json|yaml"],
        ),
        (["reset"], ["NAMESPACE[/NAME]", "--admin-url", "svfReset"]),
        (["uninstall"], ["--namespace", "--yes", "managedFields", "Sidecars first", "Stop the workers"]),
        (
            ["tail"],
            ["TOPIC", "--since", "--from-beginning", "--follow", "--key", "--partition", "--limit", "json"],
        ),
        (["replay"], ["--since", "--from-beginning", "--topic", "--dry-run", "--wait", "refuses"]),
        (["topics", "create"], ["topics.partitions", "topics.replication"]),
        (["topics", "describe"], ["--scan", "lag", "namespace"]),
        (["topics", "scale"], ["--partitions", "--dry-run", "tables.version", "README"]),
        (["graph"], ["--namespace", "--from", "dot", "mermaid", "svg"]),
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
    result = CliRunner().invoke(main, ["worker"], env={"LAZYSTREAM_TOPICS_PARTITIONS": "zero"})
    assert result.exit_code == 2
    assert "LAZYSTREAM_TOPICS_PARTITIONS: 'zero' is not an integer" in result.output


def test_invalid_key_in_the_config_file_fails_at_start_naming_key_and_line(tmp_path: Path) -> None:
    config = tmp_path / "lazystream.yaml"
    config.write_text(
        "general:\n  autoFence: true\n  dispatches:\n    - {name: x, domainRegex: '(', cluster: y}\n"
    )
    result = CliRunner().invoke(main, ["worker", "--config", str(config)])
    assert result.exit_code == 2
    assert "general.dispatches[0].domainRegex: invalid regular expression: " in result.output
    assert f"({config}:4)" in result.output


def test_option_overrides_the_environment_and_is_validated() -> None:
    result = CliRunner().invoke(main, ["worker", "--web-port", "70000"], env={"LAZYSTREAM_WEB_PORT": "7000"})
    assert result.exit_code == 2
    assert "web.port: 70000 is not a TCP port (1-65535)" in result.output


def test_crds_apply_reports_a_directory_without_manifests(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    result = CliRunner().invoke(
        main, ["crds", "apply", "--dir", str(tmp_path), "--kubeconfig", str(kubeconfig)]
    )
    assert result.exit_code == 1
    assert f"no CRD manifests (*.yaml) in {tmp_path}" in result.output


def test_explain_times_are_to_the_second_with_their_zone() -> None:
    from lazystream.cli.admin import _seen

    assert _seen("2027-01-15T07:58:20.123Z") == "2027-01-15 07:58:20 UTC"
    assert _seen(None) == "-"


def test_help_has_examples_and_completion_works() -> None:
    top = CliRunner().invoke(main, ["--help"])
    assert "Examples:" in top.output
    assert 'eval "$(lazystream completion bash)"' in top.output
    for shell, marker in (("bash", "_lazystream_completion()"), ("zsh", "#compdef lazystream"),
                          ("fish", "complete --no-files --command lazystream")):  # fmt: skip
        result = CliRunner().invoke(main, ["completion", shell])
        assert result.exit_code == 0, result.output
        assert marker in result.output
    # what the script asks for: the commands, as click completes them
    env = {"_LAZYSTREAM_COMPLETE": "bash_complete", "COMP_WORDS": "lazystream ta", "COMP_CWORD": "1"}
    result = CliRunner().invoke(main, [], env=env, prog_name="lazystream")
    assert "plain,tail" in result.output


def test_loglevel_takes_slimes_level_names() -> None:
    for command in ("worker", "global-sidecar"):
        (option,) = [p for p in main.commands[command].params if p.name == "loglevel"]
        assert {"trace", "debug", "info", "warn", "error", "fatal"} <= set(option.type.choices)
        assert option.type.case_sensitive is False


def test_an_unreachable_admin_api_is_one_line_naming_the_fix() -> None:
    result = CliRunner().invoke(
        main, ["explain", "a/b", "--admin-url", "http://127.0.0.1:9"], env={"KUBECONFIG": "/nonexistent"}
    )
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "Error: cannot reach the admin API at http://127.0.0.1:9/fences/a/b/explain: Connection refused"
    )
    assert line.endswith("give --admin-url or LAZYSTREAM_ADMIN_URL, or a kubeconfig to find the worker pods)")
