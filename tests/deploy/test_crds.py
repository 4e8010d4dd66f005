"""The CRD manifests in deploy/crds are well-formed and structural (the API server refuses others); only
lazystream's own kinds are there (Istio's come with Istio)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lazystream.kube import crds

ALL = crds.load_crds(crds.default_crd_dir())


def test_only_lazystreams_own_kinds_are_shipped_and_labelled_as_lazystreams() -> None:
    assert sorted(c["spec"]["names"]["kind"] for c in ALL) == ["ServiceFence"]
    for crd in ALL:
        assert crd["metadata"]["labels"][crds.OWNER_LABEL] == crds.OWNER_VALUE


def walk(schema: dict[str, Any], path: str = "") -> list[str]:
    """Nodes that a structural schema forbids: ones without a type (unless int-or-string or preserved)."""
    bad = []
    if "type" not in schema and not (
        schema.get("x-kubernetes-int-or-string") or schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        bad.append(path or "/")
    for name, sub in schema.get("properties", {}).items():
        bad += walk(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        bad += walk(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        bad += walk(schema["items"], f"{path}[]")
    return bad


@pytest.mark.parametrize("crd", ALL, ids=lambda c: c["metadata"]["name"])
def test_schemas_are_structural_with_one_storage_version(crd: dict[str, Any]) -> None:
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{names['plural']}.{crd['spec']['group']}"
    assert [v["storage"] for v in crd["spec"]["versions"]].count(True) == 1
    for version in crd["spec"]["versions"]:
        assert walk(version["schema"]["openAPIV3Schema"]) == []
        assert version["subresources"] == {"status": {}}


def test_servicefence_schema_follows_slime() -> None:
    (fence,) = [c for c in ALL if c["spec"]["names"]["kind"] == "ServiceFence"]
    assert fence["spec"]["names"]["shortNames"] == ["svf"]
    schema = fence["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    spec = schema["spec"]["properties"]
    assert set(spec) == {"enable", "host", "namespaceSelector", "labelSelector", "workloadSelector"}
    strategy = spec["host"]["additionalProperties"]["properties"]
    assert set(strategy) == {"stable", "deadline", "auto", "RecentlyCalled"}
    status = schema["status"]["properties"]
    assert set(status) == {"domains", "metricStatus", "visitor"}
    domain = status["domains"]["additionalProperties"]["properties"]
    assert domain["status"]["enum"] == ["ACTIVE", "EXPIRE", "EXPIREWAIT"]
    assert status["metricStatus"]["additionalProperties"] == {"type": "string"}


def test_errors_name_the_file_and_document(tmp_path: Path) -> None:
    with pytest.raises(crds.CRDError, match="no CRD manifests"):
        crds.load_crds(tmp_path)
    (tmp_path / "a.yaml").write_text("kind: CustomResourceDefinition\n---\nkind: ConfigMap\n")
    with pytest.raises(crds.CRDError, match=r"a\.yaml: document 2 is not a CustomResourceDefinition"):
        crds.load_crds(tmp_path)
    (tmp_path / "a.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(crds.CRDError, match=r"a\.yaml: invalid YAML"):
        crds.load_crds(tmp_path)


def test_files_and_directories_load_alike_and_a_missing_path_is_named(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("kind: CustomResourceDefinition\nmetadata: {name: a}\n")
    assert crds.load_crds(tmp_path / "one.yaml") == crds.load_crds(tmp_path)
    assert len(crds.load_crds(tmp_path / "one.yaml", crds.default_crd_dir())) == 1 + len(ALL)
    with pytest.raises(crds.CRDError, match=r"nowhere\.yaml: no such file or directory"):
        crds.load_crds(tmp_path / "nowhere.yaml")
