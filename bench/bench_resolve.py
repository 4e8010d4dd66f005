"""Parse + resolve throughput on a fixed corpus, against bare ``orjson.loads`` of the same records.

The corpus is the bookinfo-like mesh of ``lazystream.testing`` with the four record formats mixed (Istio
text lines, Envoy JSON, Fluent Bit Kafka JSON with raw and parsed lines and pod metadata, lazystream's
global-sidecar records), 80 % calls to known services in several spellings and 20 % hostile or unknown
hosts. The baseline decodes every record with ``orjson.loads``; text lines, which are not JSON, are fed to
it as JSON strings (two bytes longer). Target: ratio ≥ 0.25 (parse+resolve at least a quarter as fast as
decoding alone).
"""

from __future__ import annotations

import random

import orjson

from bench.harness import Comparison, compare
from lazystream.domain.records import AccessRecord, parse_record
from lazystream.domain.resolution import ResolveOptions, resolve
from lazystream.testing import bookinfo, envoy_json, fluent_bit_cri, global_sidecar_record, istio_text_line
from lazystream.testing.cluster import BOOKINFO_IPS

GS = "outbound|9080||global-sidecar.mesh-operator.svc.cluster.local"
KNOWN = [
    "details:9080",
    "reviews",
    "ratings.default",
    "reviews.default.svc:9080",
    "api.example.com",
    "www.example.org",
]
HOSTILE = ["evil.com", "10.0.0.1", "-", "x" * 300, "ünicode.com", "random-1234.net"]


def corpus(size: int = 2000, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)  # noqa: S311 - a reproducible corpus, not a secret
    ips = list(BOOKINFO_IPS.values())
    out = []
    for i in range(size):
        authority = rng.choice(KNOWN) if rng.random() < 0.8 else rng.choice(HOSTILE)
        peer = f"{rng.choice(ips)}:{rng.randrange(30000, 60000)}"
        kind = i % 5
        if kind == 0:
            out.append(
                istio_text_line(
                    authority=authority, upstream_cluster="inbound|80||", downstream_remote_address=peer
                ).encode()
            )
        elif kind == 1:
            out.append(envoy_json(authority=authority, upstream_cluster=GS, downstream_remote_address=peer))
        elif kind == 2:
            out.append(fluent_bit_cri(istio_text_line(authority=authority, upstream_cluster=GS)))
        elif kind == 3:
            out.append(fluent_bit_cri(istio_text_line(authority=authority, upstream_cluster=GS), parsed=True))
        else:
            out.append(orjson.dumps(global_sidecar_record(authority=authority, peer_address=peer)))
    return out


def run(quick: bool = False) -> Comparison:
    records = corpus(200 if quick else 2000)
    baseline_input = [r if r[:1] == b"{" else orjson.dumps(r.decode()) for r in records]
    cluster = bookinfo().build()
    options = ResolveOptions()

    def decode_only() -> None:
        for data in baseline_input:
            orjson.loads(data)

    def parse_and_resolve() -> None:
        for data in records:
            record = parse_record(data)
            if isinstance(record, AccessRecord):
                resolve(record, cluster, options)

    calls, rounds = (1, 3) if quick else (5, 9)
    return compare(
        "records/s ratio (parse+resolve / orjson.loads)",
        decode_only,
        parse_and_resolve,
        calls=calls,
        rounds=rounds,
    )


if __name__ == "__main__":
    result = run()
    n = len(corpus())
    print(f"orjson.loads:     {n / result.baseline_s:12,.0f} records/s")
    print(f"parse + resolve:  {n / result.candidate_s:12,.0f} records/s")
    print(f"ratio: {result.speedup:.3f} (target >= 0.25)")
