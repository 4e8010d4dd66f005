"""After a rebalance, partitions with no committed offset are read again from their start, and no commit
skips a record that was never processed.

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

The rewind alone is not enough, because faust
also marks a record as read when a rebalance cancels its delivery, and it commits the first run of
consecutive acked offsets, checking that the run starts at the committed offset only when that offset is
above 0 (and then allowing one missing record). A partition whose first records never reached the table
agent was committed past them, and they were never read again. So the consumer checks the head of every
commit: when the lowest acked offset of an agent's partition is above the offset reading should have
started from (the committed offset, or the log start of a rewound partition), it commits nothing for that
partition and reads it again from there (:func:`hole_at_head`). When retention has removed records from
the committed offset on, reading begins at the log start, and faust's check is made from there too (it
would otherwise never commit the partition again). Reading again is a seek, and records fetched before it
but delivered after it are dropped (:meth:`RewindingConsumer.getmany`): each moves faust's read offset past
the sought records, which faust then drops in turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

log = logging.getLogger(__name__)

HEAL_RETRY_S = 30.0
"""A partition read again from a missing offset is not sought again for it within this many seconds (the
records before it are being read again meanwhile)."""


def uncommitted(committed: Mapping[TP, int | None], consumed: Callable[[str], bool]) -> list[TP]:
    """The partitions of consumed topics with no committed offset (None or 0), in order."""
    return sorted(tp for tp, offset in committed.items() if not offset and consumed(tp.topic))


def hole_at_head(acked: Collection[int], start: int) -> bool:
    """Whether the record at ``start`` (where reading the partition should have begun) was never acked
    while later ones were: a commit of ``acked`` would skip it, or stop at it for good. Offsets below
    ``start`` (faust keeps the last one of the previous commit) do not count."""
    later = [offset for offset in acked if offset >= start]
    return bool(later) and min(later) > start


class RewindingConsumer(aiokafka_driver.Consumer):
    """faust's aiokafka consumer, whose seek to committed offsets also rewinds uncommitted partitions, and
    whose commits never pass a record of an agent's partition that was not processed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_starts: dict[TP, int] = {}
        """The first offset of each partition rewound to its start (where its reading begins)."""
        self.holes_healed = 0
        """Times a partition was read again from an offset that was never processed."""
        self._healing: dict[TP, float] = {}
        self._heal_tasks: set[asyncio.Task[None]] = set()
        self._seeks_back = 0
        """Seeks back so far: a fetch that began before the latest one may hold records from before it."""
        self._reading_again: dict[TP, tuple[int, int]] = {}
        """Partitions sought back and not yet read from there: the offset, and the seek's number."""

    def _consumed(self, topic: str) -> bool:
        """The agents' own topics: acked by faust, and not a table's changelog."""
        return bool(self.app.topics.acks_enabled_for(topic)) and topic not in self.app.tables.changelog_topics

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed: Mapping[TP, int] = await super().seek_to_committed()
        rewind = uncommitted(committed, self._consumed)
        if rewind:
            starts = await self.earliest_offsets(*rewind)
            self.log_starts.update({TP(tp.topic, tp.partition): offset for tp, offset in starts.items()})
            await self.seek_wait(dict.fromkeys(rewind, 0))
            log.info("read from the start (no committed offset): %s", _names(rewind))
        return committed

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit for ``tp``, or None; never past a record that was not acked."""
        if self._consumed(tp.topic):
            # where reading began: the committed offset (faust keeps 0 as None), or the log start when known
            # (a rewound partition, or retention removed records below the committed offset)
            known = [o for o in (self._committed_offset.get(tp), self.log_starts.get(tp)) if o is not None]
            start = max(known) if known else None
            if start is not None and hole_at_head(self._acked.get(tp) or (), start):
                self._read_again(tp, start)
                return None
            committed = self._committed_offset.get(tp)
            if committed and start is not None and start > committed:
                # retention removed the records from the committed offset up to the log start: faust's own
                # head check (first acked at most one past the committed offset) would never commit again
                self._committed_offset[tp] = start
        offset: int | None = super()._new_offset(tp)
        return offset

    def _read_again(self, tp: TP, offset: int) -> None:
        """Seek ``tp`` back to ``offset`` (at most every :data:`HEAL_RETRY_S`): edges are idempotent, so
        the records after it that were processed change nothing when read again."""
        now = time.monotonic()
        if now - self._healing.get(tp, float("-inf")) < HEAL_RETRY_S:
            return
        self._healing[tp] = now
        self.holes_healed += 1
        log.warning(
            "%s[%d]: offset %d was never processed, later ones were: reading again from it",
            tp.topic,
            tp.partition,
            offset,
        )
        task = asyncio.get_running_loop().create_task(self._seek_back(tp, offset))
        self._heal_tasks.add(task)
        task.add_done_callback(self._heal_tasks.discard)

    async def _seek_back(self, tp: TP, offset: int) -> None:
        try:
            first = (await self.earliest_offsets(tp)).get(tp, 0)
            if first > offset:  # retention removed the missing records: reading starts at the log start
                self.log_starts[tp] = first
                return
            await self.seek(tp, offset)
        except Exception as exc:  # revoked meanwhile, or the brokers are away: the next commit tries again
            log.warning("%s[%d]: not read again from %d: %s", tp.topic, tp.partition, offset, exc)
            return
        self._seeks_back += 1
        self._reading_again[tp] = (offset, self._seeks_back)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        """faust's records, without those of a partition sought back that were fetched before the seek.

        faust drops every record below a partition's read offset, and a record fetched before the seek and
        delivered after it moves the read offset past the records the seek asked for, which would then never
        be delivered (nor the partition's offsets committed). Those records come again after the seek."""
        fetch = self._seeks_back  # the fetch below begins now: records of later seeks are not in it
        async for tp, message in super().getmany(timeout):
            again = self._reading_again.get(tp)
            if again is not None:
                offset, seek = again
                if message.offset > offset and fetch < seek:
                    continue  # fetched before the seek: read again after the sought record
                del self._reading_again[tp]  # the partition's new position
                self._read_offset[tp] = message.offset  # not below what an earlier record set
            yield tp, message


RewindingConsumer.logger = aiokafka_driver.logger  # faust's consumer lines keep their logger name


def _names(tps: Iterable[TP]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in tps)


def install(app: Any) -> None:
    """Make ``app`` create a :class:`RewindingConsumer` (before its consumer is first used)."""
    app.transport.Consumer = RewindingConsumer
