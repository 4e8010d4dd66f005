"""``lazystream worker``: wires the faust app, the Kubernetes watch cache and the reconcile loop.

This is the one module that knows all the layers. Startup: the app starts its agents and recovers the
learned-state table; the watch cache lists the cluster; the controller (``lazystream.controller``, writing
through ``kube.sink``) starts; if learned state is empty, fences are seeded from their
``status.metricStatus`` through the edges topic. From then on a table write, a cluster change, a deadline
or the periodic refresh schedules a fence, and the controller writes what the domain core computes for it
(:class:`~lazystream.controller.compute.FenceInputs`). SIGTERM stops the controller (after a last drain)
and the watches, then faust.

Cluster-wide work (autoFence, the fallback objects, Prometheus polling) runs only while this worker holds the
leader Lease; losing the Lease cancels it at once. The admin API (health, readiness,
resets, explain) is served on ``web.port`` from the start, so probes answer during recovery.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import faust
from aiokafka.errors import KafkaError

from lazystream.admin import AdminHooks, AdminServer, cache_explainer, cache_fences_in, create_admin_app
from lazystream.config import Config
from lazystream.config.options import (
    autofence_options,
    fallback_options,
    fence_options,
    in_scope,
    port_rules,
    resolve_options,
)
from lazystream.controller.compute import FenceComputer, FenceInputs
from lazystream.controller.reconciler import FenceController
from lazystream.controller.upkeep import LearnedUpkeep
from lazystream.domain import learned
from lazystream.domain.cluster import ObjectKey
from lazystream.kafka.clients import OpsError
from lazystream.kafka.security import check_access
from lazystream.kube import crds as crd_io
from lazystream.kube.access import AccessReviewer
from lazystream.kube.autofencer import AutoFencer
from lazystream.kube.client import api_client
from lazystream.kube.fallback import FallbackKeeper
from lazystream.kube.informers import ALL_KINDS, ClusterCache
from lazystream.kube.leader import LeaderElector, LeaseSettings, default_identity
from lazystream.kube.sink import FenceSink
from lazystream.metrics import add_metrics_route, latency_tracker, worker_metrics
from lazystream.ops.topics import create_topics
from lazystream.runtime import heap, logs, memory
from lazystream.stream import clienterrors
from lazystream.stream.app import WorkerApp, create_worker_app
from lazystream.stream.poller import PrometheusPoller

log = logging.getLogger(__name__)
CACHE_SYNC_TIMEOUT = 120.0
TRIM_SECONDS = 60.0
"""Seconds between the worker's returns of free allocator memory to the kernel (``malloc_trim``)."""
SPARE_CONNECTIONS = 4
"""API-server connections a worker keeps besides one per watched kind and the sink's (see ``Worker``)."""
IDLE_REPORT_SECONDS = 60.0
"""How often an idle worker repeats its unchanged counters line."""
FULL_SWEEP_TICKS = 30
"""Every this many refresh ticks, every owned fence is recomputed (the sink skips what is unchanged)."""


@dataclass
class SweepSchedule:
    """When a refresh tick sweeps every owned fence: at the first tick after a rebalance (this worker may
    own other fences now), and :data:`FULL_SWEEP_TICKS` ticks after the last sweep, whatever started it.

    Why from the last sweep: counted from the worker's start, a periodic sweep could follow a rebalance's
    sweep within a few ticks, two sweeps of thousands of fences close together for one safety net."""

    every_ticks: int = FULL_SWEEP_TICKS
    ticks: int = 0
    """Refresh ticks so far (counted only while the worker is ready)."""
    swept_at: int = 0
    """The tick of the last full sweep (0: none yet)."""
    rebalances: int = 0
    """faust's rebalance count at the last full sweep."""

    def tick(self) -> None:
        self.ticks += 1

    def due(self, rebalances: int) -> bool:
        """Whether this tick sweeps, given faust's rebalance count now."""
        return rebalances != self.rebalances or self.ticks - self.swept_at >= self.every_ticks

    def swept(self, rebalances: int) -> None:
        """A full sweep was made at this tick, after ``rebalances`` rebalances."""
        self.swept_at = self.ticks
        self.rebalances = rebalances


@dataclass
class CountersLine:
    """When the worker logs its counters line: when it changed (checked every 5 s), and once every
    :data:`IDLE_REPORT_SECONDS` while idle, so an idle worker's log does not fill with copies of one line."""

    last: str = ""
    at: float = float("-inf")

    def due(self, text: str, now: float) -> bool:
        if text == self.last and now - self.at < IDLE_REPORT_SECONDS:
            return False
        self.last, self.at = text, now
        return True


class Worker:
    """One lazystream worker process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # the watches hold a connection each, the sink's writes up to ``concurrency``; a few more for the
        # Lease, the autoFencer, the fallback objects and the admin API's requests
        self.api = api_client(
            config.kube.kubeconfig, connections=len(ALL_KINDS) + config.sink.concurrency + SPARE_CONNECTIONS
        )
        self.computer = FenceComputer(fence_options(config))
        self.latency = latency_tracker()
        """Produce-to-Sidecar latency: the table agent reports learned hosts, the sink applied Sidecars."""
        self.cache = ClusterCache(
            self.api,
            cluster_domain=config.fence.cluster_domain,
            on_change=self._on_cluster_change,
            on_kind_change=self._on_kind_change,
        )
        self.sink = FenceSink(
            self.api,
            concurrency=config.sink.concurrency,
            field_manager=config.sink.field_manager,
            on_applied=self.latency.applied,
        )
        self.stream: WorkerApp = create_worker_app(
            config, self.cache, self._on_fence_learned, on_hosts_learned=self.latency.learned
        )
        self.revision_scope = autofence_options(self.config)
        """``global.istioRev`` / ``strictRev``: fences of other revisions are skipped."""
        self.compute = FenceInputs(
            self.computer,
            self.stream,
            self.cache,
            readable=self.state_readable,
            in_scope=self.in_scope,
            revision_scope=self.revision_scope,
        )
        """What the controller writes for a fence now."""
        self.upkeep = LearnedUpkeep(
            self.stream,
            self.cache,
            resolve_options(config),
            seed_from_status=config.fence.seed_from_status,
            idle_ttl_seconds=config.fence.idle_ttl_seconds,
            in_scope=self.in_scope,
            clock=self.computer.clock,
        )
        """Seeds, idle expiries and orphan resets through the edges topic."""
        self.controller = FenceController(
            self.compute,
            self.sink,
            deadline_in=self.compute.deadline_in,
            coalesce_seconds=config.sink.coalesce_seconds,
            concurrency=config.sink.concurrency,
        )
        self.ready = asyncio.Event()
        self.sweeps = SweepSchedule()
        self.autofencer = self._autofencer()
        self.fallback = self._fallback()
        self.poller = self._poller()
        self.elector = self._elector()
        self.admin = AdminServer(create_admin_app(self._admin_hooks()), config.web.host, config.web.port)
        self._install_lifecycle(self.stream.app)
        self.metrics = worker_metrics(self, self.latency)
        self._kafka_log = clienterrors.count_client_logs(self.stream.kafka_errors)
        add_metrics_route(self.admin.app, self.metrics)

    def _autofencer(self) -> AutoFencer | None:
        options = autofence_options(self.config)
        if not options.enabled:
            return None  # as in Slime: without autoFence, fences are the users' alone
        return AutoFencer(
            self.api,
            self.cache,
            options,
            field_manager=self.config.sink.field_manager,
            in_scope=self.in_scope,
        )

    def _fallback(self) -> FallbackKeeper | None:
        settings = self.config.fallback
        if not settings.manage:
            return None
        return FallbackKeeper(
            self.api,
            self.cache,
            fallback_options(self.config),
            port_rules(self.config),
            selector=settings.selector,
            field_manager=self.config.sink.field_manager,
            resync_seconds=settings.resync_seconds,
        )

    def _poller(self) -> PrometheusPoller | None:
        if self.config.general.metric_source_type != "prometheus":
            return None
        settings = self.config.metric.prometheus
        return PrometheusPoller(
            self.cache,
            self.stream.send_edge,
            address=settings.address,
            queries={name: handler.query for name, handler in settings.handlers.items()},
            period_seconds=self.config.fence.refresh_period_seconds,
            excluded_hosts=resolve_options(self.config).global_sidecar_hosts,
            in_scope=self.in_scope,
        )

    def _elector(self) -> LeaderElector | None:
        election = self.config.leader_election
        if not election.enabled:
            return None
        return LeaderElector(
            self.api,
            LeaseSettings.from_config(self.config),
            identity=election.identity or default_identity(),
            lead=self.lead,
            on_change=lambda leading: log.info("leader: %s", "leading" if leading else "not leading"),
        )

    def _admin_hooks(self) -> AdminHooks:
        def learned_state(key: ObjectKey) -> learned.LearnedState | None:
            if not self.stream.owns(key):
                return None
            return self.stream.learned_state(key)

        return AdminHooks(
            send_edge=self.stream.send_edge,
            fences_in=cache_fences_in(self.cache),
            explain=cache_explainer(
                self.cache,
                learned_state=learned_state,
                recent_rejections=lambda: self.stream.ingest.recent_rejections,
                options=fence_options(self.config),
            ),
            ready={"cachesSynced": lambda: self.cache.synced, "workerReady": self.ready.is_set},
            sweep=self.sweep_now,
            sweep_pending=lambda: self.controller.sweep_pending,
            memory=self.memory_report,
            authorize=AccessReviewer(self.api).review if self.config.web.write_auth == "kubernetes" else None,
        )

    def sweep_now(self) -> int | None:
        """The full sweep of every owned fence, now: the refresh tick's when one is due, and ``POST /sweep``
        (operators after changing many objects by hand, the scale benchmark to hold a sweep inside its
        latency window). It also drops learned state held for callers that are gone
        (:meth:`LearnedUpkeep.drop_orphans`). It counts as the last sweep, so the periodic one comes a full
        period later; how many fences it scheduled, or None while the learned state cannot be read."""
        if not self.ready.is_set() or not self.state_readable():
            return None
        self.sweeps.swept(self.app.rebalancing_count)
        self.app.add_future(self._drop_orphans_logged())
        return self.schedule_owned()

    async def _drop_orphans_logged(self) -> None:
        dropped = await self.upkeep.drop_orphans()
        if dropped:
            log.info("learned state dropped for %d callers that are gone", dropped)

    def memory_report(self, deep: bool, trim: bool) -> dict[str, Any]:
        """Where this worker's memory goes (``GET /debug/memory``): process and allocator figures, RocksDB's
        own sizes, and with ``deep`` the size of each structure (under the cache's lock)."""

        def structures() -> dict[str, int]:
            objects = {
                "cache.state": self.cache.state,
                "cache": self.cache,
                "controller": self.controller,
                "computer": self.computer,
                "ingest": self.stream.ingest,
            }
            with self.cache.reading():
                return memory.attribute_sizes(objects)

        report = memory.report(do_trim=trim, native=self._rocksdb_sizes())
        if deep:
            report["structures"] = structures()
        return report

    def _rocksdb_sizes(self) -> list[tuple[str, int]]:
        """RocksDB's own figures summed over the learned-state table's open partitions."""
        dbs = getattr(self.stream.table.data, "_dbs", {}) or {}
        out = [("rocksdb.open_partitions", len(dbs))]
        for prop in ("block-cache-usage", "cur-size-all-mem-tables", "estimate-table-readers-mem"):
            total = 0
            for db in dbs.values():
                try:
                    total += int(db.property_int_value(f"rocksdb.{prop}") or 0)
                except Exception:  # a debug figure: a driver without it reports nothing
                    log.debug("RocksDB property %s not available", prop)
            out.append((f"rocksdb.{prop}", total))
        return out

    # -- leader work -----------------------------------------------------------------------------------

    @property
    def duties(self) -> list[Callable[[], Awaitable[None]]]:
        """What the leader runs, concurrently, for as long as it leads."""
        duties: list[Callable[[], Awaitable[None]]] = []
        if self.autofencer is not None:
            duties.append(self.autofencer.run)
        if self.fallback is not None:
            duties.append(self.fallback.run)
        if self.poller is not None:
            duties.append(self.poller.run)
        return duties

    async def lead(self) -> None:
        await self.ready.wait()
        duties = self.duties
        log.info("leader: running %d duties", len(duties))
        if duties:
            await asyncio.gather(*(duty() for duty in duties))
        else:
            await asyncio.Event().wait()  # nothing to do but hold the Lease until it is lost or released

    @property
    def app(self) -> faust.App:
        return self.stream.app

    # -- scheduling ---------------------------------------------------------------------------------------

    def _on_fence_learned(self, key: ObjectKey) -> None:
        if self.ready.is_set():
            self.controller.schedule(key)

    def _on_kind_change(self, kind: str) -> None:
        """Called from a watch thread."""
        if self.autofencer is not None and kind in ("Service", "Namespace", "ServiceFence", "Pod"):
            self.autofencer.poke()
        if self.fallback is not None and self.config.general.auto_port and kind == "Service":
            self.fallback.poke()

    def _on_cluster_change(self, keys: set[ObjectKey], reason: str) -> None:
        """Called from a watch thread."""
        if self.ready.is_set():
            for key in keys:
                self.controller.schedule_threadsafe(key)

    def schedule_owned(self) -> int:
        """Sweep every fence in scope that this worker owns (the sink skips what is unchanged); returns how
        many."""
        with self.cache.reading():
            keys = list(self.cache.fences)
        owned = [k for k in keys if self.in_scope(k) and self.stream.owns(k)]
        self.controller.sweep(owned)  # behind the fences scheduled as they learn: see WorkQueue.sweep
        return len(owned)

    # -- computing ------------------------------------------------------------------------------------

    async def detect_fence_schema(self) -> None:
        """On a cluster that runs Slime's own ServiceFence CRD, domain statuses are written as its enum's
        numbers (the CRD refuses the names). Without the right to read the CRD, names are written."""
        try:
            numeric = await asyncio.to_thread(crd_io.numeric_domain_status, self.api)
        except Exception as exc:  # the worker still works with lazystream's CRD; say what was not read
            log.warning("could not read the ServiceFence CRD (%s): domain statuses are written as names", exc)
            return
        if numeric:
            log.info("the ServiceFence CRD types domain statuses as integers (Slime's): writing numbers")
            self.computer.fence_options = replace(self.computer.fence_options, numeric_domain_status=True)

    def in_scope(self, key: ObjectKey) -> bool:
        """Namespace scope (``whiteNamespaceList`` / ``blackNamespaceList``)."""
        return in_scope(self.config, key)

    def state_readable(self) -> bool:
        """Whether the learned-state table can be trusted now. faust revokes and closes the tables when
        the app starts stopping (before ``on_before_shutdown``) and while it rebalances; a fence computed
        then would look as if it had learned nothing, and its status would go to EXPIREWAIT."""
        app = self.app
        return not (app.should_stop or app.rebalancing or app.in_recovery)

    # -- lifecycle ------------------------------------------------------------------------------------

    def _install_lifecycle(self, app: faust.App) -> None:
        worker = self

        @app.task
        async def start_admin() -> None:
            await worker.admin.start()

        @app.task
        async def start_kubernetes() -> None:
            for topic in (worker.stream.topics.edges, worker.stream.topics.dead_letter):
                await topic.maybe_declare()  # produced to, not consumed here: faust would not create them
            worker.cache.start()
            synced = await asyncio.to_thread(worker.cache.wait_synced, CACHE_SYNC_TIMEOUT)
            if not synced:
                log.error(
                    "cluster cache not synced after %.0f s; continuing with what is listed",
                    CACHE_SYNC_TIMEOUT,
                )
            await worker.detect_fence_schema()
            heap.freeze()  # start-up objects and the listed cluster: full collections skip them from now
            # records are resolved against the cluster: reading them before it is listed would lose them
            app.add_future(worker.consume_access())
            await worker.controller.start()
            await app.tables.recovery.completed.wait()  # type: ignore[attr-defined]  # learned state recovered from changelog/RocksDB
            seeded = await worker.upkeep.seed()
            worker.ready.set()
            log.info(
                "lazystream ready: %d fences seeded, %d fences scheduled", seeded, worker.schedule_owned()
            )
            if worker.elector is not None:
                await worker.elector.start()
            else:
                app.add_future(worker.lead())

        @app.timer(interval=self.config.fence.refresh_period_seconds)
        async def refresh() -> None:
            """Slime's tick: fences with deadlines or EXPIREWAIT entries are re-evaluated."""
            if worker.ready.is_set():
                worker.sweeps.tick()
                await worker.upkeep.expire_idle()
                # a sweep also catches fences this worker was newly assigned
                if not (worker.sweeps.due(worker.app.rebalancing_count) and worker.sweep_now() is not None):
                    for key in list(worker.computer.timed):
                        worker.controller.schedule(key)

        line = CountersLine()

        @app.timer(interval=5.0)
        async def report() -> None:
            text = worker.summary()
            if line.due(text, time.monotonic()):
                log.info("lazystream: %s", text)

        @app.timer(interval=TRIM_SECONDS)
        async def trim_memory() -> None:
            """Hand the allocator's free pages back to the kernel (10-20 MB of a 1k-fence worker)."""
            memory.trim()

        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def stop_kubernetes(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
            if worker.elector is not None:
                await worker.elector.stop()  # releases the Lease: another worker takes over at once
            await worker.controller.stop()
            await asyncio.to_thread(worker.cache.stop)
            await worker.admin.stop()
            worker.api.close()
            clienterrors.stop_counting(worker._kafka_log)

    async def consume_access(self) -> None:
        """Run the ingest stage; if it fails, the worker stops (and its supervisor restarts it) rather than
        run on without reading its input."""
        try:
            await self.stream.access.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("the ingest stage failed")
            await self.app.crash(exc)

    def summary(self) -> str:
        parts = [f"{n} {k}" for k, n in sorted(self.stream.ingest.outcomes.items())]
        parts += [f"{n} {k}" for k, n in sorted(self.stream.counters.items())]
        parts += [f"{n} {k}" for k, n in sorted(self.controller.writes_total.items())]
        if self.autofencer is not None:
            parts += [f"{n} autofence:{k}" for k, n in sorted(self.autofencer.counters.items())]
        if self.poller is not None:
            parts += [f"{n} prometheus:{k}" for k, n in sorted(self.poller.counters.items())]
        if self.fallback is not None:
            parts += [f"{n} fallback:{k}" for k, n in sorted(self.fallback.counters.items())]
        return ", ".join(parts) or "idle"


TOPICS_PREPARE_TIMEOUT_S = 60.0
"""How long a starting worker spends creating its topics before it leaves them to faust."""


def prepare_kafka(config: Config) -> None:
    """Before anything starts, on a loop of its own (faust's worker sets up its own): check that the brokers
    accept the worker's TLS or SASL settings, then create the worker's topics and wait until the brokers list
    them (:func:`~lazystream.ops.topics.create_topics`).

    Why the topics: faust creates them as it starts, at the moment its consumer joins the group; a leader
    whose metadata did not list the edges topic yet assigned none of its partitions, and the edges waited for
    the next metadata refresh (minutes; seen on a new deployment). Brokers that cannot be reached, or that
    refuse to create topics, are logged and left to faust's clients, which keep trying.

    Raises :class:`~lazystream.kafka.security.KafkaAccessError` when a broker refuses the TLS handshake or
    the credentials, saying why and which settings to check, where faust would stop with a traceback of
    aiokafka's "Unable to bootstrap".
    """
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_prepare_kafka(config))
    finally:
        loop.close()


async def _prepare_kafka(config: Config) -> None:
    if config.kafka.security.protocol != "PLAINTEXT":
        problems = await check_access(config.kafka)
        if problems:
            log.warning("Kafka is not reachable yet (%s); the clients keep trying", "; ".join(problems))
            return
    try:
        rows = await asyncio.wait_for(create_topics(config), TOPICS_PREPARE_TIMEOUT_S)
    except (OpsError, KafkaError, TimeoutError) as exc:
        reason = str(exc) or "timed out"
        log.warning("topics not created before start (%s); faust declares them as it starts", reason)
        return
    for row in rows:
        if row.action == "created":
            log.info("topic %s created (%d partitions)", row.name, row.partitions)
        elif row.action != "exists":
            log.warning("topic %s: %s", row.name, row.action)


def run(config: Config, loglevel: str | None = None) -> None:
    """Run until SIGTERM/SIGINT, logging as ``global.log`` says (``loglevel`` overrides its level).

    SIGQUIT writes every thread's stack to stderr, even when the event loop is stuck: what an operator (or a
    test) needs from a worker that does not stop. (faust's SIGUSR1 logs the asyncio tasks, from the loop.)

    Raises :class:`~lazystream.kafka.security.KafkaAccessError` when the brokers refuse the worker's TLS or
    SASL settings (:func:`prepare_kafka`), and :class:`~lazystream.config.ConfigError` when a
    ``kafka.security`` file is unusable.
    """
    faulthandler.register(signal.SIGQUIT, all_threads=True)
    heap.tune()
    tuned = memory.tune_allocator(os.environ)  # before any thread starts
    prepare_kafka(config)
    worker = Worker(config)
    if tuned:
        log.info("allocator: %s", ", ".join(f"{k}={v}" for k, v in tuned.items()))
    options = logs.faust_worker_options(config.global_.log, loglevel)
    worker.app.conf.loghandlers = options.pop("loghandlers")  # faust.Worker takes them from the app
    try:
        _FaustWorker(worker.app, quiet=True, **options).execute_from_commandline()
    except SystemExit as exc:
        _exit(exc.code if isinstance(exc.code, int) else 1)
    _exit(0)


EXIT_GRACE_S = 3.0
"""How long a worker whose event loop has closed waits for its remaining threads before it exits anyway."""


def _exit(code: int) -> None:
    """Exit once faust has stopped, without waiting on threads that outlive it.

    Python joins every executor thread at exit; one still blocked in a request kept finished workers
    alive for minutes (seen under load, after "Closing event loop"). Such threads are named in the log
    and their stacks written to stderr, then the process ends with faust's exit code."""
    deadline = time.monotonic() + EXIT_GRACE_S
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    lingering = [t.name for t in threading.enumerate() if t.is_alive() and not t.daemon]
    lingering = [name for name in lingering if name != threading.current_thread().name]
    if lingering:
        log.warning("exiting with threads still running: %s", ", ".join(lingering))
        faulthandler.dump_traceback(file=sys.__stderr__ or 2, all_threads=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _FaustWorker(faust.Worker):
    """faust's worker, without its SIGUSR2 handler: that one starts pdb, which would leave a production
    worker waiting on a debugger prompt; here SIGUSR2 dumps the thread stacks as SIGQUIT does."""

    def _on_sigusr2(self) -> None:
        faulthandler.dump_traceback(file=sys.__stderr__ or 2, all_threads=True)
