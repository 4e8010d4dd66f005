"""Reading ``lazystream render``'s input files, with errors that say which file, which document or line,
and why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CLUSTER_KINDS = frozenset(
    {
        "Namespace",
        "Service",
        "Endpoints",
        "EndpointSlice",
        "Pod",
        "VirtualService",
        "ServiceEntry",
        "ServiceFence",
    }
)


class InputError(ValueError):
    """An input file that cannot be used; the message names the file and the place in it."""


def cluster_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file())
        if not files:
            raise InputError(f"{path}: no .yaml, .yml or .json files in this directory")
        return files
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    return [path]


def load_cluster(path: Path) -> list[dict[str, Any]]:
    """Kubernetes objects from one multi-document YAML file or a directory of them; ``List`` kinds are
    unwrapped; kinds lazystream does not read are skipped."""
    objects: list[dict[str, Any]] = []
    for file in cluster_files(path):
        for where, obj in _documents(file):
            objects += _unwrap(obj, where)
    return objects


def _documents(file: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{file}: cannot read: {exc}") from exc
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{file}:{line}: invalid YAML: {problem}") from exc
    for index, document in enumerate(documents, start=1):
        if document is None:
            continue
        where = f"{file}: document {index}"
        if not isinstance(document, dict):
            raise InputError(
                f"{where}: expected a Kubernetes object (a mapping), got {type(document).__name__}"
            )
        yield where, document


def _unwrap(obj: dict[str, Any], where: str) -> list[dict[str, Any]]:
    kind = obj.get("kind")
    if not isinstance(kind, str):
        raise InputError(f"{where}: no kind")
    if kind == "List" or kind.endswith("List"):
        items = obj.get("items")
        if not isinstance(items, list):
            raise InputError(f"{where}: {kind} without an items list")
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise InputError(f"{where}: items[{i}] is not an object")
            if kind != "List" and "kind" not in item:
                item = {**item, "kind": kind.removesuffix("List")}
            out += _unwrap(item, f"{where}: items[{i}]")
        return out
    if kind not in CLUSTER_KINDS:
        return []
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise InputError(f"{where}: {kind} without metadata.name")
    return [obj]


def read_access_log(path: Path) -> Iterator[bytes]:
    """One record per line (any format of decisions §2); blank lines are skipped."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc
    with handle:
        for line in handle:
            if line.strip():
                yield line.rstrip(b"\r\n")
