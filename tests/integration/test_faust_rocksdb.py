"""faust with a RocksDB (rocksdict) table is real: it writes through its changelog and, restarted with its
data directory removed, recovers the same values from the changelog."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rocksdict import AccessType, Options, Rdict

from tests.fixtures.kafka import TopicFactory
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

PARTITIONS = 2
TABLE_APP = [sys.executable, "-m", "tests.integration.apps.table_app"]


def wait_for_dump(dump: Path, expected: dict[str, str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        if dump.exists():
            last = json.loads(dump.read_text())
            if last["table"] == expected:
                return last
        time.sleep(0.2)
    raise AssertionError(f"table never reached {expected}; last dump: {last}")


def read_rocksdb(data_dir: Path) -> dict[str, str]:
    """The table's contents read straight from its RocksDB files (one database per partition)."""
    found: dict[str, str] = {}
    paths = sorted((data_dir / "v1" / "tables").glob("learned-*.db"))
    assert [p.name for p in paths] == [f"learned-{p}.db" for p in range(PARTITIONS)]
    for path in paths:
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                if not key.startswith(b"__faust"):  # faust keeps its changelog offset here
                    found[key.decode()] = value.decode()
        finally:
            db.close()
    return found


async def changelog_contents(bootstrap: str, topic: str) -> dict[str, str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        latest: dict[str, str] = {}
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=5000)).values():
                for r in records:
                    latest[r.key.decode()] = r.value.decode()
        return latest
    finally:
        await consumer.stop()


async def test_rocksdb_table_recovers_from_its_changelog(
    kafka_bootstrap: str, new_topic: TopicFactory, fresh_name: str, tmp_path: Path
) -> None:
    source = await new_topic(partitions=PARTITIONS)
    data_dir, dump = tmp_path / "data", tmp_path / "dump.json"
    env = dict(
        os.environ,
        TABLE_APP_ID=fresh_name,
        TABLE_APP_TOPIC=source,
        TABLE_APP_PARTITIONS=str(PARTITIONS),
        TABLE_APP_DUMP=str(dump),
        LAZYSTREAM_KAFKA_BOOTSTRAP=kafka_bootstrap,
        LAZYSTREAM_TABLES_DATA_DIR=str(data_dir),
        LAZYSTREAM_WEB_PORT=str(free_port()),
    )

    worker = WorkerProcess(TABLE_APP, env, tmp_path / "worker-1.log")
    try:
        worker.wait_ready()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for i in range(40):  # 10 keys written 4 times: the last value wins
                await producer.send_and_wait(source, f"v{i}".encode(), key=f"k{i % 10}".encode())
        finally:
            await producer.stop()
        expected = {f"k{k}": f"v{30 + k}" for k in range(10)}
        first = wait_for_dump(dump, expected)
        assert first["processed"] == 40
    finally:
        assert worker.stop() == 0, worker.output()[-3000:]

    assert read_rocksdb(data_dir) == expected
    changelog = f"{fresh_name}-learned-changelog"
    assert await changelog_contents(kafka_bootstrap, changelog) == expected

    # Lose the local state entirely: the values can only come back from the changelog topic.
    shutil.rmtree(data_dir)
    dump.unlink()
    worker = WorkerProcess(TABLE_APP, env, tmp_path / "worker-2.log")
    try:
        worker.wait_ready()
        second = wait_for_dump(dump, expected)
        assert second["processed"] == 0, "the input was re-read: recovery did not come from the changelog"
    finally:
        assert worker.stop() == 0, worker.output()[-3000:]
    assert read_rocksdb(data_dir) == expected
