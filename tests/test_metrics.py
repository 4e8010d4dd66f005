"""The worker's metrics over stand-in worker parts: every listed metric is exposed with the counters' values,
the latency tracker meets learned hosts with Sidecar writes, and ``/metrics`` is served for real on the admin
API's aiohttp app."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from lazystream.admin import AdminHooks, AdminServer, create_admin_app
from lazystream.domain.cluster import ObjectKey
from lazystream.metrics import (
    METRICS,
    LatencyTracker,
    add_metrics_route,
    exposed_names,
    latency_tracker,
    sidecar_hosts,
    worker_metrics,
)
from lazystream.stream.clienterrors import KafkaErrors
from lazystream.stream.ingest import IngestProgress

SHOP = ObjectKey("shop", "web")
OTHER = ObjectKey("shop", "api")


@dataclass
class Cache:
    fences: dict[ObjectKey, dict[str, Any]]
    lock: threading.RLock = field(default_factory=threading.RLock)
    errors_total: Counter[str] = field(default_factory=lambda: Counter({"Service": 2}))

    def reading(self) -> contextlib.AbstractContextManager[Any]:
        return self.lock


def stand_in_worker() -> Any:
    """The parts of a Worker the metrics read, with known values."""

    async def lag() -> int:
        return 42

    ingest = SimpleNamespace(
        outcomes=Counter(
            {
                "learned": 5,
                "ignored_ip_authority": 2,
                "held_no_fence": 1,
                "rejected_not_admitted": 3,
                "dead_letter:invalid_json": 4,
                "dead_letter:too_large": 1,
            }
        ),
        by_source=Counter({ObjectKey("shop", "web"): 9}),
    )
    progress = IngestProgress(records=16, batches=2, edges_sent=5, dead_letters_sent=5)
    kafka_errors = KafkaErrors()
    for _ in range(3):
        kafka_errors.note("connection", client="ingest")
    kafka_errors.note("send", client="faust")
    stream = SimpleNamespace(
        ingest=ingest,
        access=SimpleNamespace(progress=progress, lag=lag),
        counters=Counter(
            {
                "table:written": 3,
                "table:unchanged": 1,
                "hosts:limit": 2,
                "hosts:learned": 3,
                "hosts:seeded": 7,
            }
        ),
        limited=Counter({"shop/web": 2}),
        edges_read_again=1,
        kafka_errors=kafka_errors,
        owns=lambda key: key == SHOP,
    )
    controller = SimpleNamespace(
        writes_total=Counter({"sidecar:applied": 2, "status:unchanged": 1, "error:403": 1}),
        queue=SimpleNamespace(in_flight=0),
        sweep_pending=4,
    )
    return SimpleNamespace(
        stream=stream,
        sink=SimpleNamespace(on_applied=None),
        controller=controller,
        cache=Cache({SHOP: {}, OTHER: {}, ObjectKey("kube-system", "x"): {}}),
        in_scope=lambda key: key.namespace != "kube-system",
        config=SimpleNamespace(topics=SimpleNamespace(access="access")),
        computer=SimpleNamespace(
            left_out={
                SHOP: {
                    "reviews": "a short name (Istio accepts only fully qualified names); its FQDN is listed"
                },
                OTHER: {"x_y.example.com": "label 'x_y' is not a DNS-1123 label", "a": "a short name (...)"},
            }
        ),
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_every_listed_metric_is_exposed_with_the_counters_values() -> None:
    worker = stand_in_worker()
    latency = latency_tracker()
    metrics = worker_metrics(worker, latency)
    assert metrics.latency is latency
    await metrics.refresh()
    text = metrics.render().decode()
    got = samples(text)
    names = {name for name, _ in got}
    assert exposed_names() <= names | {"lazystream_produce_to_sidecar_seconds_bucket"}
    assert {n for n in names if n.startswith("lazystream_")} <= exposed_names()
    assert got[("lazystream_access_records_total", ())] == 16
    assert got[("lazystream_records_learned_total", ())] == 5
    assert got[("lazystream_records_ignored_total", (("reason", "ip_authority"),))] == 2
    assert got[("lazystream_records_held_total", (("reason", "no_fence"),))] == 1
    assert got[("lazystream_records_rejected_total", (("reason", "not_admitted"),))] == 3
    assert got[("lazystream_records_dead_lettered_total", (("reason", "invalid_json"),))] == 4
    assert got[("lazystream_hosts_learned_total", (("via", "observation"),))] == 3
    assert got[("lazystream_hosts_learned_total", (("via", "seed"),))] == 7
    assert got[("lazystream_edge_messages_total", (("result", "hosts_limit"),))] == 2
    assert got[("lazystream_edges_read_again_total", ())] == 1
    assert got[("lazystream_sweep_fences_pending", ())] == 4
    assert got[("lazystream_sidecar_hosts_left_out", (("reason", "short_name"),))] == 2
    assert got[("lazystream_sidecar_hosts_left_out", (("reason", "invalid"),))] == 1
    assert got[("lazystream_fence_hosts_limit_total", (("fence", "web"), ("namespace", "shop")))] == 2
    assert got[("lazystream_fallback_records_total", (("fence", "web"), ("namespace", "shop")))] == 9
    assert got[("lazystream_fences", ())] == 2
    assert got[("lazystream_fences_owned", ())] == 1
    assert got[("lazystream_api_writes_total", (("kind", "sidecar"), ("outcome", "applied")))] == 2
    assert got[("lazystream_api_errors_total", (("error", "403"),))] == 1
    assert got[("lazystream_consumer_lag", (("topic", "access"),))] == 42
    assert got[("lazystream_api_watch_errors_total", (("kind", "Service"),))] == 2
    assert got[("lazystream_kafka_errors_total", (("client", "ingest"), ("error", "connection")))] == 3
    assert got[("lazystream_kafka_errors_total", (("client", "faust"), ("error", "send")))] == 1
    assert got[("process_resident_memory_bytes", ())] > 0
    for name in METRICS:  # every listed family has its help text
        assert f"# HELP {name} " in text, name


def tracker(now: list[float]) -> tuple[LatencyTracker, Histogram]:
    histogram = Histogram("t_seconds", "test", buckets=(1.0, 5.0), registry=CollectorRegistry())
    return LatencyTracker(histogram, clock=lambda: now[0]), histogram


def observed(histogram: Histogram) -> tuple[float, float]:
    values = {s.name: s.value for s in next(iter(histogram.collect())).samples if not s.labels}
    return values["t_seconds_count"], values["t_seconds_sum"]


def sidecar(*hosts: str) -> dict[str, Any]:
    return {"spec": {"egress": [{"hosts": ["istio-system/*", *(f"*/{h}" for h in hosts)]}]}}


def test_latency_is_observed_when_the_first_sidecar_listing_the_host_is_written() -> None:
    now = [100.0]
    track, histogram = tracker(now)
    track.learned(SHOP, ["a.shop.svc", "b.shop.svc"], produced=97.5)
    track.learned(SHOP, ["c.shop.svc"], produced=None)  # a seed: nothing to measure
    track.applied(SHOP, "status", {"domains": {"a.shop.svc": {}}})  # not a Sidecar
    track.applied(OTHER, "sidecar", sidecar("a.shop.svc"))  # another fence's Sidecar
    assert observed(histogram) == (0, 0)
    track.applied(SHOP, "sidecar", sidecar("a.shop.svc"))
    assert observed(histogram) == (1, 2.5)
    now[0] = 101.0
    track.applied(SHOP, "sidecar", sidecar("a.shop.svc", "b.shop.svc"))  # a: already observed
    assert observed(histogram) == (2, 6.0)
    assert not track.pending


def test_pending_hosts_are_bounded(monkeypatch) -> None:
    from lazystream import metrics

    monkeypatch.setattr(metrics, "PENDING_HOSTS", 3)
    track, histogram = tracker([10.0])
    track.learned(SHOP, [f"h{i}" for i in range(5)], produced=1.0)
    assert list(track.pending) == [(SHOP, "h2"), (SHOP, "h3"), (SHOP, "h4")]
    track.applied(SHOP, "sidecar", sidecar("h0", "h4"))
    assert observed(histogram) == (1, 9.0)


def test_sidecar_hosts_strip_the_namespace_part() -> None:
    assert sidecar_hosts(sidecar("a.b.svc")) == {"*", "a.b.svc"}
    assert sidecar_hosts({"spec": {}}) == set()


async def test_metrics_are_served_on_the_admin_app() -> None:
    metrics = worker_metrics(stand_in_worker(), latency_tracker())

    async def send_edge(key: ObjectKey, message: Any) -> None:
        return None

    app = create_admin_app(AdminHooks(send_edge=send_edge, fences_in=lambda ns: [], explain=lambda k: None))
    add_metrics_route(app, metrics)
    server = AdminServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{server.url}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=")
            body = await resp.text()
    finally:
        await server.stop()
    assert samples(body)[("lazystream_consumer_lag", (("topic", "access"),))] == 42
