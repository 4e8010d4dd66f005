"""The worker's logic between agents and Kubernetes, without Kafka: ingest and fence computation."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from lazystream.domain import learned
from lazystream.domain.cluster import ObjectKey
from lazystream.domain.explain import Rejection, rejections_for
from lazystream.domain.resolution import ResolveOptions
from lazystream.stream import pipeline
from lazystream.stream.app import WorkerApp
from lazystream.stream.pipeline import HOSTS_LIMIT, DeadLetter, Ingest
from lazystream.testing import bookinfo, istio_text_line
from lazystream.testing.cluster import BOOKINFO_IPS

MESH = bookinfo().build()


def line(authority: str, t: float) -> bytes:
    return istio_text_line(
        authority=authority,
        upstream_cluster="inbound|80||",
        downstream_remote_address=f"{BOOKINFO_IPS['productpage']}:1",
        start_time=t,
    ).encode()


def ingest() -> Ingest:
    return Ingest(ResolveOptions(), bucket_seconds=10.0, max_record_bytes=65536)


def test_edges_are_keyed_by_fence_and_deduplicated_per_bucket() -> None:
    i = ingest()
    first = i.process(line("details", 100.0), MESH, 0.0)
    assert not isinstance(first, DeadLetter)
    assert [(e.key, orjson.loads(e.value)) for e in first] == [
        (
            b"default/productpage",
            {
                "op": "observe",
                "host": "details.default.svc.cluster.local",
                "kind": "fallback",
                "t": 100.0,
                "p": 0.0,
            },
        )
    ]
    assert i.process(line("details:9080", 105.0), MESH, 0.0) == []  # same bucket: nothing forwarded
    assert len(i.process(line("details", 111.0), MESH, 0.0)) == 1  # next bucket
    assert i.outcomes == {"learned": 3}


def test_malformed_records_become_dead_letters_with_the_original_bytes() -> None:
    i = ingest()
    out = i.process(b"\x00garbage", MESH, 0.0)
    assert isinstance(out, DeadLetter)
    assert out.value == b"\x00garbage"
    assert dict(out.headers)["lazystream-reason"] == b"unrecognised_line"
    assert i.outcomes == {"dead_letter:unrecognised_line": 1}


def test_rejections_are_counted_and_remembered_for_explain() -> None:
    i = ingest()
    assert i.process(line("evil.example.net", 1.0), MESH, 0.0) == []
    assert i.outcomes == {"rejected_not_admitted": 1}
    assert dict(i.recent_rejections) == {("default/productpage", "evil.example.net"): "rejected_not_admitted"}


def test_records_are_counted_per_source_fence_and_carry_their_kafka_time() -> None:
    i = ingest()
    (edge,) = i.process(line("details", 100.0), MESH, 123.5)
    i.process(line("evil.example.net", 100.0), MESH, 124.0)
    assert i.by_source == {ObjectKey("default", "productpage"): 2}
    assert learned.produced_time(orjson.loads(edge.value)) == 123.5
    assert learned.produced_time(learned.observe("h", "fallback", 1.0)) is None


def test_hosts_refused_at_the_fence_limit_are_counted_and_explained() -> None:
    i = ingest()
    stream = WorkerApp(None, None, None, SimpleNamespace(ingest=i), lambda key: 0)  # type: ignore[arg-type]
    fence = ObjectKey("default", "productpage")
    stream.note_host_limit(fence, ["ratings.default.svc.cluster.local"])
    assert stream.limited == {"default/productpage": 1}
    assert rejections_for(fence, i.recent_rejections) == [
        Rejection("ratings.default.svc.cluster.local", HOSTS_LIMIT)
    ]
    assert HOSTS_LIMIT == "rejected_hosts_limit"


def test_missing_event_time_falls_back_to_the_message_time() -> None:
    record = orjson.dumps(
        {
            "authority": "details",
            "upstream_cluster": "inbound|80||",
            "downstream_remote_address": "10.244.0.15:1",
        }
    )
    (edge,) = ingest().process(record, MESH, 42.0)
    assert orjson.loads(edge.value)["t"] == 42.0


def test_the_dedupe_stays_bounded_and_a_forgotten_fence_forwards_again(monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "DEDUPE_ENTRIES", 3)
    i = ingest()

    def edges(fence: str, host: str) -> int:
        edge = SimpleNamespace(fence=ObjectKey("shop", fence), host=host, kind="fallback")
        return len(i._edges(SimpleNamespace(edges=[edge]), 100.0, 0.0))  # type: ignore[arg-type]

    assert [edges("a", "h1"), edges("a", "h2"), edges("a", "h1")] == [1, 1, 0]
    assert [edges("b", "h1"), edges("b", "h2")] == [1, 1]  # four entries: fence a (least recent) goes
    assert edges("b", "h1") == 0
    assert edges("a", "h1") == 1  # forgotten, forwarded again
    for n in range(5):  # one fence alone over the bound starts over
        edges("c", f"x{n}")
    assert i._seen_entries <= 3
