"""Kafka clients outside the worker's faust app: an admin client and a group-less reader, started so that a
broker that cannot be reached, or refuses the TLS handshake or the SASL credentials, is one clear
:class:`OpsError` instead of aiokafka's "Unable to bootstrap"."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from lazystream.config import Config
from lazystream.kafka.security import KafkaAccessError, check_access, client_kwargs

REQUEST_TIMEOUT_MS = 30_000


class OpsError(Exception):
    """An operation that cannot go ahead; the message says why and what to do."""


async def start_client(client: Any, config: Config) -> None:
    """Start an aiokafka client; when it cannot connect, :class:`OpsError` says why (aiokafka only says
    "Unable to bootstrap"): a broker refusing the TLS handshake or the SASL credentials, or none reachable."""
    try:
        await client.start()
    except KafkaConnectionError as exc:
        with contextlib.suppress(Exception):  # release what the half-started client holds
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        try:
            problems = await check_access(config.kafka)
        except KafkaAccessError as refused:
            raise OpsError(str(refused)) from exc
        where = config.kafka.bootstrap
        raise OpsError(f"cannot connect to Kafka at {where}: {'; '.join(problems) or exc}") from exc


@asynccontextmanager
async def admin_client(config: Config) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**client_kwargs(config.kafka), request_timeout_ms=REQUEST_TIMEOUT_MS)
    await start_client(admin, config)
    try:
        yield admin
    finally:
        await admin.close()


@asynccontextmanager
async def reader(config: Config) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer outside any group (no group id, no commits): assign partitions to it explicitly."""
    consumer = AIOKafkaConsumer(
        **client_kwargs(config.kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=REQUEST_TIMEOUT_MS,
    )
    await start_client(consumer, config)
    try:
        yield consumer
    finally:
        await consumer.stop()
