"""The faust application that every lazystream worker runs.

Codecs are raw bytes everywhere: the agents decode with orjson themselves, so a malformed record reaches
code that can dead-letter it instead of failing inside faust's deserializer. Tables use RocksDB through
rocksdict with a bounded block cache, in the worker's own data directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faust

from lazystream.config import Config

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


class AccessCounter:
    """What the worker does until ingestion lands: counts access records and logs the total.

    It reads only; it writes nothing to Kafka or to the API server.
    """

    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0

    def observe(self, value: bytes | None) -> None:
        self.records += 1
        self.bytes += len(value or b"")


def create_worker_app(config: Config) -> faust.App:
    """The app ``lazystream worker`` runs."""
    app = create_app(config)
    topics = declare_topics(app, config)
    counter = AccessCounter()

    @app.agent(topics.access, name="access-counter")
    async def count_access(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            counter.observe(value)

    @app.timer(interval=5.0)
    async def report() -> None:
        log.info("access records seen: %d (%d bytes)", counter.records, counter.bytes)

    return app
