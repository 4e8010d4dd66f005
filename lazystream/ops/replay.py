"""``lazystream replay``: re-process retained records by moving the worker group's offsets back.

Records that arrive while the workers are down need no replay: the group resumes from its committed
offsets. Replay is for records already consumed — when they were processed wrongly (a fix to parsing or
resolution, a cluster that was incomplete at the time) or the learned state was lost with its
changelog. With every worker stopped, the group's committed offsets on the access topic (and, when asked,
the edges topic) move to the first record at or after ``--since`` (or to the beginning), and the workers
re-read from there when they start.

Replaying is safe over current state: learned state only grows by observations, the table agent skips
messages that change nothing, and the sink skips writes whose object already equals the desired one. The
dry run shows what would change by running the domain core (what ``lazystream render`` runs) over the
records against the cluster and fences in the API server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from lazystream.config import Config
from lazystream.domain.messages import TopicKind
from lazystream.domain.replay import FenceChange
from lazystream.kafka import clients
from lazystream.ops import kafka
from lazystream.ops.topics import _read_range, consumer_group, topic_names


@dataclass(frozen=True)
class Move:
    """One partition's offset move."""

    group: str
    topic: str
    partition: int
    committed: int | None
    target: int
    end: int

    @property
    def records(self) -> int:
        """Records that will be processed (again) from the target to the end."""
        return max(0, self.end - self.target)


@dataclass
class ReplayPlan:
    since: float | None
    moves: list[Move]

    @property
    def groups(self) -> list[str]:
        """The consumer groups whose offsets move (the ingest stage's for access, faust's for edges)."""
        return sorted({m.group for m in self.moves})

    @property
    def records(self) -> int:
        return sum(m.records for m in self.moves)

    def offsets(self, group: str) -> dict[TopicPartition, int]:
        return {TopicPartition(m.topic, m.partition): m.target for m in self.moves if m.group == group}


async def plan_replay(
    config: Config, kinds: Iterable[TopicKind], since: float | None, *, require_idle: bool = True
) -> ReplayPlan:
    """Where each partition's offset would move (``since`` None: the beginning). With ``require_idle``,
    :class:`~lazystream.ops.clients.OpsError` when the group has live members."""
    names = topic_names(config)
    moves: list[Move] = []
    async with clients.admin_client(config) as admin, clients.reader(config) as consumer:
        if require_idle:
            for group in (config.kafka.app_id, config.kafka.ingest_group):
                await kafka.require_no_members(admin, group, "replay")
        for kind in kinds:
            group = consumer_group(config, kind)
            tps = await kafka.partitions_of(admin, names[kind])
            limits = await kafka.bounds(consumer, tps)
            targets = (
                {tp: b.beginning for tp, b in limits.items()}
                if since is None
                else await kafka.offsets_at(consumer, tps, since)
            )
            commits = await kafka.committed(admin, group, tps)
            moves += [
                Move(group, tp.topic, tp.partition, commits[tp], targets[tp], limits[tp].end) for tp in tps
            ]
    return ReplayPlan(since, moves)


async def apply_replay(config: Config, plan: ReplayPlan) -> None:
    """Commit the plan's target offsets for the group (checking again that it has no members)."""
    async with clients.admin_client(config) as admin:
        for group in (config.kafka.app_id, config.kafka.ingest_group):
            await kafka.require_no_members(admin, group, "replay")
    for group in plan.groups:
        await kafka.commit_group_offsets(config, group, plan.offsets(group))


async def read_records(
    config: Config, plan: ReplayPlan, topic: str, on_record: Callable[[int], None] | None = None
) -> list[bytes]:
    """The values of ``topic`` the plan would re-process, in partition order."""
    ranges = {TopicPartition(m.topic, m.partition): (m.target, m.end) for m in plan.moves if m.topic == topic}
    async with clients.reader(config) as consumer:
        messages = await _read_range(consumer, ranges)
    values = [m.value or b"" for batch in messages.values() for m in batch]
    if on_record is not None:
        on_record(len(values))
    return values


async def wait_caught_up(
    config: Config,
    plan: ReplayPlan,
    on_progress: Callable[[int, int], None],
    timeout: float,
    poll: float = 1.0,
) -> bool:
    """Follow the group's committed offsets until every moved partition reaches the end it had when the
    plan was made; ``on_progress(done, total)`` after each poll. False when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    async with clients.admin_client(config) as admin:
        while True:
            commits: dict[TopicPartition, int | None] = {}
            for group in plan.groups:
                tps = [TopicPartition(m.topic, m.partition) for m in plan.moves if m.group == group]
                commits.update(await kafka.committed(admin, group, tps))
            done = sum(
                min(m.end, max(m.target, commits[TopicPartition(m.topic, m.partition)] or 0)) - m.target
                for m in plan.moves
            )
            on_progress(done, plan.records)
            if done >= plan.records:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(poll)


def summarize_moves(plan: ReplayPlan) -> list[dict[str, Any]]:
    return [
        {
            "group": m.group,
            "topic": m.topic,
            "partition": m.partition,
            "committed": m.committed,
            "target": m.target,
            "end": m.end,
            "records": m.records,
        }
        for m in plan.moves
    ]


def changes_as_dicts(changes: Iterable[FenceChange]) -> list[Mapping[str, Any]]:
    return [
        {
            "fence": f"{c.namespace}/{c.name}",
            "newHosts": list(c.new_hosts),
            "statusChanges": c.status_changes,
        }
        for c in changes
    ]
