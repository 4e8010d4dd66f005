"""What ``render`` writes, for the domain tests' scenarios, is accepted by the real API server running Istio's
own CRDs with ``fieldValidation=Strict``: no refusal, no warning (server-side dry run, so nothing stays)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from lazystream.domain.autofence import AutoFenceOptions
from lazystream.domain.envoyfilters import DispatchRule, FallbackOptions
from lazystream.domain.fences import FenceOptions
from lazystream.domain.render import RenderOptions, render
from lazystream.domain.resolution import ResolveOptions
from lazystream.kube import crds
from lazystream.testing import istio_text_line
from tests.domain.test_autofence import mesh as autofence_mesh
from tests.domain.test_explain import mesh as explain_mesh
from tests.domain.test_fences import NOW, TUTORIAL_LINES, tutorial_cluster
from tests.domain.test_render import revision_mesh

pytestmark = [pytest.mark.kube, pytest.mark.timeout(180)]
EGRESS = "istio-egress.istio-system.svc.cluster.local"
PLURALS = {"ServiceFence": "servicefences", "Sidecar": "sidecars", "EnvoyFilter": "envoyfilters"}


def scenarios() -> dict[str, tuple[list[dict[str, Any]], list[bytes], RenderOptions]]:
    tutorial = [line.encode() for line in TUTORIAL_LINES]
    shorts = tutorial_cluster().objects()
    shorts[-1]["spec"]["host"] = {"ratings": {"stable": {}}, "x_y": {}, "*.ok.io": {}}
    calls = [
        istio_text_line(
            authority=a, upstream_cluster="inbound|80||", downstream_remote_address="10.1.0.5:1"
        ).encode()
        for a in ("api", "web", "details.default")
    ]
    return {
        "tutorial": (tutorial_cluster().objects(), tutorial, RenderOptions()),
        "short names": (shorts, tutorial, RenderOptions(resolve=ResolveOptions(enable_short_domain=True))),
        "explain mesh": (explain_mesh().fence("productpage", labelSelector=[{"selector": {"tier": "db"}}])
                         .objects(), tutorial, RenderOptions(fences=FenceOptions(stable_hosts=(EGRESS,)))),
        "autofence": (autofence_mesh({"slime.io/serviceFenced": "true"}).objects(), calls,
                      RenderOptions(autofence=AutoFenceOptions(enabled=True, self_resource_rev="1-30"))),
        "revisions": (revision_mesh().objects(), calls,
                      RenderOptions(autofence=AutoFenceOptions(istio_revs=("1-30",)))),
        "namespace mode": (tutorial_cluster().objects(), tutorial, RenderOptions(
            fallback=FallbackOptions(global_sidecar_mode="namespace", namespaces=("default", "shop")))),
        "dispatches and lua": (tutorial_cluster().objects(), tutorial, RenderOptions(fallback=FallbackOptions(
            dispatches=(DispatchRule(name="ext", domains=("*.example.com",), cluster="PassthroughCluster"),),
            add_env_header_via_lua=True, proxy_version="1.2.*", revision="1-30"))),
    }  # fmt: skip


def dry_run_apply(api: client.ApiClient, obj: dict[str, Any]) -> list[str]:
    """Server-side apply ``obj`` as a dry run with strict field validation; the server's warnings."""
    group, version = obj["apiVersion"].split("/")
    meta = obj["metadata"]
    path = f"/apis/{group}/{version}/namespaces/{meta['namespace']}/{PLURALS[obj['kind']]}/{meta['name']}"
    request = api.param_serialize(
        method="PATCH", resource_path=path,
        query_params=[("fieldManager", "lazystream"), ("fieldValidation", "Strict"), ("dryRun", "All"),
                      ("force", "true")],
        header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
        body=obj, auth_settings=["BearerToken"],
    )  # fmt: skip
    response = api.call_api(*request)
    response.read()
    if response.status >= 400:
        raise AssertionError(f"{obj['kind']} {meta['namespace']}/{meta['name']} refused: {response.status} "
                             f"{response.data[:2000]!r}")  # fmt: skip
    headers = response.getheaders()
    warning = headers.get("Warning") if headers else None
    return [warning] if warning else []


@pytest.mark.parametrize("name", list(scenarios()))
def test_rendered_objects_pass_istios_crds_strictly(
    name: str, kube_api: client.ApiClient, kube_crds: list[crds.CRDStatus]
) -> None:
    objects, records, options = scenarios()[name]
    items = render(objects, records, options, NOW).items
    assert {i["kind"] for i in items} >= {"Sidecar", "EnvoyFilter"}
    core = client.CoreV1Api(kube_api)
    existing = {n.metadata.name for n in core.list_namespace().items}
    for namespace in sorted({i["metadata"]["namespace"] for i in items} - existing):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    warnings = []
    for item in items:
        body = {k: v for k, v in item.items() if k != "status"}
        keep = ("name", "namespace", "labels", "annotations")  # the fixtures' uids name no object here
        body["metadata"] = {k: v for k, v in item["metadata"].items() if k in keep}
        warnings += dry_run_apply(kube_api, body)
    assert warnings == []
