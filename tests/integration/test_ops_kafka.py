"""``lazystream topics create|describe``, ``tail`` and ``replay``'s offset moves on the real broker, through
the command as users run it (a subprocess), with fresh topic and group names per test."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from lazystream.domain import learned
from lazystream.domain.cluster import ObjectKey
from lazystream.kafka import clients
from lazystream.ops import kafka
from lazystream.ops.topics import wait_visible
from lazystream.testing import fluent_bit, global_sidecar_record
from lazystream.worker import prepare_kafka
from tests.fixtures.kafka import delete_topics
from tests.fixtures.ops import cli, config_of, ops_env
from tests.fixtures.worker import LAZYSTREAM

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


@pytest.fixture
def env(kafka_bootstrap: str, fresh_name: str) -> Iterator[dict[str, str]]:
    """Operations environment for a fresh deployment; its topics are deleted afterwards."""
    yield ops_env(kafka_bootstrap, fresh_name)
    asyncio.run(delete_topics(f"{fresh_name}-", bootstrap_servers=kafka_bootstrap))


async def produce(
    bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]], **kw: object
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key, **kw)  # type: ignore[arg-type]
    finally:
        await producer.stop()


async def groups(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {g[0] for g in await admin.list_consumer_groups()}
    finally:
        await admin.close()


def test_create_tail_and_describe(env: dict[str, str], kafka_bootstrap: str, fresh_name: str) -> None:
    created = cli(env, "topics", "create")
    for suffix in ("access", "edges", "dlq", "learned-changelog"):
        assert f"{fresh_name}-{suffix}" in created.stdout
    assert created.stdout.count("created") == 4
    again = cli(env, "topics", "create")
    assert "created" not in again.stdout.replace("ACTION", "")
    assert again.stdout.count("exists") == 4

    record = fluent_bit(
        global_sidecar_record(authority="details:9080", peer_address="10.9.8.7:40000", time=time.time())
    )
    fence = learned.fence_key(ObjectKey("shop", "productpage"))
    other = learned.fence_key(ObjectKey("billing", "invoices"))
    asyncio.run(produce(kafka_bootstrap, f"{fresh_name}-access", [(None, record), (None, b"not a record")]))
    asyncio.run(
        produce(
            kafka_bootstrap,
            f"{fresh_name}-edges",
            [
                (fence, orjson.dumps(learned.observe("details.shop.svc.cluster.local", "service", 1.0))),
                (fence, orjson.dumps(learned.observe("reviews.shop.svc.cluster.local", "service", 20.0))),
                (other, orjson.dumps(learned.seed(["tax.billing.svc.cluster.local"], 2.0))),
            ],
        )
    )
    asyncio.run(
        produce(
            kafka_bootstrap,
            f"{fresh_name}-dlq",
            [(None, b"not a record")],
            headers=[("lazystream-reason", b"unrecognised_line"), ("lazystream-detail", b"no format")],
        )
    )
    state = learned.encode_state({"details.shop.svc.cluster.local": learned.LearnedHost(1.0, 20.0, 2)})
    asyncio.run(produce(kafka_bootstrap, f"{fresh_name}-learned-changelog", [(fence, state)]))

    access = cli(env, "tail", "access").stdout.splitlines()
    assert len(access) == 2
    assert "[global-sidecar]" in access[0] or "[global-sidecar]" in access[1]
    line = next(x for x in access if "global-sidecar" in x)
    assert "from=10.9.8.7:40000" in line
    assert "authority=details:9080" in line
    assert any("UNREADABLE (unrecognised_line" in x for x in access)

    as_json = [json.loads(x) for x in cli(env, "tail", "access", "-o", "json").stdout.splitlines()]
    decoded = next(x for x in as_json if x.get("format") == "global-sidecar")
    assert decoded["authority"] == "details:9080"
    assert decoded["topic"] == f"{fresh_name}-access"

    edges = cli(env, "tail", "edges", "--key", "shop/productpage").stdout.splitlines()
    assert len(edges) == 2
    assert all(x.split()[2] == "shop/productpage" for x in edges)
    assert "observe details.shop.svc.cluster.local (service)" in edges[0]
    limited = cli(env, "tail", f"{fresh_name}-edges", "--from-beginning", "--limit", "1").stdout.splitlines()
    assert len(limited) == 1
    dead = cli(env, "tail", "dead-letter").stdout
    assert "unrecognised_line: no format  not a record" in dead
    changelog = cli(env, "tail", "changelog").stdout
    assert "shop/productpage  1 hosts: details.shop.svc.cluster.local (x2)" in changelog
    assert cli(env, "tail", "access", "--since", "2000-01-01T00:00:00Z").stdout.count("\n") == 2
    assert cli(env, "tail", "access", "--since", str(time.time() + 3600)).stdout == ""
    partition = json.loads(cli(env, "tail", "edges", "-o", "json", "--limit", "1").stdout)["partition"]
    only = cli(env, "tail", "edges", "--partition", str(partition), "-o", "json").stdout.splitlines()
    assert {json.loads(x)["partition"] for x in only} == {partition}
    bad = cli(env, "tail", "nonsense", check=False)
    assert bad.returncode == 2
    assert "not one of lazystream's topics" in bad.stderr

    # --follow prints what arrives after it started
    follower = subprocess.Popen(
        [LAZYSTREAM, "tail", "access", "--follow", "--last", "0", "--limit", "1"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    later = fluent_bit(
        global_sidecar_record(authority="ratings:9080", peer_address="10.9.8.7:1", time=time.time())
    )
    asyncio.run(produce(kafka_bootstrap, f"{fresh_name}-access", [(None, later)]))
    out, _ = follower.communicate(timeout=60)
    assert "authority=ratings:9080" in out

    # tail never joined (or created) the worker's consumer group
    assert fresh_name not in asyncio.run(groups(kafka_bootstrap))

    # describe: partitions, the group's lag after a commit, keys by namespace
    config = config_of(env)
    asyncio.run(
        kafka.commit_group_offsets(config, fresh_name, {TopicPartition(f"{fresh_name}-edges", partition): 1})
    )
    described = json.loads(cli(env, "topics", "describe", "-o", "json").stdout)
    topics = {t["kind"]: t for t in described["topics"]}
    assert [p["partition"] for p in topics["access"]["partitions"]] == [0, 1, 2]
    assert sum(p["end"] for p in topics["access"]["partitions"]) == 3
    edge_parts = {p["partition"]: p for p in topics["edges"]["partitions"]}
    assert edge_parts[partition]["committed"] == 1
    assert edge_parts[partition]["lag"] == edge_parts[partition]["end"] - 1
    keys = {k["namespace"]: k for k in described["keys"][f"{fresh_name}-edges"]}
    assert keys["shop"]["fences"] == 1
    assert keys["shop"]["records"] == 2
    assert keys["billing"]["records"] == 1
    assert [g["name"] for g in described["groups"]] == [fresh_name, f"{fresh_name}-ingest"]
    assert all(g["members"] == [] for g in described["groups"])
    text = cli(env, "topics", "describe").stdout
    assert "keys of" in text
    assert "LAG" in text


def test_replay_moves_offsets_and_refuses_a_live_group(
    env: dict[str, str], kafka_bootstrap: str, fresh_name: str
) -> None:
    cli(env, "topics", "create")
    access = f"{fresh_name}-access"
    asyncio.run(produce(kafka_bootstrap, access, [(b"k%d" % i, b"old %d" % i) for i in range(6)]))
    time.sleep(1.5)
    middle = time.time()
    time.sleep(0.5)
    asyncio.run(produce(kafka_bootstrap, access, [(b"k%d" % i, b"new %d" % i) for i in range(6)]))
    config = config_of(env)

    async def ends() -> dict[TopicPartition, int]:
        async with clients.reader(config) as consumer:
            return await consumer.end_offsets([TopicPartition(access, p) for p in range(3)])

    end = asyncio.run(ends())
    ingest_group = f"{fresh_name}-ingest"  # the group that reads the access topic
    asyncio.run(kafka.commit_group_offsets(config, ingest_group, end))

    dry = json.loads(cli(env, "replay", "--since", str(middle), "--dry-run", "-o", "json").stdout)
    assert dry["records"] == 6
    assert {(m["partition"], m["committed"]) for m in dry["moves"]} == {
        (tp.partition, n) for tp, n in end.items()
    }

    async def committed() -> dict[TopicPartition, int | None]:
        async with clients.admin_client(config) as admin:
            return await kafka.committed(admin, ingest_group, list(end))

    assert asyncio.run(committed()) == end  # a dry run moves nothing
    done = cli(env, "replay", "--since", str(middle))
    assert "will re-process 6 records" in done.stdout
    moved = asyncio.run(committed())
    assert sum(end[tp] - moved[tp] for tp in end) == 6  # type: ignore[operator]
    cli(env, "replay", "--from-beginning")
    assert all(v == 0 for v in asyncio.run(committed()).values())

    async def with_live_member() -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        member = AIOKafkaConsumer(access, bootstrap_servers=kafka_bootstrap, group_id=ingest_group)
        await member.start()
        try:
            deadline = time.monotonic() + 60
            while not member.assignment() and time.monotonic() < deadline:
                await member.getmany(timeout_ms=500)
            refused = await asyncio.to_thread(cli, env, "replay", "--from-beginning", check=False)
            scale = await asyncio.to_thread(cli, env, "topics", "scale", "--partitions", "6", check=False)
            return refused, scale
        finally:
            await member.stop()

    refused, scale = asyncio.run(with_live_member())
    assert refused.returncode == 1
    assert f"consumer group {ingest_group!r} has 1 live member(s)" in refused.stderr
    assert "stop every lazystream worker" in refused.stderr
    assert scale.returncode == 1
    assert "live member" in scale.stderr


def test_a_starting_worker_creates_its_topics_and_waits_for_the_brokers_to_list_them(
    env: dict[str, str], kafka_bootstrap: str, fresh_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="lazystream.worker")
    prepare_kafka(config_of(env))  # before faust starts: its group would otherwise be assigned without them

    async def described() -> dict[str, dict[str, object]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            names = [f"{fresh_name}-{s}" for s in ("access", "edges", "dlq", "learned-changelog")]
            return {t["topic"]: t for t in await admin.describe_topics(names)}
        finally:
            await admin.close()

    topics = asyncio.run(described())
    assert {t: d["error_code"] for t, d in topics.items()} == dict.fromkeys(topics, 0)
    for topic in topics.values():
        assert sorted(p["partition"] for p in topic["partitions"]) == [0, 1, 2]  # type: ignore[attr-defined]
        assert all(p["leader"] >= 0 for p in topic["partitions"])  # type: ignore[attr-defined]
    assert sum("created (3 partitions)" in m for m in caplog.messages) == 4

    caplog.clear()
    prepare_kafka(config_of(env))  # a second worker: nothing to create, nothing to say
    assert not [m for m in caplog.messages if "topic" in m]


def test_a_worker_that_cannot_create_its_topics_leaves_them_to_faust(
    fresh_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    prepare_kafka(config_of(ops_env("127.0.0.1:1", fresh_name)))  # nothing listens there
    assert time.monotonic() - started < 30
    assert any("topics not created before start" in m for m in caplog.messages), caplog.messages


async def test_waiting_for_topics_names_those_the_brokers_do_not_list(
    kafka_bootstrap: str, fresh_name: str
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        with pytest.raises(clients.OpsError, match=f"after 1 s: {fresh_name}-never-created$"):
            await wait_visible(admin, [f"{fresh_name}-never-created"], timeout=1.0)
    finally:
        await admin.close()


def test_tail_usage_errors_are_one_line_naming_the_fix(env: dict[str, str]) -> None:
    """No traceback: a partition the topic does not have, a negative one, and --key on a keyless topic."""
    cli(env, "topics", "create")
    missing = cli(env, "tail", "access", "--partition", "9", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"Error: topic '{env['LAZYSTREAM_TOPICS_ACCESS']}' has no partition 9 (it has 0-2)"
    ]
    negative = cli(env, "tail", "access", "--partition", "-1", check=False)
    assert negative.returncode == 2
    assert "Traceback" not in negative.stderr
    assert "-1 is not in the range x>=0" in negative.stderr
    keyed = cli(env, "tail", "access", "--key", "shop/cart", check=False)
    assert keyed.returncode == 2
    assert "access records carry no key" in keyed.stderr
