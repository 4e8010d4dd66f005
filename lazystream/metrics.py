"""Prometheus metrics of a worker, served as ``GET /metrics`` (text exposition format).

Most figures already exist as plain counters where the work happens (the ingest's outcomes and progress,
the table agent's counters, the sink's ``writes_total``): a custom collector reads them at scrape time
(pull style), so the hot paths carry no metric calls and the log line and the metrics cannot disagree.
Two figures need more:

- consumer lag asks the brokers for end offsets, which is I/O: the ``/metrics`` handler refreshes it
  (bounded by a timeout) before it renders;
- the produce-to-Sidecar latency is a histogram observed by :class:`LatencyTracker`: the ingest puts the
  access record's Kafka timestamp on each observation (``learned.observe(..., produced=)``), the table agent
  reports the hosts a fence has just learned with that timestamp (``WorkerApp.on_hosts_learned``), and the
  sink reports each Sidecar it has applied (``FenceSink.on_applied``); a learned host's latency is observed
  when the first Sidecar listing it is written. Only the worker holding a fence's partition does both, so
  the two ends meet in one process. The worker makes the tracker first and hands its two hooks to the
  table agent and the sink when it builds them; nothing here reaches into a worker to rewire it.

What the collector reads of a worker is :class:`WorkerParts`, a Protocol, so this module does not import
the worker that serves it.

Metric names are listed in :data:`METRICS` (the dashboard test checks every expression against it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from lazystream.domain.cluster import ObjectKey

if TYPE_CHECKING:
    from lazystream.config import Config
    from lazystream.controller.compute import FenceComputer
    from lazystream.controller.reconciler import FenceController
    from lazystream.kube.informers import ClusterCache
    from lazystream.kube.sink import FenceSink
    from lazystream.stream.app import WorkerApp

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, float("inf"))
"""Seconds; the issue's target is p99 ≤ 2 s, so the buckets are dense around it."""
PENDING_HOSTS = 50_000
"""Learned hosts waiting for their first Sidecar write, at most (the oldest are dropped beyond)."""
LAG_TIMEOUT = 2.0
"""Seconds a scrape waits for the brokers' end offsets before it reports the last lag it knew."""

METRICS: dict[str, str] = {
    "lazystream_access_records_total": "Access-log records read from the access topic.",
    "lazystream_access_batches_total": "Batches of access records handled (offsets committed after each).",
    "lazystream_ingest_commits_failed_total": "Batches whose offsets were not committed (a rebalance).",
    "lazystream_records_learned_total": "Access records that produced a dependency (an edge).",
    "lazystream_records_ignored_total": "Access records ignored, by reason (passthrough, IP authority, ...).",
    "lazystream_records_rejected_total": "Access records whose host was refused, by reason.",
    "lazystream_records_held_total": "Access records of callers without an enabled fence, by reason: their "
    "dependencies are kept for a fence created or enabled later.",
    "lazystream_records_dead_lettered_total": "Access records sent to the dead-letter topic, by reason.",
    "lazystream_edges_sent_total": "Edge messages produced onto the edges topic by the ingest.",
    "lazystream_edge_messages_total": "Edge messages handled by the table agent, by result.",
    "lazystream_edges_read_again_total": "Times an edges partition was read again from a record that faust "
    "never delivered to the table agent (its commit would have skipped the record).",
    "lazystream_hosts_learned_total": "Hosts new to a fence's learned state, via an observation (a new "
    "dependency) or a seed/restore (state rebuilt at start or after scaling).",
    "lazystream_fence_hosts_limit_total": "Edge messages refused because the fence holds "
    "fence.maxHostsPerFence hosts, per fence.",
    "lazystream_fallback_records_total": "Access records per source fence: calls that went through the "
    "global-sidecar (the fallback hit count).",
    "lazystream_fences": "ServiceFences in scope in the watch cache.",
    "lazystream_fences_owned": "ServiceFences whose learned state this worker holds (it writes them).",
    "lazystream_api_writes_total": "Writes of fence status and Sidecars to the API server, by kind and "
    "outcome (applied, unchanged, retry, conflict, gone, skipped).",
    "lazystream_api_errors_total": "Failed writes to the API server, by HTTP status or exception.",
    "lazystream_api_writes_in_flight": "Fence writes in progress.",
    "lazystream_sidecar_hosts_left_out": "Hosts of the owned fences that their Sidecars leave out because "
    "Istio's validation would refuse them, by reason (short_name, invalid); "
    "`lazystream explain` names each.",
    "lazystream_sweep_fences_pending": "Fences of a full sweep (at start, after a rebalance, periodic or "
    "POST /sweep) not yet checked and written; 0 when no sweep is under way.",
    "lazystream_api_watch_errors_total": "Failed list/watch requests to the API server and objects the "
    "watch cache could not read, by kind (the cache re-lists after a backoff).",
    "lazystream_kafka_errors_total": "Kafka client errors, by client (ingest: the access stage's consumer "
    "and producer; faust: the table agent's consumer, producer and changelog) and kind (connection, fetch, "
    "group, produce: reported by the client, which retries; commit, send, offsets: seen by lazystream).",
    "lazystream_consumer_lag": "Records on the topic not yet consumed by this worker's partitions.",
    "lazystream_produce_to_sidecar_seconds": "From the Kafka timestamp of the access record that taught "
    "a fence a host to the write of the first Sidecar listing it.",
    "process_resident_memory_bytes": "Resident memory of the worker process.",
    "process_cpu_seconds_total": "CPU time of the worker process.",
}
"""The metric names the worker exposes, with their help (counters with ``_total``; the histogram's series
add ``_bucket``, ``_sum`` and ``_count``; the process collector adds ``process_*`` series not listed)."""
HISTOGRAMS = frozenset({"lazystream_produce_to_sidecar_seconds"})


def exposed_names() -> set[str]:
    """Every series name of :data:`METRICS` as Prometheus stores it (histograms by their three series)."""
    names = set(METRICS) - HISTOGRAMS
    for name in HISTOGRAMS:
        names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def _help(name: str) -> str:
    return METRICS[name]


def _counter(name: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    """A counter family; prometheus_client appends ``_total`` to the name it is given."""
    return CounterMetricFamily(name.removesuffix("_total"), _help(name), labels=list(labels))


# -- produce-to-Sidecar latency ---------------------------------------------------------------------------


def sidecar_hosts(sidecar: Mapping[str, Any]) -> set[str]:
    """The hosts of a Sidecar's egress without their ``namespace/`` prefix (``*/a.b.svc`` → ``a.b.svc``)."""
    hosts: set[str] = set()
    for egress in (sidecar.get("spec") or {}).get("egress") or []:
        for entry in egress.get("hosts") or []:
            if isinstance(entry, str):
                hosts.add(entry.split("/", 1)[-1])
    return hosts


class LatencyTracker:
    """Learned hosts waiting for a Sidecar that lists them; observes the wait in a histogram.

    ``learned`` is the table agent's hook, ``applied`` the sink's. Both run on the event loop.
    """

    def __init__(self, histogram: Histogram, clock: Callable[[], float] = time.time) -> None:
        self.histogram = histogram
        self.clock = clock
        self.pending: OrderedDict[tuple[ObjectKey, str], float] = OrderedDict()
        self._by_fence: dict[ObjectKey, set[str]] = {}

    def learned(self, fence: ObjectKey, hosts: list[str], produced: float | None) -> None:
        if produced is None:  # seeds, restores, observations from older workers: nothing to measure
            return
        for host in hosts:
            if (fence, host) in self.pending:
                continue
            self.pending[(fence, host)] = produced
            self._by_fence.setdefault(fence, set()).add(host)
        while len(self.pending) > PENDING_HOSTS:
            (old_fence, old_host), _ = self.pending.popitem(last=False)
            self._discard(old_fence, old_host)

    def applied(self, fence: ObjectKey, kind: str, content: Mapping[str, Any]) -> None:
        if kind != "sidecar":
            return
        waiting = self._by_fence.get(fence)
        if not waiting:
            return
        listed = sidecar_hosts(content) & waiting
        now = self.clock()
        for host in listed:
            produced = self.pending.pop((fence, host))
            self.histogram.observe(max(0.0, now - produced))
            self._discard(fence, host)

    def _discard(self, fence: ObjectKey, host: str) -> None:
        hosts = self._by_fence.get(fence)
        if hosts is not None:
            hosts.discard(host)
            if not hosts:
                del self._by_fence[fence]


# -- the collector over the worker's counters -------------------------------------------------------------


def _split_outcomes(outcomes: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """The ingest's outcome keys (``learned``, ``ignored_<r>``, ``rejected_<r>``, ``held_<r>``,
    ``dead_letter:<r>``) by family and reason."""
    out: dict[str, dict[str, int]] = {
        "learned": {},
        "ignored": {},
        "rejected": {},
        "held": {},
        "dead_letter": {},
    }
    for key, count in outcomes.items():
        if key == "learned":
            out["learned"][""] = count
        elif key.startswith("dead_letter:"):
            out["dead_letter"][key.removeprefix("dead_letter:")] = count
        else:
            family, _, reason = key.partition("_")
            out.setdefault(family, {})[reason] = count
    return out


@dataclass
class WorkerMetrics:
    """The registry a worker serves, and what the ``/metrics`` handler refreshes first."""

    registry: CollectorRegistry
    latency: LatencyTracker
    refresh_lag: Callable[[], Any] | None = None
    """A coroutine function that refreshes the consumer lag (called by the handler, with a timeout)."""

    async def refresh(self) -> None:
        if self.refresh_lag is None:
            return
        try:
            await asyncio.wait_for(self.refresh_lag(), LAG_TIMEOUT)
        except TimeoutError:
            log.debug("metrics: consumer lag not refreshed within %.1f s", LAG_TIMEOUT)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class WorkerParts(Protocol):
    """The parts of a worker its metrics read at scrape time (:class:`lazystream.worker.Worker` has them)."""

    @property
    def config(self) -> Config: ...
    @property
    def stream(self) -> WorkerApp: ...
    @property
    def sink(self) -> FenceSink: ...
    @property
    def controller(self) -> FenceController: ...
    @property
    def cache(self) -> ClusterCache: ...
    @property
    def computer(self) -> FenceComputer: ...
    def in_scope(self, key: ObjectKey, /) -> bool: ...


class WorkerCollector(Collector):
    """Reads a worker's counters at scrape time."""

    def __init__(self, worker: WorkerParts) -> None:
        self.worker = worker
        self.lag: int | None = None

    async def refresh_lag(self) -> None:
        self.lag = await self.worker.stream.access.lag()

    def collect(self) -> Iterator[Metric]:
        yield from self._ingest()
        yield from self._table()
        yield from self._fences()
        yield from self._sink()
        yield from self._clients()

    def _ingest(self) -> Iterator[Metric]:
        ingest = self.worker.stream.ingest
        progress = self.worker.stream.access.progress
        for name, value in (
            ("lazystream_access_records_total", progress.records),
            ("lazystream_access_batches_total", progress.batches),
            ("lazystream_ingest_commits_failed_total", progress.commits_failed),
            ("lazystream_edges_sent_total", progress.edges_sent),
        ):
            family = _counter(name)
            family.add_metric([], value)
            yield family
        outcomes = _split_outcomes(ingest.outcomes)
        learned = _counter("lazystream_records_learned_total")
        learned.add_metric([], outcomes["learned"].get("", 0))
        yield learned
        for family_name, key in (
            ("lazystream_records_ignored_total", "ignored"),
            ("lazystream_records_rejected_total", "rejected"),
            ("lazystream_records_held_total", "held"),
            ("lazystream_records_dead_lettered_total", "dead_letter"),
        ):
            family = _counter(family_name, ["reason"])
            for reason, count in sorted(outcomes[key].items()):
                family.add_metric([reason], count)
            yield family
        fallback = _counter("lazystream_fallback_records_total", ["namespace", "fence"])
        for fence, count in sorted(ingest.by_source.items()):
            fallback.add_metric([fence.namespace, fence.name], count)
        yield fallback
        lag = GaugeMetricFamily("lazystream_consumer_lag", _help("lazystream_consumer_lag"), labels=["topic"])
        if self.lag is not None:
            lag.add_metric([self.worker.config.topics.access], self.lag)
        yield lag

    def _table(self) -> Iterator[Metric]:
        counters = self.worker.stream.counters
        messages = _counter("lazystream_edge_messages_total", ["result"])
        for result, key in (
            ("written", "table:written"),
            ("unchanged", "table:unchanged"),
            ("resent", "table:resent"),
            ("malformed", "edges:malformed"),
            ("hosts_limit", "hosts:limit"),
        ):
            messages.add_metric([result], counters.get(key, 0))
        yield messages
        read_again = _counter("lazystream_edges_read_again_total", [])
        read_again.add_metric([], self.worker.stream.edges_read_again)
        yield read_again
        learned = _counter("lazystream_hosts_learned_total", ["via"])
        learned.add_metric(["observation"], counters.get("hosts:learned", 0))
        learned.add_metric(["seed"], counters.get("hosts:seeded", 0))
        yield learned
        limited = _counter("lazystream_fence_hosts_limit_total", ["namespace", "fence"])
        for fence, count in sorted(self.worker.stream.limited.items()):
            namespace, _, name = fence.partition("/")
            limited.add_metric([namespace, name], count)
        yield limited

    def _fences(self) -> Iterator[Metric]:
        worker = self.worker
        with worker.cache.reading():
            keys = [k for k in worker.cache.fences if worker.in_scope(k)]
        try:
            owned = sum(1 for k in keys if worker.stream.owns(k))
        except Exception:  # no assignment yet (the app is starting)
            owned = 0
        for name, value in (("lazystream_fences", len(keys)), ("lazystream_fences_owned", owned)):
            gauge = GaugeMetricFamily(name, _help(name))
            gauge.add_metric([], value)
            yield gauge

    def _sink(self) -> Iterator[Metric]:
        controller = self.worker.controller
        writes = _counter("lazystream_api_writes_total", ["kind", "outcome"])
        errors = _counter("lazystream_api_errors_total", ["error"])
        for key, count in sorted(controller.writes_total.items()):
            kind, _, outcome = key.partition(":")
            if kind == "error":
                errors.add_metric([outcome], count)
            else:
                writes.add_metric([kind, outcome], count)
        yield writes
        yield errors
        in_flight = GaugeMetricFamily(
            "lazystream_api_writes_in_flight", _help("lazystream_api_writes_in_flight")
        )
        in_flight.add_metric([], controller.queue.in_flight)
        yield in_flight
        sweep = GaugeMetricFamily("lazystream_sweep_fences_pending", _help("lazystream_sweep_fences_pending"))
        sweep.add_metric([], controller.sweep_pending)
        yield sweep
        left_out = GaugeMetricFamily(
            "lazystream_sidecar_hosts_left_out", _help("lazystream_sidecar_hosts_left_out"), labels=["reason"]
        )
        reasons: Counter[str] = Counter(
            "short_name" if reason.startswith("a short name") else "invalid"
            for hosts in list(self.worker.computer.left_out.values())
            for reason in hosts.values()
        )
        for reason, count in sorted(reasons.items()):
            left_out.add_metric([reason], count)
        yield left_out

    def _clients(self) -> Iterator[Metric]:
        """Errors of the worker's clients: the API server's watches, and Kafka."""
        watch = _counter("lazystream_api_watch_errors_total", ["kind"])
        with self.worker.cache.reading():
            watch_errors = sorted(self.worker.cache.errors_total.items())
        for kind, count in watch_errors:
            watch.add_metric([kind], count)
        yield watch
        kafka = _counter("lazystream_kafka_errors_total", ["client", "error"])
        for (client, error), count in sorted(self.worker.stream.kafka_errors.snapshot().items()):
            kafka.add_metric([client, error], count)
        yield kafka


def latency_tracker() -> LatencyTracker:
    """A produce-to-Sidecar latency tracker whose histogram is not registered yet: the worker makes it before
    its table agent and sink (which take its ``learned`` and ``applied`` hooks), and :func:`worker_metrics`
    registers it."""
    histogram = Histogram(
        "lazystream_produce_to_sidecar_seconds",
        _help("lazystream_produce_to_sidecar_seconds"),
        buckets=LATENCY_BUCKETS,
        registry=None,
    )
    return LatencyTracker(histogram)


def worker_metrics(worker: WorkerParts, latency: LatencyTracker) -> WorkerMetrics:
    """The worker's metrics: a registry with the counters' collector, the process collector (memory, CPU,
    open files) and the latency tracker's histogram."""
    # no ``*_created`` series: nobody graphs them, and they double the output
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=False)
    collector = WorkerCollector(worker)
    registry.register(collector)
    ProcessCollector(registry=registry)
    registry.register(latency.histogram)
    return WorkerMetrics(registry=registry, latency=latency, refresh_lag=collector.refresh_lag)


def add_metrics_route(app: web.Application, metrics: WorkerMetrics, path: str = "/metrics") -> None:
    """Serve ``metrics`` as ``GET path`` on an aiohttp app (the admin API's)."""

    async def handler(request: web.Request) -> web.Response:
        await metrics.refresh()
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get(path, handler)
