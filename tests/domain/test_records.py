"""Parsing every format lazystream reads, with expectations written by hand."""

from __future__ import annotations

import orjson
import pytest

from lazystream.domain.records import (
    AccessRecord,
    ParseError,
    ParseProblem,
    PodMeta,
    RecordFormat,
    parse_record,
)
from lazystream.testing import envoy_json, fluent_bit, fluent_bit_cri, global_sidecar_record, istio_text_line

# The lazyload tutorial's line (Slime lazyload_tutorials, "首次访问观察"):
# productpage's sidecar at 172.17.0.11 calls details:9080, routed to the global-sidecar.
TUTORIAL_LINE = (
    '[2021-12-23T06:24:55.527Z] "GET /details/0 HTTP/1.1" 200 - via_upstream - "-" 0 178 12 12 "-" '
    '"curl/7.52.1" "7b9f5e1c-5d0a-9c6f-a8e4-1d6f0a2b3c4d" "details:9080" "172.17.0.10:80" '
    "outbound|9080||global-sidecar.mesh-operator.svc.cluster.local 172.17.0.11:45194 10.102.66.227:9080 "
    "172.17.0.11:40210 - -"
)
TUTORIAL_TIME = 1640240695.527  # 2021-12-23T06:24:55.527Z
# The global-sidecar's own inbound hop for the same call, Istio 1.23+ (%UPSTREAM_CLUSTER_RAW%).
INBOUND_LINE = (
    '[2024-09-10T08:00:01.250Z] "GET /details/0 HTTP/1.1" 200 - via_upstream - "-" 0 178 5 4 "-" '
    '"curl/8.5.0" "0e1d2c3b-4a59-6877-8695-a4b3c2d1e0f9" "details:9080" "10.244.0.9:80" inbound|80|| '
    "127.0.0.6:41235 10.244.0.9:80 10.244.0.15:51234 "
    "outbound_.80_._.global-sidecar.mesh-operator.svc.cluster.local default"
)
# A TCP connection in the default format.
TCP_LINE = (
    '[2024-09-10T08:00:02.000Z] "- - -" 0 - - - "-" 1024 2048 15 - "-" "-" "-" "-" "10.244.3.7:3306" '
    "outbound|3306||mysql.db.svc.cluster.local 10.244.0.15:50000 10.96.0.30:3306 10.244.0.15:49998 - -"
)


def test_the_tutorial_line() -> None:
    assert parse_record(TUTORIAL_LINE.encode()) == AccessRecord(
        format=RecordFormat.ISTIO_TEXT,
        authority="details:9080",
        upstream_cluster="outbound|9080||global-sidecar.mesh-operator.svc.cluster.local",
        downstream_remote_address="172.17.0.11:40210",
        event_time=TUTORIAL_TIME,
        response_code=200,
    )


def test_inbound_line_of_istio_1_23() -> None:
    record = parse_record(INBOUND_LINE.encode() + b"\n")
    assert isinstance(record, AccessRecord)
    assert record.upstream_cluster == "inbound|80||"
    assert record.downstream_remote_address == "10.244.0.15:51234"
    assert record.authority == "details:9080"


def test_tcp_line_has_no_authority() -> None:
    record = parse_record(TCP_LINE.encode())
    assert isinstance(record, AccessRecord)
    assert record.authority is None
    assert record.response_code == 0
    assert record.upstream_cluster == "outbound|3306||mysql.db.svc.cluster.local"


def test_fluent_bit_cri_record_with_the_raw_line_and_pod_metadata() -> None:
    message = (
        b'{"@timestamp":1640240695.527,"time":"2021-12-23T06:24:55.527712345Z","stream":"stdout","_p":"F",'
        b'"log":'
        + orjson.dumps(TUTORIAL_LINE)
        + b',"kubernetes":{"pod_name":"productpage-v1-7d6cfb7dfd-x2k8p",'
        b'"namespace_name":"default","labels":{"app":"productpage","version":"v1"},"container_name":"istio-proxy"}}'
    )
    assert parse_record(message) == AccessRecord(
        format=RecordFormat.FLUENT_BIT,
        authority="details:9080",
        upstream_cluster="outbound|9080||global-sidecar.mesh-operator.svc.cluster.local",
        downstream_remote_address="172.17.0.11:40210",
        event_time=TUTORIAL_TIME,
        response_code=200,
        pod=PodMeta("default", "productpage-v1-7d6cfb7dfd-x2k8p", {"app": "productpage", "version": "v1"}),
    )


def test_fluent_bit_record_with_parsed_fields_and_iso_timestamp() -> None:
    message = (
        b'{"@timestamp":"2021-12-23T06:24:55.527000Z","authority":"reviews:9080","response_code":"503",'
        b'"upstream_cluster":"outbound|9080||reviews.default.svc.cluster.local",'
        b'"downstream_remote_address":"172.17.0.11:40210","x_forwarded_for":"-"}'
    )
    assert parse_record(message) == AccessRecord(
        format=RecordFormat.FLUENT_BIT,
        authority="reviews:9080",
        upstream_cluster="outbound|9080||reviews.default.svc.cluster.local",
        downstream_remote_address="172.17.0.11:40210",
        event_time=TUTORIAL_TIME,
        response_code=503,
    )


def test_fluent_bit_record_whose_log_is_envoy_json() -> None:
    inner = {"authority": "ratings:9080", "upstream_cluster": "inbound|80||", "response_code": 200}
    message = orjson.dumps({"date": 1700000000.25, "log": orjson.dumps(inner).decode() + "\n"})
    record = parse_record(message)
    assert isinstance(record, AccessRecord)
    assert (record.format, record.authority, record.upstream_cluster) == (
        RecordFormat.FLUENT_BIT,
        "ratings:9080",
        "inbound|80||",
    )
    assert record.event_time == 1700000000.25


def test_envoy_json_with_numbers_and_nulls() -> None:
    message = (
        b'{"start_time":"2024-09-10T08:00:01.250Z","authority":"details:9080","response_code":200,'
        b'"bytes_sent":178,"x_forwarded_for":null,"upstream_cluster":"outbound|9080||details.default.svc.cluster.local",'
        b'"downstream_remote_address":"10.244.0.15:51234","requested_server_name":null}'
    )
    assert parse_record(message) == AccessRecord(
        format=RecordFormat.ENVOY_JSON,
        authority="details:9080",
        upstream_cluster="outbound|9080||details.default.svc.cluster.local",
        downstream_remote_address="10.244.0.15:51234",
        event_time=1725955201.25,
        response_code=200,
    )


def test_global_sidecar_records_direct_and_through_fluent_bit() -> None:
    body = global_sidecar_record(
        authority="details:9080",
        peer_address="10.244.0.15:51234",
        source_namespace="default",
        peer_principal="spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        time=1700000000.0,
    )
    expected = AccessRecord(
        format=RecordFormat.GLOBAL_SIDECAR,
        authority="details:9080",
        downstream_remote_address="10.244.0.15:51234",
        event_time=1700000000.0,
        response_code=200,
        source_namespace="default",
        peer_principal="spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        original_destination="10.96.0.20:9080",
    )
    assert parse_record(orjson.dumps(body)) == expected
    # Fluent Bit's forward input then Kafka output: its own timestamp first, which wins.
    wrapped = parse_record(fluent_bit(body, timestamp=1700000001.5))
    assert wrapped == expected._replace(event_time=1700000001.5)
    # Fluent Bit's tail of the proxy's standard output, JSON line left unparsed in "log", pod metadata on
    cri = {
        "time": "2023-11-14T22:13:21.5Z",
        "stream": "stdout",
        "_p": "F",
        "log": orjson.dumps(body).decode(),
        "kubernetes": {"namespace_name": "mesh-operator", "pod_name": "global-sidecar-0", "labels": {}},
    }
    tailed = parse_record(fluent_bit(cri, timestamp=1700000001.5))
    assert tailed == expected._replace(event_time=1700000001.5)


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (b"", ParseProblem.EMPTY),
        (b"   \n", ParseProblem.EMPTY),
        (b"x" * 70000, ParseProblem.TOO_LARGE),
        (b'{"authority": "a",', ParseProblem.INVALID_JSON),
        (b'{"authority": "a"}}', ParseProblem.INVALID_JSON),
        (b"[1, 2, 3]", ParseProblem.NOT_AN_OBJECT),
        (b'{"hello": "world"}', ParseProblem.UNKNOWN_FORMAT),
        (b"\xff\xfe\x00garbage", ParseProblem.NOT_UTF8),
        (b"GET / HTTP/1.1 200", ParseProblem.UNRECOGNISED_LINE),
        (TUTORIAL_LINE.encode()[:120], ParseProblem.UNRECOGNISED_LINE),
        (b'{"authority": "details:9080"}', ParseProblem.MISSING_FIELDS),
        (b'{"@timestamp": 1.0, "stream": "stdout"}', ParseProblem.MISSING_FIELDS),
        (b'{"@timestamp": "yesterday", "log": "x"}', ParseProblem.BAD_FIELD),
        (b'{"@timestamp": true, "log": "x"}', ParseProblem.BAD_FIELD),
        (b'{"@timestamp": 1.0, "log": "{not json"}', ParseProblem.INVALID_JSON),
        (b'{"@timestamp": 1.0, "log": "nonsense"}', ParseProblem.UNRECOGNISED_LINE),
        (b'{"@timestamp": 1.0, "kubernetes": "pod", "log": "x"}', ParseProblem.BAD_FIELD),
        (b'{"@timestamp": 1.0, "kubernetes": {"pod_name": 3}, "log": "x"}', ParseProblem.BAD_FIELD),
        (b'{"authority": 42, "upstream_cluster": "inbound|80||"}', ParseProblem.BAD_FIELD),
        (
            b'{"authority": "a", "upstream_cluster": "inbound|80||", "response_code": "2xx"}',
            ParseProblem.BAD_FIELD,
        ),
        (b'{"lazystream": "global-sidecar/v1", "authority": "a"}', ParseProblem.MISSING_FIELDS),
        (
            b'{"lazystream": "global-sidecar/v1", "authority": "a", "peer_address": ["x"]}',
            ParseProblem.BAD_FIELD,
        ),
    ],
)
def test_malformed_messages_have_a_reason(message: bytes, problem: ParseProblem) -> None:
    result = parse_record(message)
    assert isinstance(result, ParseError)
    assert result.problem is problem
    assert str(result).startswith(problem.value)


def test_size_limit_is_configurable() -> None:
    line = istio_text_line().encode()
    assert isinstance(parse_record(line, max_bytes=len(line)), AccessRecord)
    assert parse_record(line, max_bytes=len(line) - 1) == ParseError(
        ParseProblem.TOO_LARGE, f"{len(line)} bytes > {len(line) - 1}"
    )


def test_kit_records_round_trip_through_the_parser() -> None:
    """The testing kit's builders produce what the parser reads, in each format."""
    for message in (
        istio_text_line(authority="ratings:9080").encode(),
        envoy_json(authority="ratings:9080"),
        fluent_bit_cri(istio_text_line(authority="ratings:9080")),
        fluent_bit_cri(istio_text_line(authority="ratings:9080"), parsed=True),
    ):
        record = parse_record(message)
        assert isinstance(record, AccessRecord), message
        assert record.authority == "ratings:9080"
        assert record.event_time == 1764237600.5
    first_key = next(iter(orjson.loads(fluent_bit_cri(istio_text_line()))))
    assert first_key == "@timestamp"
