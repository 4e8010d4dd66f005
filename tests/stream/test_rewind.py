"""Which partitions the worker's consumer reads again from their start after a rebalance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

from lazystream.config import load_config
from lazystream.stream.app import WorkerApp, create_worker_app
from lazystream.stream.rewind import RewindingConsumer, hole_at_head, uncommitted


def consumed(topic: str) -> bool:
    return topic == "edges"


def test_partitions_without_a_committed_offset_are_rewound() -> None:
    committed = {TP("edges", 1): None, TP("edges", 0): 0, TP("edges", 2): 17, TP("edges", 3): 1}
    assert uncommitted(committed, consumed) == [TP("edges", 0), TP("edges", 1)]


def test_changelog_and_other_topics_are_left_alone() -> None:
    committed = {TP("learned-changelog", 0): None, TP("__assignor-__leader", 0): None}
    assert uncommitted(committed, consumed) == []


def worker_app(tmp_path: Path) -> WorkerApp:
    config = load_config(environ={}, overrides={"tables.dataDir": str(tmp_path)})
    cluster = SimpleNamespace(state=None, fences={})  # not read while the app is built
    return create_worker_app(config, cluster, lambda key: None)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[WorkerApp]:
    """A worker app whose consumer the test builds (not started): its consumer thread's own event loop is
    closed afterwards, or its ResourceWarning surfaces in whichever test the collector runs in."""
    app = worker_app(tmp_path)
    yield app
    thread = getattr(app.app.consumer, "_thread", None)
    loop = getattr(thread, "thread_loop", None)
    if loop is not None and not loop.is_closed():
        loop.close()


def test_a_hole_at_the_head_of_the_acked_offsets() -> None:
    assert not hole_at_head([], 0)
    assert not hole_at_head([0, 1, 2], 0)
    assert not hole_at_head([4, 5, 6], 5)  # 4: the last offset of the previous commit, kept by faust
    assert hole_at_head([1, 2, 3], 0)  # offset 0 never acked
    assert hole_at_head([8, 6, 7], 5)  # in the order acked: offset 5 missing
    assert hole_at_head([4, 6, 7], 5)  # after the last commit's offset, 5 missing: faust stops at 5 for good


async def test_a_commit_never_passes_a_record_that_was_not_processed(
    worker: WorkerApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust alone commits 4 for acked offsets 1-3 of a partition read from its start, skipping offset 0
    for good (seen: a 10k-fence run lost a dependency so). The consumer commits nothing and reads the
    partition again from 0; once 0 is processed, it commits everything."""
    consumer = worker.app.consumer
    assert isinstance(consumer, RewindingConsumer)
    edges = TP(worker.topics.edges.get_topic_name(), 3)
    worker.app.topics._acking_topics.add(edges.topic)  # as the conductor does for an agent's topic
    sought: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        sought.append((tp, offset))

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return dict.fromkeys(tps, first)

    first = 0
    monkeypatch.setattr(consumer, "seek", seek)
    monkeypatch.setattr(consumer, "earliest_offsets", earliest_offsets)
    consumer.log_starts[edges] = 0  # rewound to its start (no committed offset)
    for offset in (1, 2, 3):
        consumer._acked[edges].append(offset)
        consumer._acked_index[edges].add(offset)

    assert consumer._new_offset(edges) is None
    await asyncio.sleep(0)  # the seek's task runs
    assert sought == [(edges, 0)]
    assert consumer._new_offset(edges) is None  # 0 is being read again: not sought twice at once
    await asyncio.sleep(0)
    assert sought == [(edges, 0)]
    assert consumer.holes_healed == worker.edges_read_again == 1

    consumer._acked[edges].append(0)  # read again and processed
    assert consumer._new_offset(edges) == 4

    async def after_retention(partition: int, acked: list[int], log_start: int) -> int | None:
        """What is committed for a partition committed at 8 whose log now starts at ``log_start``, once
        the consumer has looked the log start up."""
        nonlocal first
        tp = TP(edges.topic, partition)
        consumer._committed_offset[tp] = 8
        consumer._acked[tp].extend(acked)
        first = log_start
        assert consumer._new_offset(tp) is None
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert consumer.log_starts[tp] == log_start
        return consumer._new_offset(tp)

    # later, retention removes records below the committed offset before a missing one is read again
    assert await after_retention(2, [9, 10], 9) == 11
    # more than one record past the committed offset: faust alone would never commit the partition again
    assert await after_retention(1, [20, 21], 20) == 22
    assert sought == [(edges, 0)]  # nothing to read again: each log starts at its first acked record


async def test_commits_of_complete_partitions_and_of_changelogs_are_faust_s(worker: WorkerApp) -> None:
    consumer = worker.app.consumer
    edges = TP(worker.topics.edges.get_topic_name(), 0)
    worker.app.topics._acking_topics.add(edges.topic)
    consumer._committed_offset[edges] = 10
    consumer._acked[edges].extend([10, 11, 12])
    assert consumer._new_offset(edges) == 13
    changelog = TP(next(iter(worker.app.tables.changelog_topics)), 0)
    consumer._acked[changelog].extend([5, 6])  # no start known, not an agent's topic: never held back
    assert consumer._new_offset(changelog) == 7
    assert consumer.holes_healed == 0


def test_the_worker_app_creates_the_rewinding_consumer(tmp_path: Path) -> None:
    worker = worker_app(tmp_path)
    assert worker.app.transport.Consumer is RewindingConsumer
    assert RewindingConsumer.logger.name == "faust.transport.drivers.aiokafka"  # faust's log lines unchanged


async def test_records_fetched_before_a_seek_back_do_not_hide_the_sought_ones(
    worker: WorkerApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust drops records below a partition's read offset, and a record fetched before the seek back but
    delivered after it set the read offset past the sought record: a 10k-fence run sought offset 1 again
    every 30 s and never got it. Records of a fetch that began before the seek are left for the re-read."""
    consumer = worker.app.consumer
    assert isinstance(consumer, RewindingConsumer)
    tp = TP(worker.topics.edges.get_topic_name(), 2)
    batches: list[list[int]] = []

    async def fetched(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        for offset in batches.pop(0):
            consumer._read_offset[tp] = offset  # as faust's drain loop does after each delivered record
            yield tp, SimpleNamespace(offset=offset)

    async def seek(tp: TP, offset: int) -> None:
        consumer._read_offset[tp] = offset

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return dict.fromkeys(tps, 0)

    monkeypatch.setattr(aiokafka_driver.Consumer, "getmany", fetched)
    monkeypatch.setattr(consumer, "seek", seek)
    monkeypatch.setattr(consumer, "earliest_offsets", earliest_offsets)

    async def read(stop_at: int | None = None) -> list[int]:
        out = []
        async for _, message in consumer.getmany(1.0):
            out.append(message.offset)
            if message.offset == stop_at:
                await consumer._seek_back(tp, 1)  # the commit's check, while this batch is delivered
        return out

    batches[:] = [[39, 40, 41, 42], [1, 2, 3]]
    assert await read(stop_at=40) == [39, 40]  # 41 and 42 come again after the sought records
    assert await read() == [1, 2, 3]
    assert consumer._read_offset[tp] == 3

    batches[:] = [[4, 5], [9, 10]]  # sought back again; the next fetch begins after the seek
    assert await read(stop_at=5) == [4, 5]
    assert await read() == [9, 10]  # retention removed 1-8 meanwhile: nothing is held back
