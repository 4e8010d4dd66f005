"""Kafka housekeeping for tests and benchmarks that create topics of their own."""

from __future__ import annotations

from typing import Any

from aiokafka.admin import AIOKafkaAdminClient


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
