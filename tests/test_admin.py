"""The admin HTTP API, served for real (aiohttp on a free port) with real hooks: resets go onto a real edges
topic on the real Kafka, where a consumer applies them as the table agent does; explain runs the domain core
over a cluster view; the ``lazystream explain`` command is run as a process against the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from lazystream.admin import AdminHooks, AdminServer, cache_explainer, cache_fences_in, create_admin_app
from lazystream.domain import learned
from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.domain.fences import FenceOptions
from lazystream.runtime import memory
from lazystream.testing import ClusterBuilder
from tests.fixtures.kafka import TopicFactory

NOW = 1_800_000_000.0
DETAILS = "details.default.svc.cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"


@dataclass
class View:
    """A cluster view as the watch cache offers it: state and fences behind a lock."""

    state: ClusterState
    fences: dict[ObjectKey, dict[str, Any]]
    lock: threading.RLock = field(default_factory=threading.RLock)

    def reading(self) -> contextlib.AbstractContextManager[Any]:
        return self.lock

    def fence(self, key: ObjectKey) -> dict[str, Any] | None:
        return self.fences.get(key)


def view() -> View:
    builder = ClusterBuilder()
    for name in ("productpage", "details", "reviews", "ratings"):
        builder.service(name)
    builder.fence("productpage", workloadSelector={"fromService": True})
    builder.fence("ratings", host={DETAILS: {"stable": {}}})
    builder.fence("other", "elsewhere")
    fences = {
        ObjectKey(o["metadata"]["namespace"], o["metadata"]["name"]): o
        for o in builder.objects()
        if o["kind"] == "ServiceFence"
    }
    return View(builder.build(), fences)


class Table:
    """Learned state as the table agent keeps it: fence key -> encoded state, changed only by edge messages
    read from the edges topic (here by a plain consumer applying them with the same domain code)."""

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}
        self.applied = 0

    def apply(self, key: bytes, value: bytes) -> None:
        state = learned.decode_state(self.values.get(key))
        new = learned.apply(state, orjson.loads(value), 10.0)
        if new is not None:
            self.values[key] = learned.encode_state(new)
        self.applied += 1

    def state(self, key: ObjectKey) -> learned.LearnedState | None:
        return learned.decode_state(self.values.get(learned.fence_key(key)))


@dataclass
class Harness:
    server: AdminServer
    session: aiohttp.ClientSession
    table: Table
    topic: str
    ready: dict[str, bool]
    rejections: OrderedDict[tuple[str, str], str]

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.server.url + path) as response:
            return response.status, await response.json()

    async def post(self, path: str) -> tuple[int, Any]:
        async with self.session.post(self.server.url + path) as response:
            return response.status, await response.json()

    async def settle(self, count: int, timeout: float = 20.0) -> None:
        """Wait until the consumer has applied ``count`` messages in all."""
        async with asyncio.timeout(timeout):
            while self.table.applied < count:
                await asyncio.sleep(0.05)


@pytest.fixture
async def harness(kafka_bootstrap: str, new_topic: TopicFactory) -> AsyncIterator[Harness]:
    topic = await new_topic(partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await producer.start()
    await consumer.start()
    table = Table()

    async def send_edge(key: ObjectKey, message: Any) -> None:
        await producer.send_and_wait(topic, orjson.dumps(message), key=learned.fence_key(key))

    async def consume() -> None:
        async for record in consumer:
            table.apply(record.key, record.value)

    consuming = asyncio.create_task(consume())
    cluster = view()
    ready = {"cachesSynced": True, "appRunning": False}
    rejections: OrderedDict[tuple[str, str], str] = OrderedDict()
    hooks = AdminHooks(
        send_edge=send_edge,
        fences_in=cache_fences_in(cluster),
        explain=cache_explainer(
            cluster,
            learned_state=table.state,
            recent_rejections=lambda: rejections,
            options=FenceOptions(),
            clock=lambda: NOW,
        ),
        ready={name: (lambda name=name: ready[name]) for name in ready},
        clock=lambda: NOW,
        memory=lambda deep, trim: {
            **memory.report(do_trim=trim),
            **({"structures": {"x": 1}} if deep else {}),
        },
    )
    server = AdminServer(create_admin_app(hooks), "127.0.0.1", 0)
    await server.start()
    session = aiohttp.ClientSession()
    try:
        yield Harness(server, session, table, topic, ready, rejections)
    finally:
        await session.close()
        await server.stop()
        consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consuming
        await consumer.stop()
        await producer.stop()


@pytest.mark.kafka
async def test_health_and_readiness(harness: Harness) -> None:
    assert await harness.get("/healthz") == (200, {"status": "ok"})
    status, body = await harness.get("/readyz")
    assert (status, body) == (503, {"ready": False, "checks": {"cachesSynced": True, "appRunning": False}})
    harness.ready["appRunning"] = True
    assert (await harness.get("/readyz"))[0] == 200


@pytest.mark.kafka
async def test_reset_of_a_fence_is_a_reset_message_on_the_edges_topic(
    harness: Harness, kafka_bootstrap: str
) -> None:
    productpage = ObjectKey("default", "productpage")
    ratings = ObjectKey("default", "ratings")
    # learned state, through the topic, for two fences
    async with _producer(kafka_bootstrap) as producer:
        for key, host, t in (
            (productpage, DETAILS, NOW - 100),
            (productpage, REVIEWS, NOW - 50),
            (ratings, REVIEWS, NOW),
        ):
            await producer.send_and_wait(
                harness.topic, orjson.dumps(learned.observe(host, "fallback", t)), key=learned.fence_key(key)
            )
    await harness.settle(3)
    status, body = await harness.get("/fences/default/productpage/explain")
    assert status == 200
    hosts = {h["host"]: h for h in body["hosts"]}
    assert hosts[DETAILS]["count"] == 1
    assert hosts[DETAILS]["firstSeen"] == "2027-01-15T07:58:20.000Z"
    assert [w["reason"] for w in hosts[REVIEWS]["why"]] == ["learned"]

    assert await harness.post("/fences/default/productpage/reset") == (
        202,
        {"reset": ["default/productpage"]},
    )
    await harness.settle(4)
    # the message on Kafka: keyed by the fence, op reset
    records = await _read_all(kafka_bootstrap, harness.topic)
    resets = [(k, v) for k, v in records if v["op"] == "reset"]
    assert resets == [(b"default/productpage", {"op": "reset", "t": NOW})]
    # applied: the fence forgot what it learned, the other fence did not
    body = (await harness.get("/fences/default/productpage/explain"))[1]
    assert {DETAILS, REVIEWS}.isdisjoint(h["host"] for h in body["hosts"])
    body = (await harness.get("/fences/default/ratings/explain"))[1]
    assert REVIEWS in {h["host"] for h in body["hosts"]}


@pytest.mark.kafka
async def test_reset_of_a_namespace_and_slime_endpoint(harness: Harness, kafka_bootstrap: str) -> None:
    status, body = await harness.post("/namespaces/default/reset")
    assert (status, body) == (202, {"reset": ["default/productpage", "default/ratings"]})
    status, body = await harness.get("/lazyload/debug/svfReset?ns=elsewhere&name=other")
    assert (status, body) == (202, {"reset": ["elsewhere/other"]})
    await harness.settle(3)
    keys = sorted(k for k, v in await _read_all(kafka_bootstrap, harness.topic) if v["op"] == "reset")
    assert keys == [b"default/productpage", b"default/ratings", b"elsewhere/other"]


@pytest.mark.kafka
async def test_unknown_fences_and_bad_requests(harness: Harness) -> None:
    assert (await harness.post("/fences/default/nope/reset"))[0] == 404
    assert (await harness.get("/fences/default/nope/explain"))[0] == 404
    assert (await harness.get("/lazyload/debug/svfReset"))[0] == 400
    assert (await harness.get("/lazyload/debug/svfReset?ns=default&name=nope"))[0] == 404
    assert await harness.post("/namespaces/empty/reset") == (
        404,
        {"error": "no ServiceFences in namespace empty"},
    )
    assert harness.table.applied == 0  # nothing was sent


@pytest.mark.kafka
async def test_explain_lists_recent_rejections_and_the_cli_prints_them(harness: Harness) -> None:
    harness.rejections[("default/productpage", "evil.example.com")] = "rejected_not_admitted"
    harness.rejections[("default/ratings", "x.example.com")] = "rejected_not_admitted"
    status, body = await harness.get("/fences/default/productpage/explain")
    assert status == 200
    assert body["rejected"] == [{"host": "evil.example.com", "reason": "rejected_not_admitted"}]

    table = await _cli("explain", "default/ratings", "--admin-url", harness.server.url)
    lines = table.splitlines()
    assert lines[0] == (
        f"ServiceFence default/ratings (enabled, manual; learned state with times; from {harness.server.url})"
    )
    assert lines[1].split() == ["HOST", "STATUS", "SIDECAR", "WHY", "FIRST", "SEEN", "LAST", "SEEN", "COUNT"]
    assert any(line.startswith(DETAILS) and "static" in line for line in lines)
    assert max(map(len, lines)) <= 120  # no details by default: a table that fits a terminal
    wide = await _cli("explain", "default/ratings", "--wide", "--admin-url", harness.server.url)
    assert any(line.startswith(DETAILS) and "spec.host (stable)" in line for line in wide.splitlines())
    assert "x.example.com" in table
    assert "rejected_not_admitted" in table
    as_json = json.loads(
        await _cli("explain", "default/ratings", "-o", "json", "--admin-url", harness.server.url)
    )
    assert as_json == (await harness.get("/fences/default/ratings/explain"))[1]
    error = await _cli("explain", "default/nope", "--admin-url", harness.server.url, expect=1)
    assert "no ServiceFence default/nope" in error
    reset = await _cli("reset", "default", "--admin-url", harness.server.url)
    assert reset.strip() == "reset 2 fence(s): default/productpage, default/ratings"


async def _cli(*args: str, expect: int = 0) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lazystream",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == expect, out.decode()
    return out.decode()


@contextlib.asynccontextmanager
async def _producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str) -> list[tuple[bytes, dict[str, Any]]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        out: list[tuple[bytes, dict[str, Any]]] = []
        while True:
            batches = await consumer.getmany(timeout_ms=2000)
            if not batches:
                return out
            for records in batches.values():
                out += [(r.key, orjson.loads(r.value)) for r in records]
    finally:
        await consumer.stop()


@pytest.mark.kafka
async def test_memory_report(harness: Harness) -> None:
    status, body = await harness.get("/debug/memory?deep=1")
    assert status == 200
    assert body["process"]["rss"] > 0
    assert body["structures"] == {"x": 1}
    status, body = await harness.get("/debug/memory?trim=1")
    assert status == 200
    assert "structures" not in body
    assert "before_trim" in body or not memory.allocator()


async def test_a_sweep_on_demand_reports_what_it_scheduled_or_why_not() -> None:
    answers: list[int | None] = [None, 7]
    pending = [7, 0]

    async def no_edges(key: ObjectKey, message: Any) -> None:
        raise AssertionError("a sweep sends nothing to the edges topic")

    def hooks(sweep: Any, sweep_pending: Any) -> AdminHooks:
        return AdminHooks(
            send_edge=no_edges,
            fences_in=lambda ns: [],
            explain=lambda key: None,
            sweep=sweep,
            sweep_pending=sweep_pending,
        )

    async with aiohttp.ClientSession() as session:
        for app_hooks, expected in (
            (
                hooks(lambda: answers.pop(0), lambda: pending.pop(0)),
                [
                    ("post", 503, "cannot be read"),
                    ("post", 202, {"scheduled": 7}),
                    ("get", 200, {"pending": 7}),
                    ("get", 200, {"pending": 0}),
                ],
            ),
            # e.g. a process other than a worker
            (hooks(None, None), [("post", 404, "sweeps no fences"), ("get", 404, "sweeps no fences")]),
        ):
            server = AdminServer(create_admin_app(app_hooks), "127.0.0.1", 0)
            await server.start()
            try:
                for method, status, body in expected:
                    async with session.request(method, server.url + "/sweep") as response:
                        assert response.status == status
                        got = await response.json()
                    assert got == body if isinstance(body, dict) else body in got["error"]
            finally:
                await server.stop()
    assert answers == pending == []
