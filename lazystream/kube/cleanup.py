"""Removing what lazystream wrote, found from the API server rather than from memory.

An object is lazystream's when its ``managedFields`` name lazystream's field manager: every write goes
through server-side apply with that one manager, and a restarted worker remembers nothing. Fences are
lazystream's to delete only when they also carry the created-by label (auto-created); on a manual fence
lazystream owns nothing but the status fields it applied, and gives those back.

The order: Sidecars first (workloads get the full config back), then the fences
lazystream created, then the fallback EnvoyFilters, so no workload is ever fenced without a fallback, and
last the global-sidecar Services and ConfigMaps the leader wrote.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from lazystream.domain.autofence import is_auto_created
from lazystream.domain.cluster import ObjectKey
from lazystream.kube.client import FIELD_MANAGER

log = logging.getLogger(__name__)

REMOVAL_CONCURRENCY = 8
"""Requests in flight while removing (a cluster may hold thousands of Sidecars)."""
SIDECAR = ("networking.istio.io/v1alpha3", "Sidecar")
SERVICE_FENCE = ("microservice.slime.io/v1alpha1", "ServiceFence")
ENVOY_FILTER = ("networking.istio.io/v1alpha3", "EnvoyFilter")
GLOBAL_SIDECAR_OBJECTS = (("v1", "Service"), ("v1", "ConfigMap"))
"""What the leader writes for the global-sidecar besides the EnvoyFilters (named ``global-sidecar``)."""
GLOBAL_SIDECAR_NAME = "global-sidecar"


def managed_by(obj: Mapping[str, Any], field_manager: str = FIELD_MANAGER) -> bool:
    """Whether ``field_manager`` holds fields of ``obj`` (any operation, any subresource)."""
    entries = (obj.get("metadata") or {}).get("managedFields") or []
    return any(entry.get("manager") == field_manager for entry in entries)


def _resource(dyn: DynamicClient, kind: tuple[str, str]) -> Any:
    return dyn.resources.get(api_version=kind[0], kind=kind[1])


def _key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return ObjectKey(meta.get("namespace", ""), meta.get("name", ""))


def _delete(resource: Any, obj: Mapping[str, Any]) -> bool:
    """Delete ``obj`` if it is still the version that was read (a precondition on its uid); False when it
    is gone already."""
    meta = obj.get("metadata") or {}
    try:
        resource.delete(
            name=meta["name"],
            namespace=meta.get("namespace"),
            body={"preconditions": {"uid": meta.get("uid")}} if meta.get("uid") else None,
        )
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def delete_sidecar_if_ours(api: client.ApiClient, key: ObjectKey, field_manager: str = FIELD_MANAGER) -> bool:
    """Delete the Sidecar ``key`` when lazystream wrote it; True when it was deleted. A Sidecar someone
    else wrote under the same name is left alone."""
    resource = _resource(DynamicClient(api), SIDECAR)
    try:
        obj = resource.get(name=key.name, namespace=key.namespace).to_dict()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return managed_by(obj, field_manager) and _delete(resource, obj)


@dataclass
class Removal:
    """What :func:`remove_everything` did, in order."""

    sidecars: list[ObjectKey] = field(default_factory=list)
    fences: list[ObjectKey] = field(default_factory=list)
    statuses: list[ObjectKey] = field(default_factory=list)
    """Manual fences whose lazystream-applied status was given back."""
    envoy_filters: list[ObjectKey] = field(default_factory=list)
    global_sidecar: list[str] = field(default_factory=list)
    """``<Kind> <namespace>/global-sidecar`` of the Services and ConfigMaps deleted."""

    @property
    def total(self) -> int:
        return (
            len(self.sidecars)
            + len(self.fences)
            + len(self.statuses)
            + len(self.envoy_filters)
            + len(self.global_sidecar)
        )


def _list(resource: Any, namespaces: Iterable[str] | None) -> list[dict[str, Any]]:
    if namespaces is None:
        return [item.to_dict() for item in resource.get().items]
    out: list[dict[str, Any]] = []
    for namespace in namespaces:
        out += [item.to_dict() for item in resource.get(namespace=namespace).items]
    return out


def remove_everything(
    api: client.ApiClient,
    *,
    field_manager: str = FIELD_MANAGER,
    namespaces: Iterable[str] | None = None,
    on_step: Callable[[str, ObjectKey], None] = lambda step, key: None,
) -> Removal:
    """Remove every object lazystream wrote (in ``namespaces``, or everywhere): Sidecars, then the fences
    it created, then the fallback EnvoyFilters, then the global-sidecar Services and ConfigMaps only
    lazystream wrote; manual fences keep everything but lazystream's status."""
    dyn = DynamicClient(api)
    scope = list(namespaces) if namespaces is not None else None
    done = Removal()
    with ThreadPoolExecutor(REMOVAL_CONCURRENCY, thread_name_prefix="lazystream-uninstall") as pool:

        def each(
            step: str, objs: list[dict[str, Any]], act: Callable[[dict[str, Any]], bool]
        ) -> list[ObjectKey]:
            """Run ``act`` on every object, in parallel (each phase ends before the next begins); the keys of
            those it acted on."""
            acted = [_key(o) for o, did in zip(objs, pool.map(act, objs), strict=True) if did]
            for key in acted:
                on_step(step, key)
            return acted

        def give_back(obj: dict[str, Any]) -> bool:
            _give_back_status(dyn, _key(obj), field_manager)
            return True

        sidecars = _resource(dyn, SIDECAR)
        ours = [o for o in _list(sidecars, scope) if managed_by(o, field_manager)]
        done.sidecars = each("sidecar deleted", ours, lambda o: _delete(sidecars, o))

        fences = _resource(dyn, SERVICE_FENCE)
        ours = [o for o in _list(fences, scope) if managed_by(o, field_manager)]
        created = [o for o in ours if is_auto_created(o)]
        done.fences = each("fence deleted", created, lambda o: _delete(fences, o))
        manual = [o for o in ours if not is_auto_created(o)]
        done.statuses = each("fence status given back", manual, give_back)

        filters = _resource(dyn, ENVOY_FILTER)
        ours = [o for o in _list(filters, scope) if managed_by(o, field_manager)]
        done.envoy_filters = each("EnvoyFilter deleted", ours, lambda o: _delete(filters, o))

        # last: the global-sidecar Service and ConfigMap the leader wrote; nothing routes to them any more
        for kind in GLOBAL_SIDECAR_OBJECTS:
            resource = _resource(dyn, kind)
            for obj in _list(resource, scope):
                key = _key(obj)
                if (
                    key.name == GLOBAL_SIDECAR_NAME
                    and _only_ours(obj, field_manager)
                    and _delete(resource, obj)
                ):
                    done.global_sidecar.append(f"{kind[1]} {key}")
                    on_step(f"global-sidecar {kind[1]} deleted", key)
    return done


def _only_ours(obj: Mapping[str, Any], field_manager: str) -> bool:
    """Whether lazystream is the only writer of ``obj`` (a global-sidecar Service or ConfigMap someone
    else also wrote, a chart's, is left in place)."""
    entries = (obj.get("metadata") or {}).get("managedFields") or []
    return bool(entries) and all(entry.get("manager") == field_manager for entry in entries)


def _give_back_status(dyn: DynamicClient, key: ObjectKey, field_manager: str) -> None:
    """Apply an empty status with lazystream's manager: server-side apply then removes the status fields
    only lazystream owned, and lazystream no longer appears in the fence's managedFields."""
    status = dyn.resources.get(api_version=SERVICE_FENCE[0], kind=SERVICE_FENCE[1]).subresources["status"]
    body = {
        "apiVersion": SERVICE_FENCE[0],
        "kind": SERVICE_FENCE[1],
        "metadata": {"name": key.name, "namespace": key.namespace},
    }
    try:
        status.server_side_apply(
            body=body,
            name=key.name,
            namespace=key.namespace,
            field_manager=field_manager,
            force_conflicts=True,
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
