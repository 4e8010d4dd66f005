"""The faust application that every lazystream worker runs.

Codecs are raw bytes everywhere: the code decodes with orjson itself, so a malformed record reaches code
that can dead-letter it instead of failing inside faust's deserializer. The access topic is read by the
batch ingest stage (:mod:`lazystream.stream.ingest`), not by a faust agent, for throughput. Tables use
RocksDB through rocksdict with a bounded block cache, in the worker's own data directory.
"""

from __future__ import annotations

import contextvars
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from faust.types import TP

from lazystream.config import Config
from lazystream.config.options import resolve_options
from lazystream.domain import learned
from lazystream.domain.cluster import ClusterView, ObjectKey
from lazystream.kafka.security import client_security
from lazystream.stream import clienterrors, rewind
from lazystream.stream.ingest import METADATA_MAX_AGE_MS, AccessIngest
from lazystream.stream.partitioning import edge_partitioner
from lazystream.stream.pipeline import HOSTS_LIMIT, Ingest

log = logging.getLogger(__name__)

PRODUCER_LINGER_S = 0.005
PRODUCER_BATCH_BYTES = 256 * 1024
"""faust's producer batches (changelog records, edges sent by the worker): a learned state of 50 hosts is
about 3 KB, so the default 16 KB batch held five."""
STREAM_BUFFER_EVENTS = 1024
"""Edge messages buffered ahead of the table agent (faust's default: 4096). The agent passes a few hundred
a second, so 1,024 is seconds of work; each buffered event, with its message and the records aiokafka
parsed it from, holds about a kilobyte while the agent is behind, i.e. while a worker learns."""
FETCH_BYTES_PER_PARTITION = 256 * 1024
"""Most bytes the worker's faust consumer fetches per partition and request (faust's default: 1 MiB). It
reads edge messages of about 200 bytes and changelog records of a few KB, so 256 KiB is still hundreds of
records per fetch; each partition's fetched data waits in memory until the agent takes it."""


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
        # TLS and SASL (kafka.security): faust hands them to its consumer and producer alike
        broker_credentials=client_security(config.kafka).faust_credentials(),
        store="rocksdb://",
        datadir=str(config.tables.data_dir),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=config.topics.partitions,
        topic_replication_factor=config.topics.replication,
        topic_allow_declare=True,
        web_enabled=False,  # the admin API (lazystream.admin) serves web.port
        # Learned state is written only by the table agent; never rely on exactly-once.
        processing_guarantee="at_least_once",
        # Every table write sends a changelog record. Without a linger each went out in a produce request
        # of its own, which cost a fifth of a busy worker's CPU; 5 ms (the ingest's linger) batches them.
        producer_linger=PRODUCER_LINGER_S,
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        stream_buffer_maxsize=STREAM_BUFFER_EVENTS,
        consumer_max_fetch_size=FETCH_BYTES_PER_PARTITION,
        consumer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
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
    """Per-table RocksDB options, bounded: faust's defaults reserve a 2 GiB block cache and up to three
    64 MiB memtables per partition."""
    tables = config.tables
    return {
        "block_cache_size": tables.block_cache_bytes,
        "block_cache_compressed_size": tables.block_cache_bytes,
        "write_buffer_size": tables.write_buffer_bytes,
        "max_write_buffer_number": 2,
        "target_file_size_base": 4 * tables.write_buffer_bytes,
    }


@dataclass
class WorkerApp:
    """The faust app of a worker and the handles the rest of the worker needs."""

    app: faust.App
    topics: Topics
    table: Any
    access: AccessIngest
    partition_of: Callable[[bytes], int]
    counters: Counter[str] = field(default_factory=Counter)
    """Table-agent outcomes: ``table:written``, ``table:unchanged`` (of which ``table:resent``: the fence's
    unchanged value sent to the changelog again, once per fence after start), ``edges:malformed``,
    ``hosts:limit`` (edge messages refused at ``fence.maxHostsPerFence``), ``hosts:learned`` (hosts a fence
    learned from an observation) and ``hosts:seeded`` (hosts new to the table from a seed or a restore)."""
    limited: Counter[str] = field(default_factory=Counter)
    """Edge messages refused at ``fence.maxHostsPerFence``, per fence (``namespace/name``)."""
    on_hosts_learned: Callable[[ObjectKey, list[str], float | None], None] | None = None
    """Called by the table agent with the hosts a fence has just learned and the Kafka timestamp of the
    access record that taught them, if known (the worker passes the produce-to-Sidecar latency tracker's)."""

    def note_host_limit(self, fence: ObjectKey, hosts: Iterable[str]) -> None:
        """Count a refusal at ``fence.maxHostsPerFence`` and keep each refused host as a rejection with
        reason :data:`~lazystream.stream.pipeline.HOSTS_LIMIT`, so "explain" lists it."""
        name = str(fence)
        self.limited[name] += 1
        for host in hosts:
            self.ingest.remember_rejection(name, host, HOSTS_LIMIT)

    @property
    def ingest(self) -> Ingest:
        return self.access.ingest

    @property
    def edges_read_again(self) -> int:
        """Times an edges partition was read again from a record faust never delivered to the table agent
        (:class:`~lazystream.stream.rewind.RewindingConsumer`)."""
        consumer = self.app.consumer
        return consumer.holes_healed if isinstance(consumer, rewind.RewindingConsumer) else 0

    @property
    def kafka_errors(self) -> clienterrors.KafkaErrors:
        """Errors of the worker's Kafka clients, the ingest's and faust's (:mod:`.clienterrors`)."""
        return self.access.kafka_errors

    def owns(self, key: ObjectKey) -> bool:
        """Whether this worker holds the fence's learned state (its edges partition is assigned here)."""
        tp = TP(self.topics.edges.get_topic_name(), self.partition_of(learned.fence_key(key)))
        return tp in self.app.assignor.assigned_actives()

    def learned_hosts(self, key: ObjectKey) -> set[str]:
        return set(self.learned_state(key))

    def learned_state(self, key: ObjectKey) -> learned.LearnedState:
        """The fence's learned state, read from whichever local partition holds it.

        faust's RocksDB store reads only the *current event's* partition when an event is being processed,
        and the current event is a context variable: it flows into every task and timer created while the
        table agent handles a message (the sink's writes among them). A read for another fence from such a
        context found nothing, and its status flapped between learned and EXPIREWAIT. Reading in an empty
        context makes the store look the key up across its partitions."""
        return learned.decode_state(contextvars.Context().run(self.table.get, learned.fence_key(key)))

    def is_empty(self) -> bool:
        return next(iter(self.table), None) is None

    def stored_keys(self) -> list[ObjectKey]:
        """The fences with state in this worker's local partitions (read in an empty context, as
        :meth:`learned_state` explains)."""
        raw = contextvars.Context().run(lambda: list(self.table.keys()))
        keys = (learned.parse_fence_key(k) for k in raw if isinstance(k, bytes))
        return [k for k in keys if k is not None]

    async def send_edge(self, key: ObjectKey, message: Mapping[str, Any]) -> None:
        """Produce a seed, reset or expiry for ``key`` onto the edges topic (the table's only input)."""
        data = learned.fence_key(key)
        await self.topics.edges.send(key=data, value=orjson.dumps(message), partition=self.partition_of(data))


def create_worker_app(
    config: Config,
    cluster: ClusterView,
    on_fence_changed: Callable[[ObjectKey], None],
    on_hosts_learned: Callable[[ObjectKey, list[str], float | None], None] | None = None,
) -> WorkerApp:
    """The app ``lazystream worker`` runs: the table agent (edges → the RocksDB learned-state table keyed
    by fence, its only writer) and the batch ingest stage (access → edges, dead letters), which the worker
    starts once its cluster cache is synced (:class:`~lazystream.stream.ingest.AccessIngest`)."""
    app = create_app(config)
    rewind.install(app)  # edges that faust dropped in a rebalance are read again (see the module)
    topics = declare_topics(app, config)
    table = app.Table(
        config.tables.table_name,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=config.topics.partitions,
        options=rocksdb_options(config),
        help="Learned dependencies per fence: host -> [first seen, last seen, count].",
    )
    ingest = Ingest(
        resolve_options=resolve_options(config),
        bucket_seconds=config.tables.bucket_seconds,
        max_record_bytes=config.fence.max_record_bytes,
    )
    partition_of = edge_partitioner(config.topics.partition_key, config.topics.partitions)
    access = AccessIngest(config, ingest, cluster, partition_of)
    worker = WorkerApp(app, topics, table, access, partition_of, on_hosts_learned=on_hosts_learned)
    app.sensors.add(clienterrors.SendErrorSensor(access.kafka_errors))
    bucket_seconds, max_hosts = config.tables.bucket_seconds, config.fence.max_hosts_per_fence

    # Fences this process has written to the table, hence to its changelog. faust puts a write into the local
    # RocksDB at once but sends its changelog record later (the offsets of the edges are committed only after
    # that send). A worker killed in between restarts with the newer local value; the edge, redelivered, then
    # changes nothing, and the changelog would keep the older value for good: another worker (a rebalance) or
    # this one on a fresh disk would recover it and lose the dependency. So the first edge of a fence that
    # changes nothing after start sends the fence's current value to the changelog again (no API write).
    sent_since_start: set[bytes] = set()

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
            stored = table.get(event.key)
            change = learned.change(stored, message, bucket_seconds)
            if change is None:
                worker.counters["table:unchanged"] += 1
                if stored is not None and event.key not in sent_since_start:
                    table[event.key] = stored  # re-sent to the changelog: see sent_since_start
                    sent_since_start.add(event.key)
                    worker.counters["table:resent"] += 1
                continue
            if change.size > max_hosts and change.grew:
                worker.counters["hosts:limit"] += 1
                worker.note_host_limit(fence, change.added)
                continue
            table[event.key] = change.encoded
            sent_since_start.add(event.key)
            worker.counters["table:written"] += 1
            if change.added:
                observed = message.get("op") == learned.Op.OBSERVE
                worker.counters["hosts:learned" if observed else "hosts:seeded"] += len(change.added)
                if worker.on_hosts_learned is not None:
                    worker.on_hosts_learned(fence, change.added, learned.produced_time(message))
            on_fence_changed(fence)

    return worker
