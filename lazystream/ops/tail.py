"""``lazystream tail``: read one of lazystream's topics, decoded, without joining any consumer group."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from lazystream.config import Config
from lazystream.domain.messages import TopicKind, decode
from lazystream.kafka import clients
from lazystream.ops import kafka
from lazystream.ops.topics import topic_names

DEFAULT_LAST = 10
"""Without --since or --from-beginning, tail starts this many records before the end of each partition."""
POLL_MS = 500


@dataclass(frozen=True)
class TailRequest:
    kind: TopicKind
    since: float | None = None
    """Unix seconds to start from (the first record at or after it, per partition)."""
    from_beginning: bool = False
    follow: bool = False
    key: str | None = None
    partition: int | None = None
    limit: int | None = None
    """Print at most this many records (after the key filter)."""
    last: int = DEFAULT_LAST


@dataclass(frozen=True)
class Tailed:
    """One record with its Kafka coordinates and its decoded content."""

    topic: str
    partition: int
    offset: int
    timestamp: float
    decoded: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            **self.decoded,
        }


async def _start_offsets(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], request: TailRequest
) -> dict[TopicPartition, int]:
    limits = await kafka.bounds(consumer, tps)
    if request.from_beginning:
        return {tp: b.beginning for tp, b in limits.items()}
    if request.since is not None:
        return await kafka.offsets_at(consumer, tps, request.since)
    return {tp: max(b.beginning, b.end - request.last) for tp, b in limits.items()}


async def tail(
    config: Config,
    request: TailRequest,
    emit: Callable[[Tailed], None],
    stop: asyncio.Event | None = None,
) -> int:
    """Emit the requested records in arrival order per partition; return how many were emitted.

    Without ``follow`` it stops at the end offsets the partitions had when it started; with ``follow`` it
    runs until ``stop`` is set (or the process is interrupted) or ``limit`` records were emitted.
    """
    topic = topic_names(config)[request.kind]
    emitted = 0
    async with clients.admin_client(config) as admin:
        tps = await kafka.partitions_of(admin, topic)
    if request.partition is not None:  # before a consumer exists: nothing to stop half-started
        wanted = [tp for tp in tps if tp.partition == request.partition]
        if not wanted:
            raise clients.OpsError(
                f"topic {topic!r} has no partition {request.partition} (it has 0-{len(tps) - 1})"
            )
        tps = wanted
    async with clients.reader(config) as consumer:
        consumer.assign(tps)
        starts = await _start_offsets(consumer, tps, request)
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        ends = (await kafka.bounds(consumer, tps)) if not request.follow else {}
        pending = {tp for tp in tps if request.follow or starts[tp] < ends[tp].end}
        wanted_key = request.key.encode() if request.key is not None else None
        while pending and (stop is None or not stop.is_set()):
            batches = await consumer.getmany(*pending, timeout_ms=POLL_MS)
            for tp, messages in batches.items():
                for message in messages:
                    if not request.follow and message.offset >= ends[tp].end:
                        pending.discard(tp)
                        break
                    if wanted_key is None or message.key == wanted_key:
                        emit(
                            Tailed(
                                topic=tp.topic,
                                partition=tp.partition,
                                offset=message.offset,
                                timestamp=message.timestamp / 1000.0,
                                decoded=decode(
                                    request.kind, message.key, message.value, list(message.headers or ())
                                ),
                            )
                        )
                        emitted += 1
                        if request.limit is not None and emitted >= request.limit:
                            return emitted
            if not request.follow:
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp].end:
                        pending.discard(tp)
    return emitted
