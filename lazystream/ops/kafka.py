"""Kafka plumbing for the operations commands: partitions, offsets, and the worker group.

Nothing here joins a consumer group as a member. Reads use manual assignment with ``group_id=None``; the
worker group's offsets are read through the admin API and written by an offset commit outside any
generation (what ``kafka-consumer-groups --reset-offsets`` does), which the broker accepts only while the
group has no members — and :func:`require_no_members` refuses before that, with a clear message. The
clients themselves are set up by :mod:`lazystream.kafka.clients`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
)
from aiokafka.protocol.group import MemberAssignment

from lazystream.config import Config
from lazystream.kafka.clients import REQUEST_TIMEOUT_MS, OpsError, start_client
from lazystream.kafka.security import client_kwargs

COORDINATOR_WAIT_S = 20.0
"""How long a group lookup waits for a coordinator (a new broker's offsets topic being created)."""


async def partitions_of(admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
    """The topic's partitions; :class:`OpsError` when the topic does not exist."""
    found = [t for t in await admin.describe_topics([topic]) if t["topic"] == topic and not t["error_code"]]
    if not found or not found[0]["partitions"]:
        raise OpsError(f"topic {topic!r} does not exist (lazystream topics create makes it)")
    return [
        TopicPartition(topic, p["partition"])
        for p in sorted(found[0]["partitions"], key=lambda p: p["partition"])
    ]


@dataclass(frozen=True)
class Bounds:
    """Offsets of one partition: first retained, end (next to be written)."""

    beginning: int
    end: int


async def bounds(consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition]) -> dict[TopicPartition, Bounds]:
    tps = list(tps)
    if not tps:
        return {}
    begin = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    return {tp: Bounds(begin[tp], end[tp]) for tp in tps}


async def offsets_at(
    consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition], seconds: float
) -> dict[TopicPartition, int]:
    """Per partition, the first offset whose timestamp is at or after ``seconds`` (the end offset when
    there is none)."""
    tps = list(tps)
    found = await consumer.offsets_for_times({tp: int(seconds * 1000) for tp in tps})
    ends = await consumer.end_offsets(tps)
    return {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in tps}


# -- the worker's consumer group ------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str
    assignment: dict[str, list[int]] = field(default_factory=dict)
    """Topic → partitions assigned to the member (empty while the group rebalances)."""


@dataclass(frozen=True)
class GroupState:
    group: str
    state: str
    """The broker's view: ``Empty``, ``Stable``, ``PreparingRebalance``, ``CompletingRebalance``, ``Dead``."""
    members: list[Member]


def _assignment(data: bytes) -> dict[str, list[int]]:
    if not data:
        return {}
    try:
        decoded = MemberAssignment.decode(data)
    except Exception:
        return {}
    return {str(topic): sorted(int(p) for p in partitions) for topic, partitions in decoded.assignment}


async def describe_group(admin: AIOKafkaAdminClient, group: str) -> GroupState:
    deadline = time.monotonic() + COORDINATOR_WAIT_S
    while True:
        try:
            responses = await admin.describe_consumer_groups([group])
            break
        except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
            # a new broker creates its offsets topic on the first coordinator lookup: a moment's wait
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    for response in responses:
        for entry in response.groups:
            error_code, group_id, state, _protocol_type, _protocol, members = entry[:6]
            if group_id != group:
                continue
            if error_code:
                raise OpsError(f"cannot describe consumer group {group!r}: error code {error_code}")
            return GroupState(
                group=group,
                state=str(state),
                members=[
                    Member(
                        member_id=str(m[0]),
                        client_id=str(m[-4]),
                        host=str(m[-3]),
                        assignment=_assignment(bytes(m[-1] or b"")),
                    )
                    for m in members
                ],
            )
    return GroupState(group=group, state="Dead", members=[])


async def require_no_members(admin: AIOKafkaAdminClient, group: str, action: str) -> GroupState:
    """The group's state; :class:`OpsError` when workers are in it (offsets of a live group cannot be moved:
    its members would overwrite them at their next commit)."""
    state = await describe_group(admin, group)
    if state.members:
        hosts = ", ".join(sorted(f"{m.client_id}@{m.host}" for m in state.members))
        raise OpsError(
            f"consumer group {group!r} has {len(state.members)} live member(s) ({hosts}); stop every "
            f"lazystream worker of this deployment before you {action}, then run this again"
        )
    return state


async def committed(
    admin: AIOKafkaAdminClient, group: str, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """The group's committed offset per partition (None: nothing committed)."""
    tps = list(tps)
    if not tps:
        return {}
    offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
    out: dict[TopicPartition, int | None] = {}
    for tp in tps:
        meta = offsets.get(tp)
        out[tp] = meta.offset if meta is not None and meta.offset >= 0 else None
    return out


async def commit_group_offsets(config: Config, group: str, offsets: Mapping[TopicPartition, int]) -> None:
    """Write the group's committed offsets, outside any generation (the group must have no members)."""
    if not offsets:
        return
    consumer = AIOKafkaConsumer(
        **client_kwargs(config.kafka),
        group_id=group,
        enable_auto_commit=False,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
    )
    await start_client(consumer, config)
    try:
        consumer.assign(list(offsets))
        await consumer.commit(dict(offsets))
    finally:
        await consumer.stop()
