"""After a rebalance, partitions with no committed offset are read again from their start.

faust drops records its fetcher returns while a partition is paused for recovery (a new member fetches its
new edges partitions while it is still reading the changelog), and records of a batch that a rebalance
interrupts. It relies on "seek to committed" after the rebalance to read them again. aiokafka seeks only
to a committed offset above 0, so a partition with none (a new group before its first commit, a commit
that came too late, offsets expired after ``offsets.retention.minutes``) kept the position past the
dropped records, and its edges were never applied: seen as a dependency that never reached the Sidecar
after a second worker joined a group less than one commit interval old.

:class:`RewindingConsumer` seeks such partitions of the agents' own topics back to offset 0 (Kafka moves
that to the log start if retention removed it). Edges are idempotent in the table agent, so reading one
again changes nothing; changelog partitions are left to faust's recovery, which positions them itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

log = logging.getLogger(__name__)


def uncommitted(committed: Mapping[TP, int | None], consumed: Callable[[str], bool]) -> list[TP]:
    """The partitions of consumed topics with no committed offset (None or 0), in order."""
    return sorted(tp for tp, offset in committed.items() if not offset and consumed(tp.topic))


class RewindingConsumer(aiokafka_driver.Consumer):
    """faust's aiokafka consumer, whose seek to committed offsets also rewinds uncommitted partitions."""

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed: Mapping[TP, int] = await super().seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        acking = self.app.topics.acks_enabled_for
        rewind = uncommitted(committed, lambda topic: acking(topic) and topic not in changelogs)
        if rewind:
            await self.seek_wait(dict.fromkeys(rewind, 0))
            log.info("read from the start (no committed offset): %s", _names(rewind))
        return committed


RewindingConsumer.logger = aiokafka_driver.logger  # faust's consumer lines keep their logger name


def _names(tps: Iterable[TP]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in tps)


def install(app: Any) -> None:
    """Make ``app`` create a :class:`RewindingConsumer` (before its consumer is first used)."""
    app.transport.Consumer = RewindingConsumer
