"""The faust application that every lazystream worker runs.

Codecs are raw bytes everywhere: the agents decode with orjson themselves, so a malformed record reaches
code that can dead-letter it instead of failing inside faust's deserializer. Tables use RocksDB through
rocksdict with a bounded block cache, in the worker's own data directory.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import faust
import orjson
from aiokafka.partitioner import DefaultPartitioner
from faust.types import TP

from lazystream.config import Config
from lazystream.domain import learned
from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.options import resolve_options
from lazystream.stream.pipeline import DeadLetter, Ingest

log = logging.getLogger(__name__)


@dataclass
class Topics:
    """lazystream's topics, declared on one app."""

    access: faust.TopicT
    edges: faust.TopicT
    dead_letter: faust.TopicT


def create_app(config: Config) -> faust.App:
    """Build the faust app for ``config`` (no agents yet: :func:`create_worker_app` adds them)."""
    config.tables.data_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        config.kafka.app_id,
        broker=config.kafka.broker_url,
        store="rocksdb://",
        datadir=str(config.tables.data_dir),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=config.topics.partitions,
        topic_replication_factor=config.topics.replication,
        topic_allow_declare=True,
        web_port=config.web.port,
        web_host=config.web.host,
        # Learned state is written only by the table agent; never rely on exactly-once (decisions §1).
        processing_guarantee="at_least_once",
        autodiscover=False,
    )


def declare_topics(app: faust.App, config: Config) -> Topics:
    """Declare the access, edges and dead-letter topics with raw codecs."""

    def topic(name: str) -> faust.TopicT:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            partitions=config.topics.partitions,
            replicas=config.topics.replication,
            # the worker creates its topics at start (with these partitions and replicas) if missing
            internal=True,
        )

    return Topics(
        access=topic(config.topics.access),
        edges=topic(config.topics.edges),
        dead_letter=topic(config.topics.dead_letter),
    )


def rocksdb_options(config: Config) -> dict[str, int]:
    """Per-table RocksDB options: faust's defaults reserve a 2 GiB block cache per partition."""
    return {"block_cache_size": config.tables.block_cache_bytes}


class ClusterView(Protocol):
    """What the agents read of the cluster: a ClusterState and the ServiceFences, behind a lock (the
    Kubernetes watches update them from threads)."""

    state: ClusterState
    fences: dict[ObjectKey, dict[str, Any]]

    def reading(self) -> AbstractContextManager[Any]: ...


@dataclass
class WorkerApp:
    """The faust app of a worker and the handles the rest of the worker needs."""

    app: faust.App
    topics: Topics
    table: Any
    ingest: Ingest
    partitions: int
    counters: Counter[str] = field(default_factory=Counter)
    """Table-agent outcomes: ``table:written``, ``table:unchanged``, ``edges:malformed``, ``hosts:limit``."""

    def owns(self, key: ObjectKey) -> bool:
        """Whether this worker holds the fence's learned state (its edges partition is assigned here)."""
        partition = _PARTITIONER(learned.fence_key(key), list(range(self.partitions)), [])
        tp = TP(self.topics.edges.get_topic_name(), partition)
        return tp in self.app.assignor.assigned_actives()

    def learned_hosts(self, key: ObjectKey) -> set[str]:
        return set(learned.decode_state(self.table.get(learned.fence_key(key))))

    def is_empty(self) -> bool:
        return next(iter(self.table), None) is None

    async def send_edge(self, key: ObjectKey, message: Mapping[str, Any]) -> None:
        await self.topics.edges.send(key=learned.fence_key(key), value=orjson.dumps(message))


_PARTITIONER = DefaultPartitioner()
INGEST_BATCH = 1000
INGEST_BATCH_WITHIN = 0.05
"""Seconds the ingest agent waits to fill a batch: the latency it may add."""


def create_worker_app(
    config: Config,
    cluster: ClusterView,
    on_fence_changed: Callable[[ObjectKey], None],
    cluster_synced: Callable[[], Awaitable[Any]] | None = None,
) -> WorkerApp:
    """The app ``lazystream worker`` runs: the ingest agent (access → edges, dead letters) and the table
    agent (edges → the RocksDB learned-state table keyed by fence, its only writer). The ingest agent
    awaits ``cluster_synced`` first: records waiting on the topic at start (after an outage, or a replay)
    resolved against an empty cluster cache would be ignored as having no source."""
    app = create_app(config)
    topics = declare_topics(app, config)
    table = app.Table(
        config.tables.table_name,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=config.topics.partitions,
        options=rocksdb_options(config),
        help="Learned dependencies per fence: host -> [first seen, last seen, count] (decisions §1.1).",
    )
    ingest = Ingest(
        resolve_options=resolve_options(config),
        bucket_seconds=config.tables.bucket_seconds,
        max_record_bytes=config.fence.max_record_bytes,
    )
    worker = WorkerApp(app, topics, table, ingest, config.topics.partitions)
    bucket_seconds, max_hosts = config.tables.bucket_seconds, config.fence.max_hosts_per_fence

    @app.agent(topics.access, name="ingest")
    async def ingest_agent(stream: faust.StreamT[bytes]) -> None:
        if cluster_synced is not None:
            await cluster_synced()
        # Batches: one lock acquisition and one loop per batch; the batch is acked after the body (so
        # at-least-once). The ingest agent writes no table, so take_events is safe here.
        async for events in stream.take_events(INGEST_BATCH, within=INGEST_BATCH_WITHIN):  # type: ignore[attr-defined]
            now = time.time()
            with cluster.reading():
                results = [
                    (
                        event.key,
                        ingest.process(event.value or b"", cluster.state, event.message.timestamp or now),
                    )
                    for event in events
                ]
            for key, out in results:
                if isinstance(out, DeadLetter):
                    await topics.dead_letter.send(key=key, value=out.value, headers=out.headers)
                    continue
                for edge in out:
                    await topics.edges.send(key=edge.key, value=edge.value)

    @app.agent(topics.edges, name="learned-state")
    async def table_agent(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            fence = learned.parse_fence_key(event.key or b"")
            try:
                message = orjson.loads(event.value or b"")
            except orjson.JSONDecodeError:
                message = None
            if fence is None or not isinstance(message, dict):
                worker.counters["edges:malformed"] += 1
                continue
            state = learned.decode_state(table.get(event.key))
            new = learned.apply(state, message, bucket_seconds)
            if new is None:
                worker.counters["table:unchanged"] += 1
                continue
            if len(new) > max_hosts and len(new) > len(state):
                worker.counters["hosts:limit"] += 1
                continue
            table[event.key] = learned.encode_state(new)
            worker.counters["table:written"] += 1
            on_fence_changed(fence)

    return worker
