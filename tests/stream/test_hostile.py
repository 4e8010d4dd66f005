"""The hostile-record generator, and the ingest over its records without servers: nothing raises, every
unparseable record is a dead letter with the reason parse_record gives, no hostile host becomes an edge."""

from __future__ import annotations

from collections import Counter

import orjson

from lazystream.domain.resolution import ResolveOptions
from lazystream.stream.pipeline import DeadLetter, Ingest
from lazystream.testing import ClusterBuilder
from lazystream.testing.hostile import KINDS, HostileRecords, expected_dead_letters, hostile_records

NS = "shop"
IPS = ["10.250.0.10", "10.250.0.11"]
TARGETS = ["target-0", "target-1"]


def cluster():
    builder = ClusterBuilder()
    for i, ip in enumerate(IPS):
        builder.service(f"caller-{i}", NS, ips=[ip]).fence(
            f"caller-{i}", NS, workloadSelector={"fromService": True}
        )
    for name in TARGETS:
        builder.service(name, NS)
    return builder.build()


def test_the_generator_is_seeded_and_covers_every_kind() -> None:
    a = hostile_records(3000, sources=IPS, admitted=TARGETS, namespace=NS, seed=3)
    b = hostile_records(3000, sources=IPS, admitted=TARGETS, namespace=NS, seed=3)
    assert a == b
    assert a != hostile_records(3000, sources=IPS, admitted=TARGETS, namespace=NS, seed=4)
    gen = HostileRecords(sources=IPS, admitted=TARGETS, namespace=NS, seed=3)
    list(gen.take(3000))
    assert set(gen.kinds) == set(KINDS)
    assert any(len(r) > 65536 for r in a)
    reasons = expected_dead_letters(a)
    assert {"too_large", "invalid_json", "not_utf8", "bad_field", "unrecognised_line"} <= set(reasons)


def test_the_ingest_survives_hostile_records_and_learns_only_admitted_hosts() -> None:
    state = cluster()
    ingest = Ingest(ResolveOptions(), bucket_seconds=10.0, max_record_bytes=65536)
    records = hostile_records(20_000, sources=IPS, admitted=TARGETS, namespace=NS, seed=5)
    dead: Counter[str] = Counter()
    hosts = set()
    for data in records:
        out = ingest.process(data, state, 1.0)
        if isinstance(out, DeadLetter):
            assert out.value == data
            dead[dict(out.headers)["lazystream-reason"].decode()] += 1
        else:
            hosts |= {orjson.loads(e.value)["host"] for e in out}
    assert dead == expected_dead_letters(records)
    assert hosts == {f"{t}.{NS}.svc.cluster.local" for t in TARGETS}
    assert ingest.outcomes["rejected_not_admitted"] > 1000
    assert ingest.outcomes["ignored_ip_authority"] > 100
