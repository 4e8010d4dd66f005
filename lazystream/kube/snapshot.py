"""One-off reads of the cluster for the operations commands (``replay --dry-run``, ``graph``).

The worker keeps a watched cache (:mod:`lazystream.kube.informers`); a command that runs once only needs a
list of each kind, as Kubernetes JSON, with the same kinds the cache watches.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lazystream.kube.informers import KINDS, KindInfo

HTTP_NOT_FOUND = 404
LIST_PAGE = 500


def _list_page(api: client.ApiClient, info: KindInfo, namespace: str | None, token: str | None) -> Any:
    kwargs: dict[str, Any] = {"limit": LIST_PAGE, "_preload_content": False}
    if token:
        kwargs["_continue"] = token
    if info.custom:
        custom = client.CustomObjectsApi(api)
        if namespace:
            return custom.list_namespaced_custom_object(
                info.group, info.version, namespace, info.plural, **kwargs
            )
        return custom.list_cluster_custom_object(info.group, info.version, info.plural, **kwargs)
    if info.kind == "Namespace":
        return client.CoreV1Api(api).list_namespace(**kwargs)
    if info.kind == "EndpointSlice":
        discovery = client.DiscoveryV1Api(api)
        if namespace:
            return discovery.list_namespaced_endpoint_slice(namespace, **kwargs)
        return discovery.list_endpoint_slice_for_all_namespaces(**kwargs)
    core = client.CoreV1Api(api)
    plural = {"Service": "service", "Endpoints": "endpoints", "Pod": "pod"}[info.kind]
    if namespace:
        return getattr(core, f"list_namespaced_{plural}")(namespace, **kwargs)
    return getattr(core, f"list_{plural}_for_all_namespaces")(**kwargs)


def list_objects(
    api: client.ApiClient, kinds: Iterable[str], namespace: str | None = None
) -> list[dict[str, Any]]:
    """Every object of ``kinds`` (names of :data:`~lazystream.kube.informers.KINDS`), in ``namespace`` or
    everywhere; a custom kind whose CRD is not installed lists as empty."""
    out: list[dict[str, Any]] = []
    for kind in kinds:
        info = KINDS[kind]
        token: str | None = None
        while True:
            try:
                response = _list_page(api, info, namespace if kind != "Namespace" else None, token)
            except ApiException as exc:
                if exc.status == HTTP_NOT_FOUND and info.custom:
                    break
                raise
            body = orjson.loads(response.data)
            api_version = f"{info.group}/{info.version}" if info.group else info.version
            for item in body.get("items") or []:
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                out.append(item)
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                break
    return out
