"""The leader's fallback objects: ``to-global-sidecar`` EnvoyFilter(s), ``global-sidecar`` Service(s) and
ConfigMap(s), kept in step with the wormhole ports.

The port set and the objects are the domain core's (:mod:`lazystream.domain.wormhole`); this module reads
the watch cache, applies what changed with server-side apply under lazystream's field manager, and runs
again on every Service change (autoPort) and every ``resync_seconds``. The set it starts from is read back
from the ConfigMaps it wrote, so a new leader never shrinks it without ``cleanupWormholePort`` (slime#279).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from lazystream.domain import envoyfilters, wormhole
from lazystream.domain.cluster import GLOBAL_SIDECAR_SERVICE, ClusterView
from lazystream.kube.client import FIELD_MANAGER
from lazystream.kube.duty import LeaderDuty

log = logging.getLogger(__name__)

ObjectId = tuple[str, str, str, str]
"""apiVersion, kind, namespace, name."""


def _id(obj: Mapping[str, Any]) -> ObjectId:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])


class FallbackKeeper(LeaderDuty):
    """Runs while this worker leads; :meth:`poke` (thread-safe) asks for a pass after a Service change."""

    def __init__(
        self,
        api: client.ApiClient,
        cache: ClusterView,
        options: envoyfilters.FallbackOptions,
        rules: wormhole.PortRules,
        *,
        selector: Mapping[str, str] = wormhole.DEFAULT_SELECTOR,
        field_manager: str = FIELD_MANAGER,
        resync_seconds: float = 10.0,
    ) -> None:
        super().__init__(resync_seconds)
        self.api = api
        self.cache = cache
        self.options = options
        self.rules = rules
        self.selector = dict(selector)
        self.field_manager = field_manager
        self.ports: frozenset[int] | None = None
        """The current port set; None until read back from the ConfigMaps by a new leader."""
        self.counters: Counter[str] = Counter()
        """``passes``, ``applied``, ``unchanged`` and ``error:<status>``."""
        self._applied: dict[ObjectId, dict[str, Any]] = {}
        self._written: dict[ObjectId, dict[str, Any]] = {}
        """What this term last wrote, to log only real changes (resync passes write everything again)."""
        self._dynamic: DynamicClient | None = None

    def on_term_start(self) -> None:
        """A new term reads the persisted port set again (slime#279) and writes every object once."""
        self.ports = None
        self._applied.clear()
        self._written.clear()

    def on_resync(self) -> None:
        """A timed pass writes every object again (a no-op for the API server when nothing changed),
        repairing edits by others."""
        self._applied.clear()

    def desired_ports(self, previous: frozenset[int]) -> frozenset[int]:
        namespaces = wormhole.global_sidecar_namespaces(self.options)
        in_use: frozenset[int] = frozenset()
        if self.rules.auto_port:
            with self.cache.reading():
                in_use = wormhole.service_http_ports(self.cache.state, self.rules.support_h2, namespaces)
        return wormhole.next_ports(previous, in_use, self.rules, self.options)

    async def reconcile(self) -> None:
        self.counters["passes"] += 1
        if self.ports is None:
            try:
                self.ports = await asyncio.to_thread(self.read_back)
            except ApiException as exc:
                self.counters[f"error:{exc.status}"] += 1
                log.warning("fallback: reading the wormhole ports back failed: %s %s", exc.status, exc.reason)
                return  # never start from an empty set by mistake: retried at the next pass
        ports = self.desired_ports(self.ports)
        if ports != self.ports:
            log.info("fallback: wormhole ports %s -> %s", sorted(self.ports), sorted(ports))
        failed = False
        for obj in wormhole.render_fallback_objects(ports, self.options, self.selector):
            if self._applied.get(_id(obj)) == obj:
                self.counters["unchanged"] += 1
                continue
            try:
                await asyncio.to_thread(self._apply, obj)
            except ApiException as exc:
                failed = True
                self._applied.pop(_id(obj), None)
                self.counters[f"error:{exc.status}"] += 1
                log.warning(
                    "fallback: applying %s failed: %s %s", "/".join(_id(obj)[1:]), exc.status, exc.reason
                )
            else:
                self._applied[_id(obj)] = obj
                self.counters["applied"] += 1
        if not failed:
            self.ports = ports
        else:
            self.ports = self.ports | ports  # keep what may have been written; retried at the next pass

    def read_back(self) -> frozenset[int]:
        """The ports already in the global-sidecar ConfigMaps (the last leader's set)."""
        core = client.CoreV1Api(self.api)
        ports: set[int] = set()
        for namespace in wormhole.global_sidecar_namespaces(self.options):
            try:
                config_map = core.read_namespaced_config_map(GLOBAL_SIDECAR_SERVICE, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            ports |= wormhole.ports_in_config_map({"data": config_map.data})
        log.info("fallback: %d wormhole ports read back from the ConfigMaps", len(ports))
        return frozenset(ports)

    def _apply(self, obj: dict[str, Any]) -> None:
        api_version, kind, namespace, name = _id(obj)
        if self._dynamic is None:
            self._dynamic = DynamicClient(self.api)  # discovery once, on the first write
        resource = self._dynamic.resources.get(api_version=api_version, kind=kind)
        resource.server_side_apply(
            body=obj, name=name, namespace=namespace, field_manager=self.field_manager, force_conflicts=True
        )
        if self._written.get(_id(obj)) != obj:
            log.info("fallback: applied %s %s/%s", kind, namespace, name)
        self._written[_id(obj)] = obj
