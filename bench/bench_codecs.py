"""Decoding access-log records: orjson (lazystream's codec) against the standard library's json.

Why: the ingest agent decodes every record on the access topic, so the codec is on the hot path.
"""

from __future__ import annotations

import json

import orjson

from bench.harness import Comparison, compare

RECORD = json.dumps(
    {
        "@timestamp": 1764237600.123,
        "authority": "details.default.svc.cluster.local:9080",
        "upstream_cluster": "outbound|9080||details.default.svc.cluster.local",
        "downstream_remote_address": "10.244.0.15:51234",
        "response_code": 200,
        "kubernetes": {"namespace_name": "default", "pod_name": "productpage-v1-5d9b4c9849-abcde"},
    }
).encode()


def run(quick: bool = False) -> Comparison:
    calls, rounds = (200, 3) if quick else (20_000, 15)
    return compare(
        "decode access record",
        lambda: json.loads(RECORD),
        lambda: orjson.loads(RECORD),
        calls=calls,
        rounds=rounds,
    )


if __name__ == "__main__":
    print(run())
