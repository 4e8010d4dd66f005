"""Install lazystream's CustomResourceDefinitions and wait until the API server serves them.

``deploy/crds/`` holds ServiceFence (microservice.slime.io) and the Istio kinds lazystream reads or
writes, for clusters without Istio (tests, the demo). Applying is server-side and idempotent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from lazystream.kube.client import FIELD_MANAGER, dynamic_client


class CRDError(RuntimeError):
    """A CRD manifest is invalid, or the API server did not establish a CRD in time."""


@dataclass(frozen=True)
class CRDStatus:
    """One applied CRD and whether the API server reports it ``Established``."""

    name: str
    kind: str
    versions: tuple[str, ...]
    established: bool


def default_crd_dir() -> Path:
    """``$LAZYSTREAM_CRDS_DIR``, else ``deploy/crds`` of the source tree (or of the container image)."""
    env = os.environ.get("LAZYSTREAM_CRDS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "deploy" / "crds"


def load_crds(directory: Path) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in the YAML files of ``directory``, in file order."""
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise CRDError(f"no CRD manifests (*.yaml) in {directory}")
    return [doc for path in files for doc in _crd_documents(path)]


def _crd_documents(path: Path) -> Iterator[dict[str, Any]]:
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except yaml.YAMLError as exc:
        raise CRDError(f"{path}: invalid YAML: {exc}") from exc
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
            raise CRDError(f"{path}: document {index + 1} is not a CustomResourceDefinition")
        yield doc


def apply_crds(
    api: client.ApiClient, crds: Iterable[dict[str, Any]], *, timeout: float = 30.0
) -> list[CRDStatus]:
    """Server-side apply ``crds``, then wait until each one is ``Established``."""
    resource = dynamic_client(api).resources.get(
        api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
    )
    names = []
    for crd in crds:
        name = crd["metadata"]["name"]
        resource.server_side_apply(body=crd, name=name, field_manager=FIELD_MANAGER, force_conflicts=True)
        names.append(name)
    return [wait_established(api, name, timeout=timeout) for name in names]


def wait_established(api: client.ApiClient, name: str, *, timeout: float = 30.0) -> CRDStatus:
    """Poll the CRD until its ``Established`` condition is true; :class:`CRDError` after ``timeout``."""
    ext = client.ApiextensionsV1Api(api)
    deadline = time.monotonic() + timeout
    while True:
        crd = ext.read_custom_resource_definition(name)
        conditions = (crd.status and crd.status.conditions) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return CRDStatus(
                name=name,
                kind=crd.spec.names.kind,
                versions=tuple(v.name for v in crd.spec.versions if v.served),
                established=True,
            )
        if time.monotonic() > deadline:
            raise CRDError(f"CRD {name} not Established after {timeout:.0f} s")
        time.sleep(0.2)
