"""The global-sidecar's Service cache (Slime's Service controller): a watch of Services only, so the proxy
completes a short name only for a Service that exists. The global-sidecar's command hands
:func:`start_service_cache` to the proxy process, which does not import the Kubernetes layer itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from lazystream.config import KubeSettings
from lazystream.domain.forwarding import ServiceExists
from lazystream.kube.client import api_client
from lazystream.kube.informers import ClusterCache

log = logging.getLogger(__name__)
CACHE_SYNC_TIMEOUT = 60.0
"""Seconds the start-up waits for the first list of Services (the proxy serves meanwhile)."""


async def start_service_cache(
    kube: KubeSettings, cluster_domain: str
) -> tuple[ServiceExists, Callable[[], None]]:
    """Start watching Services; whether a Service exists, and how to stop the watch."""
    api = api_client(kube.kubeconfig)
    cache = ClusterCache(api, cluster_domain=cluster_domain, kinds=["Service"])
    cache.start()
    if not await asyncio.to_thread(cache.wait_synced, CACHE_SYNC_TIMEOUT):
        log.warning("Services not listed after %.0f s: short names wait for them", CACHE_SYNC_TIMEOUT)

    def stop() -> None:
        cache.stop()
        api.close()

    # A dict lookup, safe against the watch thread's updates under the GIL; no lock on the hot path.
    return cache.state.has_service, stop
