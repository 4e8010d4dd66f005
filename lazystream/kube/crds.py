"""Install CustomResourceDefinitions, never changing one that lazystream does not own, and wait until the
API server serves them.

``deploy/crds/`` holds lazystream's own: ServiceFence (microservice.slime.io), labelled
``app.kubernetes.io/part-of: lazystream``. Istio's kinds come with Istio (its own CRDs; the test servers
fetch them from the istio.io/api Go module). A CRD already on the cluster without that label (Istio's, or
Slime's ServiceFence) is left as it is: replacing it with a different schema would change what the API
server accepts for everyone. Overwriting it takes an explicit ``overwrite``.
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
from kubernetes.client.exceptions import ApiException

from lazystream.kube.client import FIELD_MANAGER, dynamic_client


class CRDError(RuntimeError):
    """A CRD manifest is invalid, or the API server did not establish a CRD in time."""


OWNER_LABEL = "app.kubernetes.io/part-of"
OWNER_VALUE = "lazystream"


@dataclass(frozen=True)
class CRDStatus:
    """One CRD, what was done with it, and whether the API server reports it ``Established``."""

    name: str
    kind: str
    versions: tuple[str, ...]
    established: bool
    action: str = "applied"
    """``created``, ``updated`` (lazystream's own, or overwritten on request) or ``left alone`` (owned by
    someone else: ``owner`` says who)."""
    owner: str = ""


def default_crd_dir() -> Path:
    """``$LAZYSTREAM_CRDS_DIR``, else ``deploy/crds`` of the source tree (or of the container image)."""
    env = os.environ.get("LAZYSTREAM_CRDS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "deploy" / "crds"


def load_crds(*paths: Path) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in ``paths``: YAML files, or directories of them (in name order)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.yaml"))
            if not found:
                raise CRDError(f"no CRD manifests (*.yaml) in {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise CRDError(f"{path}: no such file or directory")
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
    api: client.ApiClient,
    crds: Iterable[dict[str, Any]],
    *,
    overwrite: bool = False,
    timeout: float = 30.0,
    manager: str = FIELD_MANAGER,
) -> list[CRDStatus]:
    """Create the CRDs that are missing and update lazystream's own (server-side apply); leave every other
    existing CRD alone unless ``overwrite``. Then wait until each one is ``Established``."""
    ext = client.ApiextensionsV1Api(api)
    resource = dynamic_client(api).resources.get(
        api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
    )
    done: list[tuple[str, str, str]] = []
    for crd in crds:
        name = crd["metadata"]["name"]
        try:
            live = ext.read_custom_resource_definition(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            live = None
        owner = "" if live is None else _owner(live)
        if live is not None and owner != OWNER_VALUE and not overwrite:
            done.append((name, "left alone", owner))
            continue
        resource.server_side_apply(body=crd, name=name, field_manager=manager, force_conflicts=True)
        done.append((name, "created" if live is None else "updated", OWNER_VALUE if live is None else owner))
    statuses = []
    for name, action, owner in done:
        status = wait_established(api, name, timeout=timeout)
        statuses.append(CRDStatus(status.name, status.kind, status.versions, True, action, owner))
    return statuses


def _owner(crd: Any) -> str:
    """Who a live CRD belongs to: ``lazystream`` when it carries lazystream's label, else its first field
    manager (e.g. ``istio-operator``, ``helm``, ``kubectl-client-side-apply``)."""
    labels = crd.metadata.labels or {}
    if labels.get(OWNER_LABEL) == OWNER_VALUE:
        return OWNER_VALUE
    managers = [m.manager for m in crd.metadata.managed_fields or [] if m.manager]
    return managers[0] if managers else "unknown"


SERVICE_FENCE_CRD = "servicefences.microservice.slime.io"


def numeric_domain_status(api: client.ApiClient) -> bool:
    """Whether the cluster's ServiceFence CRD types ``status.domains.*.status`` as an integer (Slime's own
    chart does; lazystream's types it as the enum's names). Read from the storage version's schema."""
    resource = dynamic_client(api).resources.get(
        api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
    )
    crd = resource.get(name=SERVICE_FENCE_CRD).to_dict()
    for version in crd["spec"]["versions"]:
        if version.get("storage"):
            node: Any = (version.get("schema") or {}).get("openAPIV3Schema") or {}
            for step in ("status", "domains", "*", "status"):
                node = (
                    node.get("additionalProperties")
                    if step == "*"
                    else (node.get("properties") or {}).get(step)
                )
                if not isinstance(node, dict):
                    return False
            return bool(node.get("type") == "integer")
    return False


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
