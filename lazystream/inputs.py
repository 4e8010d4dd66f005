"""Reading ``lazystream render``'s input files, with errors that say which file, which document or line,
and why."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lazystream.config.loader import suggestion
from lazystream.domain.cluster import ClusterObjectError, ClusterState
from lazystream.domain.fences import fence_from_object

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


@dataclass
class ClusterInput:
    """The objects of ``--cluster``, each checked, and what was skipped."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    """Kinds lazystream does not read → where each such object is (``file: document N``)."""

    def warnings(self) -> list[str]:
        return [
            f"skipped {len(places)} {kind} object(s) (lazystream does not read them): {', '.join(places[:3])}"
            for kind, places in sorted(self.skipped.items())
        ]


def load_cluster(path: Path) -> list[dict[str, Any]]:
    """Kubernetes objects from one multi-document YAML file or a directory of them (see
    :func:`read_cluster`)."""
    return read_cluster(path).objects


def read_cluster(path: Path) -> ClusterInput:
    """Kubernetes objects from one multi-document YAML file or a directory of them; ``List`` kinds are
    unwrapped; kinds lazystream does not read are skipped and reported. Each object is checked as the
    worker reads it, so an error names its file and document; a kind one letter away from one lazystream
    reads (``Servce``) and the same object twice are errors too."""
    found = ClusterInput()
    seen: dict[tuple[str, str, str], str] = {}
    checked = ClusterState()  # each object read as the worker reads it, once
    for file in cluster_files(path):
        for where, document in _documents(file):
            for place, obj in _unwrap(document, where):
                kind = obj["kind"]
                if kind not in CLUSTER_KINDS:
                    _check_kind(kind, place)
                    found.skipped.setdefault(kind, []).append(place)
                    continue
                _check_object(checked, obj, place)
                meta = obj["metadata"]
                key = (kind, str(meta.get("namespace", "")), meta["name"])
                if key in seen:
                    name = f"{key[1]}/{key[2]}" if key[1] else key[2]
                    raise InputError(f"{place}: {kind} {name} again (first at {seen[key]})")
                seen[key] = place
                found.objects.append(obj)
    return found


def _check_kind(kind: str, where: str) -> None:
    """A kind close to one lazystream reads is a typo, not a kind to skip."""
    hint = suggestion(kind, sorted(CLUSTER_KINDS))
    if hint:
        raise InputError(f"{where}: unknown kind {kind!r}{hint}")


def _check_object(checked: ClusterState, obj: dict[str, Any], where: str) -> None:
    """Read the object as the worker would; a malformed field is an error at its place."""
    try:
        checked.apply(obj)
        if obj["kind"] == "ServiceFence":
            fence_from_object(obj)
    except ClusterObjectError as exc:
        raise InputError(f"{where}: {exc}") from exc


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


def _unwrap(obj: dict[str, Any], where: str) -> list[tuple[str, dict[str, Any]]]:
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
    if kind in CLUSTER_KINDS:
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            raise InputError(f"{where}: {kind} without metadata.name")
    return [(where, obj)]


def numbered_access_log(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, record) for each non-blank line, so that a bad record can be named by its line."""
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line.rstrip(b"\r\n")
