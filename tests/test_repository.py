"""The repository's own contracts: the README's two commands, CI calling the test command, valid scripts,
a valid compose file and a non-root image."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_setup_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README's Set up section has no bash block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_gives_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    assert readme_setup_commands() == ["make demo", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^test:.*\n\tscripts/test\.sh$", makefile, re.M)
    assert re.search(r"^demo:.*\n\tscripts/demo\.sh$", makefile, re.M)


def test_the_test_command_treats_no_tests_collected_as_failure() -> None:
    script = (REPO / "scripts" / "test.sh").read_text()
    assert "rc -eq 5" in script


@pytest.mark.parametrize(
    "script",
    [*sorted(p.relative_to(REPO) for p in (REPO / "scripts").rglob("*.sh")), Path(".ci/run")],
    ids=str,
)
def test_shell_scripts_parse_and_are_executable(script: Path) -> None:
    path = REPO / script
    if path.read_text().startswith("#!"):  # lib.sh is sourced, not run
        assert path.stat().st_mode & 0o111, f"{script} is not executable"
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_image_runs_as_non_root_from_the_runtime_lock() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") >= 2, "multi-stage build"
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user
    assert not user[-1].startswith(("root", "0"))
    assert "pip install -r requirements.lock" in dockerfile


def test_lock_files_pin_every_package_exactly() -> None:
    for name in ("requirements.lock", "requirements-test.lock"):
        pins = [line for line in (REPO / name).read_text().splitlines() if line and not line.startswith("#")]
        assert pins, name
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+(\[[a-z,]+\])?==[^=\s]+", p) for p in pins), name
    runtime = {p.split("==")[0].lower(): p for p in (REPO / "requirements.lock").read_text().split()}
    test = {p.split("==")[0].lower(): p for p in (REPO / "requirements-test.lock").read_text().split()}
    for pkg in ("faust-streaming", "aiokafka", "rocksdict", "kubernetes", "orjson", "fluent-logger"):
        assert pkg in runtime, pkg
        assert runtime[pkg] == test[pkg], f"{pkg}: runtime and test locks disagree"


def test_every_third_party_import_of_the_package_is_declared() -> None:
    """An import that works only because another dependency brings the package breaks when that one
    changes; what lazystream imports, pyproject.toml names."""
    import ast
    import re
    import sys
    import tomllib
    from importlib.metadata import packages_distributions

    declared = {
        re.split(r"[\[<>=!~ ;]", dep, maxsplit=1)[0].lower().replace("_", "-")
        for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    distributions = packages_distributions()
    missing: dict[str, set[str]] = {}
    for path in (REPO / "lazystream").rglob("*.py"):
        if "testing" in path.parts:  # the testing kit may use test dependencies
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top == "lazystream" or top in sys.stdlib_module_names:
                    continue
                dists = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                if not dists & declared:
                    missing.setdefault(top, set()).add(str(path.relative_to(REPO)))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
