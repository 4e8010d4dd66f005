"""Which partitions the worker's consumer reads again from their start after a rebalance."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from faust.types import TP

from lazystream.config import load_config
from lazystream.stream.app import create_worker_app
from lazystream.stream.rewind import RewindingConsumer, uncommitted


def consumed(topic: str) -> bool:
    return topic == "edges"


def test_partitions_without_a_committed_offset_are_rewound() -> None:
    committed = {TP("edges", 1): None, TP("edges", 0): 0, TP("edges", 2): 17, TP("edges", 3): 1}
    assert uncommitted(committed, consumed) == [TP("edges", 0), TP("edges", 1)]


def test_changelog_and_other_topics_are_left_alone() -> None:
    committed = {TP("learned-changelog", 0): None, TP("__assignor-__leader", 0): None}
    assert uncommitted(committed, consumed) == []


def test_the_worker_app_creates_the_rewinding_consumer(tmp_path: Path) -> None:
    config = load_config(environ={}, overrides={"tables.dataDir": str(tmp_path)})

    cluster = SimpleNamespace(state=None, fences={})  # not read while the app is built
    worker = create_worker_app(config, cluster, lambda key: None)
    assert worker.app.transport.Consumer is RewindingConsumer
    assert RewindingConsumer.logger.name == "faust.transport.drivers.aiokafka"  # faust's log lines unchanged
