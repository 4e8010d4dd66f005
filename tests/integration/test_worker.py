"""`lazystream worker` runs against the real broker: it joins its group, consumes the access topic and
reports what it saw; SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.fixtures.kafka import TopicFactory
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

LAZYSTREAM = str(Path(sys.executable).with_name("lazystream"))


async def test_worker_consumes_the_access_topic(
    kafka_bootstrap: str, new_topic: TopicFactory, fresh_name: str, tmp_path: Path
) -> None:
    access = await new_topic(partitions=4)
    env = dict(
        os.environ,
        LAZYSTREAM_KAFKA_APP_ID=fresh_name,
        LAZYSTREAM_TOPICS_ACCESS=access,
        LAZYSTREAM_KAFKA_BOOTSTRAP=kafka_bootstrap,
        LAZYSTREAM_TABLES_DATA_DIR=str(tmp_path / "data"),
        LAZYSTREAM_WEB_PORT=str(free_port()),
    )
    worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for i in range(3):
                await producer.send_and_wait(access, b'{"authority": "details"}', key=str(i).encode())
        finally:
            await producer.stop()
        worker.wait_for_output("access records seen: 3 (72 bytes)", timeout=30)
    finally:
        assert worker.stop() == 0, worker.output()[-3000:]
