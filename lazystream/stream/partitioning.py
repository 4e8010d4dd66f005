"""Which edges-topic partition holds a fence: one fence lives on one partition and has one writer.

With the ``fence`` strategy a fence's partition is what Kafka's default partitioner picks for its key
(``namespace/name``), so any producer that sends with the key alone agrees with the worker. With
``namespace``, every fence of a namespace shares the partition of the namespace's name, which keeps a
namespace's state together on one worker.
"""

from __future__ import annotations

from collections.abc import Callable

from aiokafka.partitioner import murmur2

from lazystream.config import PartitionKey


def partition_of_key(data: bytes, partitions: int) -> int:
    """Kafka's default (murmur2) partition of ``data`` among ``partitions``."""
    return int(murmur2(data) & 0x7FFFFFFF) % partitions


def edge_partitioner(strategy: PartitionKey, partitions: int) -> Callable[[bytes], int]:
    """The partition function for edge keys (``namespace/name``) under ``strategy``."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    if strategy == "namespace":
        return lambda key: partition_of_key(key.partition(b"/")[0], partitions)
    return lambda key: partition_of_key(key, partitions)
