"""Kafka client errors counted from aiokafka's reports, by the client whose task reported them.

The test of record for the worker is the broker restart in ``tests/integration/test_outage.py``; these
check the attribution and the filtering, and that the logger names match what aiokafka really logs."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from lazystream.stream import clienterrors
from lazystream.stream.clienterrors import INGEST, KafkaErrors, count_client_logs, kind_of, stop_counting
from tests.fixtures.servers import free_port


@pytest.fixture
def errors() -> Iterator[KafkaErrors]:
    errors = KafkaErrors()
    handler = count_client_logs(errors)
    try:
        yield errors
    finally:
        stop_counting(handler)


def test_kinds_follow_aiokafka_modules() -> None:
    assert kind_of("aiokafka") == "connection"  # client.py's logger
    assert kind_of("aiokafka.conn") == "connection"
    assert kind_of("aiokafka.consumer.fetcher") == "fetch"
    assert kind_of("aiokafka.consumer.group_coordinator") == "group"
    assert kind_of("aiokafka.producer.sender") == "produce"
    assert kind_of("aiokafka.util") == "other"


async def test_records_are_charged_to_the_client_whose_task_logged_them(errors: KafkaErrors) -> None:
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")

    async def ingest_stage() -> None:
        clienterrors.CLIENT.set(INGEST)

        async def background_routine() -> None:  # as aiokafka's fetcher task, created by the client
            fetcher.error("Failed fetch messages from %s: %s", 1, "NodeNotReadyError")

        await asyncio.create_task(background_routine())
        logging.getLogger("aiokafka.consumer.group_coordinator").warning("Heartbeat failed")

    await asyncio.create_task(ingest_stage())
    fetcher.error("Failed fetch messages from %s: %s", 1, "NodeNotReadyError")  # this task: faust's
    thread = threading.Thread(target=lambda: logging.getLogger("aiokafka.conn").error("lost"))
    thread.start()  # faust's consumer runs in a thread of its own
    thread.join()
    assert errors.snapshot() == {
        ("ingest", "fetch"): 1,
        ("ingest", "group"): 1,
        ("faust", "fetch"): 1,
        ("faust", "connection"): 1,
    }
    assert clienterrors.CLIENT.get() == "faust"  # the ingest's setting stayed in its task


def test_configuration_warnings_and_info_are_not_errors(errors: KafkaErrors) -> None:
    conn = logging.getLogger("aiokafka.conn")
    conn.warning("Sending username and password in the clear")
    logging.getLogger("aiokafka.consumer.fetcher").info("Fetch offset is out of range, resetting")
    logging.getLogger("lazystream.stream.ingest").error("not a client's")
    assert errors.total() == 0
    conn.error("Unable connect to node with id %s: %s", 1, "refused")
    assert errors.total() == 1


async def test_a_real_client_failing_to_connect_is_counted(errors: KafkaErrors) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{free_port()}", request_timeout_ms=2000)
    clienterrors.CLIENT.set(INGEST)
    with pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()
    assert errors.snapshot().get(("ingest", "connection"), 0) >= 1
