"""``lazystream topics create|describe|scale``: lazystream's topics, their offsets and lag, and the scale-out
migration.

Why ``scale`` is a migration and not a bare partition increase: faust writes a table's changelog to the
partition of the *source event*, and the edges topic is keyed by fence, so a fence's
learned state lives on partition ``murmur2(fence) % N``. Growing N moves most fences to another partition,
where the table (and the worker that owns it) knows nothing of them, and faust refuses a changelog whose
partition count differs from its source topic's. So ``scale``, with every worker stopped:

1. reads each fence's learned state: the table's changelog (latest value per fence) plus the edges the
   worker group had not consumed yet;
2. moves the group's edges offsets to the end (those edges are in the state of step 1);
3. grows the access, edges and dead-letter topics to the new partition count;
4. creates the changelog of the next table version (``tables.version``), with the new partition count;
5. writes one ``restore`` message per fence onto the edges topic, which now partitions by the new count,
   so each fence's whole state (first/last seen, counts) arrives on its new partition.

The workers then start with ``tables.version`` and ``topics.partitions`` set to the new values; the table
agent rebuilds the new table from the restore messages, and the usual seeding from
``status.metricStatus`` covers whatever Kafka no longer retained.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic

from lazystream.config import Config
from lazystream.domain import learned
from lazystream.domain.cluster import ObjectKey
from lazystream.domain.messages import TopicKind
from lazystream.kafka import clients
from lazystream.kafka.security import client_kwargs
from lazystream.ops import kafka

TOPIC_ALREADY_EXISTS = 36
VISIBLE_TIMEOUT_S = 30.0
"""How long :func:`create_topics` waits for the brokers' metadata to list the topics it created."""
SCAN_PER_PARTITION = 10_000
"""Records per partition ``describe`` reads to count keys by namespace."""

Progress = Callable[[str], None]


def changelog_topic(config: Config, version: int | None = None) -> str:
    """The learned-state table's changelog topic (faust: ``{app id}-{table}-changelog``)."""
    table = (
        config.tables.table_name
        if version is None
        else ("learned" if version == 1 else f"learned-v{version}")
    )
    return f"{config.kafka.app_id}-{table}-changelog"


def topic_names(config: Config) -> dict[TopicKind, str]:
    return {
        TopicKind.ACCESS: config.topics.access,
        TopicKind.EDGES: config.topics.edges,
        TopicKind.DEAD_LETTER: config.topics.dead_letter,
        TopicKind.CHANGELOG: changelog_topic(config),
    }


GROUP_TOPICS = (TopicKind.ACCESS, TopicKind.EDGES)
"""The topics the workers consume in a consumer group (and commit offsets for)."""


def consumer_group(config: Config, kind: TopicKind) -> str:
    """The workers' consumer group for a topic: the ingest stage's group for the access topic
    (``<appId>-ingest``), faust's group (``<appId>``) for the others."""
    return config.kafka.ingest_group if kind == TopicKind.ACCESS else config.kafka.app_id


def _new_topic(name: str, kind: TopicKind, partitions: int, replication: int) -> NewTopic:
    configs = {"cleanup.policy": "compact"} if kind is TopicKind.CHANGELOG else {}
    return NewTopic(name, num_partitions=partitions, replication_factor=replication, topic_configs=configs)


async def _metadata(admin: AIOKafkaAdminClient, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Topic name → metadata, for the topics that exist."""
    wanted = set(names)
    existing = set(await admin.list_topics()) & wanted
    if not existing:
        return {}
    return {t["topic"]: t for t in await admin.describe_topics(sorted(existing)) if not t["error_code"]}


def _led(topic: dict[str, Any] | None) -> bool:
    """A topic the metadata lists with every partition led by a broker."""
    return bool(topic and topic["partitions"] and all(p["leader"] >= 0 for p in topic["partitions"]))


async def wait_visible(
    admin: AIOKafkaAdminClient, names: Collection[str], timeout: float = VISIBLE_TIMEOUT_S
) -> None:
    """Wait until the brokers' metadata lists every topic of ``names``, each partition with a leader.

    Why: a broker answers CreateTopics once the controller has recorded the topic, and its metadata learns
    of it a moment later. A consumer that joins its group in between is assigned no partition of the topic
    (faust: "Ignoring missing topic") and notices it only at its next metadata refresh, minutes later.
    Raises :class:`~lazystream.ops.clients.OpsError` naming the topics still missing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        meta = await _metadata(admin, names)
        missing = sorted(n for n in names if not _led(meta.get(n)))
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise clients.OpsError(
                f"created, but not in the brokers' metadata after {timeout:.0f} s: {', '.join(missing)}"
            )
        await asyncio.sleep(0.2)


@dataclass(frozen=True)
class Created:
    kind: TopicKind
    name: str
    partitions: int
    replication: int
    action: str
    """``created``, ``exists`` or ``exists, N partitions (configured M)``."""


async def create_topics(config: Config) -> list[Created]:
    """Create the missing topics with ``topics.partitions`` and ``topics.replication`` (the changelog
    compacted, as faust declares it), and return once the brokers' metadata lists them
    (:func:`wait_visible`); existing topics are left as they are and reported."""
    names = topic_names(config)
    want_p, want_r = config.topics.partitions, config.topics.replication
    out: list[Created] = []
    async with clients.admin_client(config) as admin:
        meta = await _metadata(admin, names.values())
        missing = [(k, n) for k, n in names.items() if n not in meta]
        if missing:
            response = await admin.create_topics([_new_topic(n, k, want_p, want_r) for k, n in missing])
            for topic, code, *rest in response.topic_errors:
                if code and code != TOPIC_ALREADY_EXISTS:
                    raise clients.OpsError(
                        f"cannot create topic {topic!r}: error {code} {rest[0] if rest else ''}"
                    )
            await wait_visible(admin, [n for _, n in missing])
        for kind, name in names.items():
            if name in meta:
                parts = meta[name]["partitions"]
                count, replicas = len(parts), len(parts[0]["replicas"]) if parts else 0
                action = "exists" if count == want_p else f"exists, {count} partitions (configured {want_p})"
                out.append(Created(kind, name, count, replicas, action))
            else:
                out.append(Created(kind, name, want_p, want_r, "created"))
    return out


# -- describe ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionInfo:
    partition: int
    leader: int
    beginning: int
    end: int
    committed: int | None = None
    """The worker group's committed offset (access and edges only)."""

    @property
    def lag(self) -> int | None:
        if self.committed is None:
            return None
        return max(0, self.end - self.committed)


@dataclass
class TopicInfo:
    kind: TopicKind
    name: str
    exists: bool
    replication: int = 0
    partitions: list[PartitionInfo] = field(default_factory=list)

    @property
    def lag(self) -> int | None:
        lags = [p.lag for p in self.partitions if p.lag is not None]
        return sum(lags) if lags else None


@dataclass(frozen=True)
class NamespaceKeys:
    """How one namespace's keys spread over a fence-keyed topic (from the last records scanned)."""

    namespace: str
    fences: int
    records: int
    partitions: tuple[int, ...]


@dataclass
class Description:
    groups: list[kafka.GroupState]
    """faust's group (edges) and the ingest stage's group (access)."""
    topics: list[TopicInfo]
    keys: dict[str, list[NamespaceKeys]]
    """Topic name → namespaces, for the fence-keyed topics (edges, changelog)."""


async def describe(config: Config, scan: int = SCAN_PER_PARTITION) -> Description:
    names = topic_names(config)
    async with clients.admin_client(config) as admin, clients.reader(config) as consumer:
        meta = await _metadata(admin, names.values())
        groups = [
            await kafka.describe_group(admin, group)
            for group in (config.kafka.app_id, config.kafka.ingest_group)
        ]
        infos: list[TopicInfo] = []
        keys: dict[str, list[NamespaceKeys]] = {}
        for kind, name in names.items():
            if name not in meta:
                infos.append(TopicInfo(kind, name, exists=False))
                continue
            parts = sorted(meta[name]["partitions"], key=lambda p: p["partition"])
            tps = [TopicPartition(name, p["partition"]) for p in parts]
            limits = await kafka.bounds(consumer, tps)
            group = consumer_group(config, kind)
            commits = await kafka.committed(admin, group, tps) if kind in GROUP_TOPICS else {}
            infos.append(
                TopicInfo(
                    kind,
                    name,
                    exists=True,
                    replication=len(parts[0]["replicas"]) if parts else 0,
                    partitions=[
                        PartitionInfo(
                            p["partition"],
                            p["leader"],
                            limits[tp].beginning,
                            limits[tp].end,
                            commits.get(tp),
                        )
                        for p, tp in zip(parts, tps, strict=True)
                    ],
                )
            )
            if kind in (TopicKind.EDGES, TopicKind.CHANGELOG) and scan > 0:
                keys[name] = await key_distribution(consumer, limits, scan)
    return Description(groups, infos, keys)


async def _read_range(
    consumer: AIOKafkaConsumer, ranges: dict[TopicPartition, tuple[int, int]]
) -> dict[TopicPartition, list[Any]]:
    """Every message of each partition in ``[start, end)``, in order."""
    todo = {tp: r for tp, r in ranges.items() if r[0] < r[1]}
    out: dict[TopicPartition, list[Any]] = {tp: [] for tp in ranges}
    if not todo:
        return out
    consumer.assign(list(todo))
    for tp, (start, _end) in todo.items():
        consumer.seek(tp, start)
    while todo:
        batches = await consumer.getmany(*todo, timeout_ms=1000)
        for tp, messages in batches.items():
            end = todo[tp][1] if tp in todo else 0
            out[tp].extend(m for m in messages if m.offset < end)
        for tp in list(todo):
            if await consumer.position(tp) >= todo[tp][1]:
                del todo[tp]
    return out


async def key_distribution(
    consumer: AIOKafkaConsumer, limits: dict[TopicPartition, kafka.Bounds], scan: int
) -> list[NamespaceKeys]:
    ranges = {tp: (max(b.beginning, b.end - scan), b.end) for tp, b in limits.items()}
    messages = await _read_range(consumer, ranges)
    fences: dict[str, set[bytes]] = defaultdict(set)
    records: dict[str, int] = defaultdict(int)
    partitions: dict[str, set[int]] = defaultdict(set)
    for tp, batch in messages.items():
        for message in batch:
            fence = learned.parse_fence_key(message.key or b"")
            namespace = fence.namespace if fence is not None else "(no fence key)"
            fences[namespace].add(message.key or b"")
            records[namespace] += 1
            partitions[namespace].add(tp.partition)
    return [
        NamespaceKeys(ns, len(fences[ns]), records[ns], tuple(sorted(partitions[ns])))
        for ns in sorted(records)
    ]


# -- scale ---------------------------------------------------------------------------------------------


@dataclass
class ScalePlan:
    partitions_before: dict[str, int]
    partitions_after: int
    version_before: int
    version_after: int
    changelog_after: str
    fences: dict[ObjectKey, learned.LearnedState]
    pending_edges: int
    """Edges the group had not consumed, folded into the state carried across."""


async def learned_state(
    config: Config, admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer
) -> tuple[dict[ObjectKey, learned.LearnedState], dict[TopicPartition, int], int]:
    """Every fence's learned state: the changelog's latest values, then the edges the worker group has not
    consumed (in partition order). Also returns the edges end offsets and the number of pending edges."""
    states: dict[bytes, learned.LearnedState] = {}
    changelog = changelog_topic(config)
    if changelog in await admin.list_topics():
        tps = await kafka.partitions_of(admin, changelog)
        limits = await kafka.bounds(consumer, tps)
        for batch in (
            await _read_range(consumer, {tp: (b.beginning, b.end) for tp, b in limits.items()})
        ).values():
            for message in batch:
                if message.value:
                    states[message.key] = learned.decode_state(message.value)
                else:
                    states.pop(message.key, None)
    edges_tps = await kafka.partitions_of(admin, config.topics.edges)
    edge_limits = await kafka.bounds(consumer, edges_tps)
    commits = await kafka.committed(admin, config.kafka.app_id, edges_tps)
    ranges: dict[TopicPartition, tuple[int, int]] = {}
    for tp, b in edge_limits.items():
        done = commits[tp]
        ranges[tp] = (b.beginning if done is None else done, b.end)
    pending = 0
    for batch in (await _read_range(consumer, ranges)).values():
        for message in batch:
            pending += 1
            try:
                body = orjson.loads(message.value or b"")
            except orjson.JSONDecodeError:
                continue
            if not isinstance(body, dict) or learned.parse_fence_key(message.key or b"") is None:
                continue
            new = learned.apply(states.get(message.key, {}), body, config.tables.bucket_seconds)
            if new is not None:
                states[message.key] = new
    fences = {}
    for key, state in states.items():
        fence = learned.parse_fence_key(key)
        if fence is not None and state:
            fences[fence] = state
    return fences, {tp: b.end for tp, b in edge_limits.items()}, pending


async def scale(config: Config, partitions: int, *, dry_run: bool, progress: Progress) -> ScalePlan:
    """Run the scale-out migration described in the module docstring (or only plan it, ``dry_run``)."""
    names = topic_names(config)
    grown = [names[k] for k in (TopicKind.ACCESS, TopicKind.EDGES, TopicKind.DEAD_LETTER)]
    version = config.tables.version + 1
    new_changelog = changelog_topic(config, version)
    async with clients.admin_client(config) as admin, clients.reader(config) as consumer:
        for group in (config.kafka.app_id, config.kafka.ingest_group):
            await kafka.require_no_members(admin, group, "scale the topics")
        meta = await _metadata(admin, [*grown, new_changelog])
        missing = [n for n in grown if n not in meta]
        if missing:
            raise clients.OpsError(f"topics {', '.join(missing)} do not exist: run lazystream topics create")
        if new_changelog in meta:
            raise clients.OpsError(
                f"the changelog of table version {version} ({new_changelog}) already exists: was this scale "
                f"already done? Set tables.version to {version}, or delete that topic to redo it"
            )
        before = {n: len(meta[n]["partitions"]) for n in grown}
        if partitions <= max(before.values()):
            raise clients.OpsError(
                f"topics have {max(before.values())} partitions; Kafka can only add partitions "
                f"(asked for {partitions})"
            )
        progress("reading learned state from the changelog and the unconsumed edges")
        fences, edge_ends, pending = await learned_state(config, admin, consumer)
        plan = ScalePlan(before, partitions, config.tables.version, version, new_changelog, fences, pending)
        if dry_run:
            return plan
        progress(
            f"moving the group's edges offsets to the end ({pending} pending edges carried in the state)"
        )
        await kafka.commit_group_offsets(config, config.kafka.app_id, edge_ends)
        progress(f"growing {', '.join(grown)} to {partitions} partitions")
        await admin.create_partitions(
            {n: NewPartitions(total_count=partitions) for n in grown if before[n] < partitions}
        )
        progress(f"creating {new_changelog} ({partitions} partitions, compacted)")
        await admin.create_topics(
            [_new_topic(new_changelog, TopicKind.CHANGELOG, partitions, config.topics.replication)]
        )
    progress(f"writing {len(fences)} restore messages onto {config.topics.edges}")
    await _send_restores(config, partitions, fences)
    return plan


async def _send_restores(
    config: Config, partitions: int, fences: dict[ObjectKey, learned.LearnedState]
) -> None:
    producer = AIOKafkaProducer(**client_kwargs(config.kafka), acks="all")
    await clients.start_client(producer, config)
    try:
        deadline = time.monotonic() + 60
        while len(await producer.partitions_for(config.topics.edges)) < partitions:
            if time.monotonic() > deadline:
                raise clients.OpsError(f"{config.topics.edges} does not show {partitions} partitions yet")
            await producer.client.force_metadata_update()
        now = time.time()
        for key, state in sorted(fences.items()):
            await producer.send(
                config.topics.edges,
                key=learned.fence_key(key),
                value=orjson.dumps(learned.restore(state, now)),
            )
        await producer.flush()
    finally:
        await producer.stop()
