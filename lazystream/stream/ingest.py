"""The ingest stage: access records in, edges and dead letters out, a batch at a time.

Access logs are the one high-volume input (every fallback call is a record), and nearly all of them repeat
an edge the table already holds: :class:`~lazystream.stream.pipeline.Ingest` dedupes them to a few edge
messages per fence and bucket. faust's consumer hands records to agents one at a time (a hop from its
consumer thread, two tasks and a queue put per message), which capped the access topic at about 4k
records/s on the reference machine while ``getmany`` + ``orjson.loads`` alone reached 90-150k/s. So this
stage reads the access topic with aiokafka directly, in batches, inside the worker's faust app; the edges
topic, the learned-state table and its changelog stay faust's.

Delivery is at-least-once: a batch's offsets are committed only after every edge and dead letter it
produced is acknowledged by the brokers. Records re-read after a crash or a rebalance produce edges the
table already holds, which change nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from lazystream.config import Config
from lazystream.domain.cluster import ClusterView
from lazystream.kafka.security import client_kwargs
from lazystream.stream import clienterrors
from lazystream.stream.pipeline import DeadLetter, Ingest

log = logging.getLogger(__name__)

METADATA_MAX_AGE_MS = 60_000
"""How often the worker's consumers refresh topic metadata (aiokafka and faust: 5 minutes). A topic that
was missing when a group was assigned, or partitions added to one, are then noticed within a minute."""
BATCH_RECORDS = 5000
"""Records fetched per poll."""
CHUNK_RECORDS = 500
"""Records resolved per acquisition of the cluster lock (the watch threads wait for it meanwhile)."""


@dataclass
class IngestProgress:
    """What the stage has done, for the worker's log line, metrics and tests."""

    records: int = 0
    batches: int = 0
    edges_sent: int = 0
    dead_letters_sent: int = 0
    commits_failed: int = 0
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    """Next offset to read, per assigned partition, after the last committed batch."""


class AccessIngest:
    """Consumes the access topic in the ingest consumer group and produces edges keyed by fence.

    ``partition_of`` maps an edge key (``namespace/name``) to its edges-topic partition, so that the table
    agent, seeds and resets agree on where a fence lives.
    """

    def __init__(
        self,
        config: Config,
        ingest: Ingest,
        cluster: ClusterView,
        partition_of: Callable[[bytes], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.ingest = ingest
        self.cluster = cluster
        self.partition_of = partition_of
        self.clock = clock
        self.progress = IngestProgress()
        self.consumer: AIOKafkaConsumer | None = None
        self.kafka_errors = clienterrors.KafkaErrors()
        """Errors of the worker's Kafka clients (this stage's and faust's): see :mod:`.clienterrors`."""

    async def run(self) -> None:
        """Consume until cancelled; the consumer leaves its group on the way out (a quick rebalance)."""
        kafka, topics = self.config.kafka, self.config.topics
        connection = client_kwargs(kafka)  # the brokers, TLS and SASL
        clienterrors.CLIENT.set(clienterrors.INGEST)  # this task's and its clients' errors are the ingest's
        consumer = AIOKafkaConsumer(
            topics.access,
            **connection,
            group_id=kafka.ingest_group,
            client_id=f"{kafka.app_id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=BATCH_RECORDS,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
        )
        producer = AIOKafkaProducer(
            **connection,
            client_id=f"{kafka.app_id}-ingest",
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
        )
        await producer.start()
        try:
            await consumer.start()
            self.consumer = consumer
            try:
                while True:
                    batches = await consumer.getmany(timeout_ms=500, max_records=BATCH_RECORDS)
                    if batches:
                        await self._handle(consumer, producer, batches)
            finally:
                self.consumer = None
                await consumer.stop()
        finally:
            await producer.stop()

    async def _handle(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> None:
        sent: list[asyncio.Future[object]] = []
        for records in batches.values():
            for start in range(0, len(records), CHUNK_RECORDS):
                sent += await self._process(producer, records[start : start + CHUNK_RECORDS])
        if sent:
            try:
                await asyncio.gather(*sent)  # acknowledged by the brokers before the offsets move
            except KafkaError:
                self.kafka_errors.note("send")  # given up by the producer: the worker stops, unacknowledged
                raise
        offsets = {tp: OffsetAndMetadata(records[-1].offset + 1, "") for tp, records in batches.items()}
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance took the partitions meanwhile: their new owner re-reads the batch (harmless).
            self.progress.commits_failed += 1
            self.kafka_errors.note("commit")
            log.info("ingest: offsets of a batch not committed (%s); its records will be re-read", exc)
        except KafkaError:
            self.kafka_errors.note("commit")  # not retriable: the worker stops, the batch is re-read
            raise
        else:
            self.progress.positions.update({tp: o.offset for tp, o in offsets.items()})
        self.progress.batches += 1

    async def _process(
        self, producer: AIOKafkaProducer, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> list[asyncio.Future[object]]:
        now = self.clock()
        process, state = self.ingest.process, self.cluster.state
        with self.cluster.reading():
            results = [
                process(r.value or b"", state, r.timestamp / 1000 if r.timestamp else now) for r in records
            ]
        self.progress.records += len(records)
        topics, sent = self.config.topics, []
        for record, out in zip(records, results, strict=True):
            if isinstance(out, DeadLetter):
                # where the record was read: a record read twice (at-least-once) is the same dead letter
                origin = f"{record.topic}/{record.partition}@{record.offset}".encode()
                headers = [*out.headers, ("lazystream-origin", origin)]
                sent.append(
                    await producer.send(topics.dead_letter, out.value, key=record.key, headers=headers)
                )
                self.progress.dead_letters_sent += 1
                continue
            for edge in out:
                sent.append(
                    await producer.send(
                        topics.edges, edge.value, key=edge.key, partition=self.partition_of(edge.key)
                    )
                )
                self.progress.edges_sent += 1
        return sent

    async def lag(self) -> int | None:
        """Records on the access topic not yet consumed by this worker's partitions (None when unknown)."""
        consumer = self.consumer
        if consumer is None:
            return None
        assigned = consumer.assignment()
        client = clienterrors.CLIENT.set(clienterrors.INGEST)  # asked from /metrics: the ingest's client
        try:
            ends = await consumer.end_offsets(list(assigned))
            lag = 0
            for tp, end in ends.items():
                position = self.progress.positions.get(tp)
                if position is None:  # no batch of it handled yet: where the group left it
                    position = await consumer.committed(tp) or 0
                lag += max(0, int(end) - position)
        except (KafkaError, IllegalStateError):
            self.kafka_errors.note("offsets")
            return None
        finally:
            clienterrors.CLIENT.reset(client)
        return lag
