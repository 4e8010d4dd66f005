"""Kafka housekeeping for tests and benchmarks that create topics of their own."""

from __future__ import annotations

import os
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from lazystream.ops.topics import wait_visible


async def create_topics(names: list[str], partitions: int, **client: Any) -> None:
    """Create the topics (replication 1) and return once the brokers' metadata lists them: a producer that
    starts at once otherwise meets ``NotLeaderForPartitionError`` (seen in the benchmarks' fills)."""
    admin = AIOKafkaAdminClient(**client)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
        await wait_visible(admin, names)
    finally:
        await admin.close()


async def delete_topics(prefix: str, **client: Any) -> None:
    """Delete every topic whose name starts with ``prefix`` (a run's own); ``client`` is aiokafka's
    connection settings (``bootstrap_servers``, and the security ones for a TLS/SASL listener)."""
    admin = AIOKafkaAdminClient(**client)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


def deployment_env(bootstrap: str, app_id: str, partitions: int) -> dict[str, str]:
    """This process's environment, pointing lazystream at ``bootstrap`` and at the topics of a deployment
    named ``app_id`` (``<app_id>-access|edges|dlq``, as ``lazystream topics create`` makes them)."""
    return dict(
        os.environ,
        LAZYSTREAM_KAFKA_BOOTSTRAP=bootstrap,
        LAZYSTREAM_KAFKA_APP_ID=app_id,
        LAZYSTREAM_TOPICS_ACCESS=f"{app_id}-access",
        LAZYSTREAM_TOPICS_EDGES=f"{app_id}-edges",
        LAZYSTREAM_TOPICS_DEAD_LETTER=f"{app_id}-dlq",
        LAZYSTREAM_TOPICS_PARTITIONS=str(partitions),
    )
