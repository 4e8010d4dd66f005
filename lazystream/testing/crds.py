"""The CRDs of a test cluster: Istio's own (fetched by ``scripts/infra/istio/fetch-crds.sh`` from the
istio.io/api Go module) and lazystream's ServiceFence, so that everything lazystream writes in tests, the
demo and benchmarks meets Istio's real schemas and validation rules."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kubernetes import client

from lazystream.kube import crds
from lazystream.kube.client import FIELD_MANAGER

ISTIO_CRDS_ENV = "LAZYSTREAM_TEST_ISTIO_CRDS"
ISTIO_MANAGER = "istio-installer"
"""The field manager Istio's CRDs are applied with in tests, as an installer of Istio's would."""


def istio_crds_file() -> Path:
    """Istio's CRD file named by ``$LAZYSTREAM_TEST_ISTIO_CRDS`` (``scripts/infra/servers.sh env``)."""
    value = os.environ.get(ISTIO_CRDS_ENV)
    if not value or not Path(value).is_file():
        raise crds.CRDError(
            f"Istio's CRDs not found ({ISTIO_CRDS_ENV}={value or ''}): run scripts/infra/servers.sh up and "
            'eval "$(scripts/infra/servers.sh env)"'
        )
    return Path(value)


def install_test_crds(api: client.ApiClient) -> list[crds.CRDStatus]:
    """Istio's CRDs and lazystream's, applied (a test cluster is ours: overwriting is fine), Established."""
    manifests = crds.load_crds(istio_crds_file())
    _drop_stand_ins(api, [m["metadata"]["name"] for m in manifests])
    istio = crds.apply_crds(api, manifests, overwrite=True, manager=ISTIO_MANAGER)
    return istio + crds.apply_crds(api, crds.load_crds(crds.default_crd_dir()), overwrite=True)


def _drop_stand_ins(api: client.ApiClient, names: list[str]) -> None:
    """Delete the stand-ins of Istio's CRDs that lazystream once installed (applied by its field manager)
    from a test cluster: applying Istio's over them would keep the stand-ins' extra fields."""
    ext = client.ApiextensionsV1Api(api)
    for crd in ext.list_custom_resource_definition().items:
        managers = {m.manager for m in crd.metadata.managed_fields or []}
        if crd.metadata.name in names and FIELD_MANAGER in managers:
            ext.delete_custom_resource_definition(crd.metadata.name)
            _wait_gone(ext, crd.metadata.name)


def _wait_gone(ext: client.ApiextensionsV1Api, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ext.read_custom_resource_definition(name)
        except client.exceptions.ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.2)
    raise crds.CRDError(f"CRD {name} still there {timeout:.0f} s after it was deleted")
