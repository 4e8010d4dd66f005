"""The worker's garbage-collector settings (``lazystream.runtime.heap``)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from lazystream.runtime import heap


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_tune_sets_larger_young_generation() -> None:
    heap.tune()
    assert gc.get_threshold() == heap.THRESHOLDS
    assert heap.THRESHOLDS[0] > 700  # CPython's default, which made full passes frequent


@pytest.mark.usefixtures("restored_collector")
def test_freeze_moves_live_objects_out_of_full_collections_but_not_garbage() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    survivors = [Node() for _ in range(100)]
    garbage = weakref.ref(Node())  # a cycle nothing refers to: only the collector can free it
    assert garbage() is not None
    heap.freeze()
    assert garbage() is None  # collected before the freeze, not kept forever
    assert gc.get_freeze_count() >= len(survivors)
    assert not any(o in gc.get_objects() for o in survivors[:3])  # full passes no longer scan them
