"""The Kafka broker is real: records go through it with aiokafka, keys and partitions intact."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.fixtures.kafka import TopicFactory

pytestmark = pytest.mark.kafka


async def test_produce_and_consume_through_the_broker(kafka_bootstrap: str, new_topic: TopicFactory) -> None:
    topic = await new_topic(partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = {}
        for i in range(30):
            meta = await producer.send_and_wait(topic, f"value-{i}".encode(), key=f"fence-{i % 5}".encode())
            sent[(meta.partition, meta.offset)] = (f"fence-{i % 5}", f"value-{i}")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(3)])
        received = {}
        while len(received) < len(sent):
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, f"broker returned nothing after {len(received)} of {len(sent)} records"
            for tp, records in batches.items():
                for r in records:
                    received[(tp.partition, r.offset)] = (r.key.decode(), r.value.decode())
    finally:
        await consumer.stop()

    assert received == sent
    # the Java-compatible partitioner sends one key to one partition
    partitions_of_key: dict[str, set[int]] = {}
    for (partition, _), (key, _) in received.items():
        partitions_of_key.setdefault(key, set()).add(partition)
    assert all(len(p) == 1 for p in partitions_of_key.values())


async def test_topics_are_created_with_the_requested_partitions(kafka_admin, new_topic: TopicFactory) -> None:
    topic = await new_topic(partitions=4)
    (described,) = await kafka_admin.describe_topics([topic])
    assert described["error_code"] == 0
    assert sorted(p["partition"] for p in described["partitions"]) == [0, 1, 2, 3]
