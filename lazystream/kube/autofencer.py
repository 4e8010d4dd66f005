"""autoFence, the leader's duty: keep auto-created ServiceFences in step with Services and Namespaces.

What to create and delete is the domain core's decision (:func:`lazystream.domain.autofence.plan`); this
module reads the watch cache, applies the plan, and runs again whenever a Service or Namespace changes
(and every ``resync_seconds`` as a safety net). Fences are created with server-side apply under
lazystream's field manager without forcing, so the created-by label is added next to labels others set,
never replacing them; a fence is deleted with a uid precondition, its Sidecar first.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from lazystream.domain import autofence
from lazystream.domain.cluster import ClusterView, ObjectKey
from lazystream.kube.cleanup import SERVICE_FENCE, delete_sidecar_if_ours
from lazystream.kube.client import FIELD_MANAGER
from lazystream.kube.duty import LeaderDuty

log = logging.getLogger(__name__)


class AutoFencer(LeaderDuty):
    """Runs while this worker leads; :meth:`poke` (thread-safe) asks for a pass after a cluster change."""

    def __init__(
        self,
        api: client.ApiClient,
        cache: ClusterView,
        options: autofence.AutoFenceOptions,
        *,
        field_manager: str = FIELD_MANAGER,
        resync_seconds: float = 30.0,
        in_scope: Callable[[ObjectKey], bool] = lambda key: True,
    ) -> None:
        super().__init__(resync_seconds)
        self.api = api
        self.cache = cache
        self.options = options
        self.field_manager = field_manager
        self.in_scope = in_scope
        self.counters: Counter[str] = Counter()
        """``created``, ``deleted``, ``passes`` and ``error:<status>``."""

    def plan(self) -> autofence.AutoFencePlan:
        with self.cache.reading():
            existing = [f for k, f in self.cache.fences.items() if self.in_scope(k)]
            result = autofence.plan(self.cache.state, existing, self.options)
        create = tuple(f for f in result.create if self.in_scope(_key(f)))
        return autofence.AutoFencePlan(create, tuple(k for k in result.delete if self.in_scope(k)))

    async def reconcile(self) -> None:
        plan = self.plan()
        self.counters["passes"] += 1
        for obj in plan.create:
            await self._guarded(self._create, obj, "created")
        for key in plan.delete:
            await self._guarded(self._delete, key, "deleted")

    async def _guarded(self, fn: Callable[[Any], None], arg: Any, outcome: str) -> None:
        try:
            await asyncio.to_thread(fn, arg)
        except ApiException as exc:
            self.counters[f"error:{exc.status}"] += 1
            log.warning("autoFence: %s %s failed: %s %s", outcome[:-1], arg, exc.status, exc.reason)
        else:
            self.counters[outcome] += 1

    def _fences(self) -> Any:
        return DynamicClient(self.api).resources.get(api_version=SERVICE_FENCE[0], kind=SERVICE_FENCE[1])

    def _create(self, obj: dict[str, Any]) -> None:
        key = _key(obj)
        self._fences().server_side_apply(
            body=obj, name=key.name, namespace=key.namespace, field_manager=self.field_manager
        )
        log.info("autoFence: created ServiceFence %s", key)

    def _delete(self, key: ObjectKey) -> None:
        with self.cache.reading():
            fence = self.cache.fences.get(key)
        uid = ((fence or {}).get("metadata") or {}).get("uid")
        delete_sidecar_if_ours(self.api, key, self.field_manager)  # workloads get full config back first
        try:
            self._fences().delete(
                name=key.name,
                namespace=key.namespace,
                body={"preconditions": {"uid": uid}} if uid else None,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        log.info("autoFence: deleted ServiceFence %s", key)


def _key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj["metadata"]
    return ObjectKey(meta["namespace"], meta["name"])
