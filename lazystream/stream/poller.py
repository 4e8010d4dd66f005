"""The leader's Prometheus poller in ``metricSourceType: prometheus``: the other source of edge messages.

Every refresh period, for every enabled fence in scope, each handler's query runs as an instant query; the
union of the admitted hosts goes onto the edges topic as one ``report`` message for the fence (the table
agent is the only writer of learned state). A fence whose queries fail is skipped for that round and
counted: its learned state is never cleared by an outage. A host that drops out of a successful report
leaves learned state, and the fence's entry then expires through EXPIREWAIT.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from lazystream.domain import learned, prometheus
from lazystream.domain.cluster import ClusterView, ObjectKey

log = logging.getLogger(__name__)
QUERY_TIMEOUT_SECONDS = 10.0


def instant_query(address: str, promql: str, timeout: float = QUERY_TIMEOUT_SECONDS) -> Any:
    """One ``/api/v1/query`` (blocking; run it in a thread). Prometheus answers errors with a JSON body
    and a 4xx/5xx status; that body is returned so its message is kept."""
    url = f"{address.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - configured http(s) URL
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return orjson.loads(exc.read())
        except orjson.JSONDecodeError:
            raise prometheus.PrometheusError(f"HTTP {exc.code}") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise prometheus.PrometheusError(str(exc) or type(exc).__name__) from None


class PrometheusPoller:
    """Runs while this worker leads."""

    def __init__(
        self,
        cache: ClusterView,
        send_edge: Callable[[ObjectKey, Mapping[str, Any]], Awaitable[None]],
        *,
        address: str,
        queries: Mapping[str, str],
        period_seconds: float,
        excluded_hosts: frozenset[str] = frozenset(),
        in_scope: Callable[[ObjectKey], bool] = lambda key: True,
        query: Callable[[str, str], Any] = instant_query,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self.send_edge = send_edge
        self.address = address
        self.queries = dict(queries)
        self.period_seconds = period_seconds
        self.excluded_hosts = excluded_hosts
        self.in_scope = in_scope
        self.query = query
        self.clock = clock
        self.counters: Counter[str] = Counter()
        """``rounds``, ``reports``, ``query_errors`` (queries that failed) and ``fences_failed``."""

    async def run(self) -> None:
        """Poll every period until cancelled (when leadership ends)."""
        while True:
            started = time.monotonic()
            await self.poll()
            await asyncio.sleep(max(0.0, self.period_seconds - (time.monotonic() - started)))

    def enabled_fences(self) -> list[ObjectKey]:
        with self.cache.reading():
            return sorted(
                key
                for key, fence in self.cache.fences.items()
                if (fence.get("spec") or {}).get("enable") and self.in_scope(key)
            )

    async def poll(self) -> None:
        self.counters["rounds"] += 1
        for key in self.enabled_fences():
            hosts = await self.hosts_of(key)
            if hosts is None:
                self.counters["fences_failed"] += 1
                continue
            await self.send_edge(key, learned.report(prometheus.SOURCE, hosts, self.clock()))
            self.counters["reports"] += 1

    async def hosts_of(self, key: ObjectKey) -> set[str] | None:
        """The admitted union of every handler's hosts for ``key``; None when any query failed."""
        found: set[str] = set()
        for name, template in sorted(self.queries.items()):
            promql = prometheus.render_query(template, key)
            try:
                body = await asyncio.to_thread(self.query, self.address, promql)
                found |= prometheus.hosts_in_response(body)
            except prometheus.PrometheusError as exc:
                self.counters["query_errors"] += 1
                log.warning("prometheus: handler %s for %s failed: %s", name, key, exc)
                return None
        with self.cache.reading():
            return prometheus.admit(found, key, self.cache.state, self.excluded_hosts)
