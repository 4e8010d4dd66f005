"""The worker's memory report (:mod:`lazystream.runtime.memory`) and the packed objects of the watch cache."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import pytest

from lazystream.domain.cluster import ObjectKey
from lazystream.kube.informers import CompactObjects, pack, unpack
from lazystream.runtime import memory

linux_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not memory.allocator(), reason="glibc's allocator figures"
)


@dataclass
class Holder:
    big: dict[str, list[str]] = field(default_factory=dict)
    small: int = 1


def test_deep_size_counts_nested_containers_once() -> None:
    shared = "x" * 10_000
    value = {"a": [shared, shared], "b": (shared,)}
    size = memory.deep_size(value)
    assert 10_000 < size < 20_000  # the string counts once
    assert memory.deep_size([value, value]) < size + 200


def test_attribute_sizes_name_the_large_attributes_and_sum_the_rest() -> None:
    holder = Holder({str(i): ["y" * 100] * 10 for i in range(1000)})
    sizes = memory.attribute_sizes({"holder": holder}, minimum=1024)
    assert list(sizes) == ["holder.big", "holder.*"]
    assert sizes["holder.big"] > 100_000
    assert sizes["holder.*"] < 1024


@linux_glibc
def test_report_has_the_process_and_allocator_figures() -> None:
    report = memory.report(do_trim=True)
    assert report["process"]["rss"] > 0
    assert report["process"]["threads"] >= 1
    assert {"arena", "in_use", "free", "mmapped"} <= set(report["allocator"])
    assert report["before_trim"]["process"]["rss"] > 0
    assert "MainThread" in report["threads"]


@linux_glibc
def test_tune_allocator_leaves_glibc_variables_to_the_operator() -> None:
    assert memory.tune_allocator({"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "65536"}) == {}


def test_packed_objects_read_back_equal_and_pack_canonically() -> None:
    objects = CompactObjects()
    key = ObjectKey("shop", "web")
    sidecar = {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"egress": [{"hosts": ["*/a"] * 50}]},
    }
    objects.put(key, sidecar)
    assert key in objects
    assert list(objects) == [key]
    assert objects[key] == sidecar
    assert objects.get(ObjectKey("shop", "other")) is None
    assert pack({"b": 1, "a": [1, 2]}) == pack({"a": [1, 2], "b": 1})
    assert unpack(pack(sidecar)) == sidecar
    assert objects.discard(key)
    assert not objects.discard(key)
    assert len(objects) == 0
