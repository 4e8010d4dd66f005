"""Property tests: hostile input never raises and never admits an unknown host; known hosts are admitted
in every spelling."""

from __future__ import annotations

import json

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lazystream.domain.cluster import ClusterState
from lazystream.domain.hosts import HostProblem, is_dns_name, normalize_authority
from lazystream.domain.records import AccessRecord, ParseError, parse_record
from lazystream.domain.resolution import Outcome, ResolveOptions, admitted, resolve
from lazystream.testing import bookinfo, envoy_json, fluent_bit_cri, global_sidecar_record, istio_text_line

MESH: ClusterState = bookinfo().build()
OPTIONS = ResolveOptions()
GS = "outbound|9080||global-sidecar.mesh-operator.svc.cluster.local"

# Hosts a hostile client might send: random text, near-misses of real names, IPs, unicode, huge values.
hostile_authorities = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._:*[]/\\ \n\t\x00é", max_size=80),
    st.from_regex(r"[a-z]{1,10}(\.[a-z]{1,10}){0,5}(:[0-9]{1,5})?", fullmatch=True),
    st.ip_addresses().map(str),
    st.sampled_from(["details.evil.com", "example.com", "x.example.com.evil", "reviews.default.svc.evil"]),
    st.text(min_size=1000, max_size=5000),
)


def records_with(authority: str) -> list[bytes]:
    """The same call in every format lazystream reads."""
    return [
        istio_text_line(authority=authority.replace('"', ""), upstream_cluster=GS).encode(),
        envoy_json(authority=authority, upstream_cluster="inbound|80||"),
        fluent_bit_cri(istio_text_line(authority=authority.replace('"', ""), upstream_cluster=GS)),
        orjson.dumps(global_sidecar_record(authority=authority)),
    ]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    result = parse_record(data)
    assert isinstance(result, AccessRecord | ParseError)
    if isinstance(result, AccessRecord):
        resolve(result, MESH, OPTIONS)


@settings(max_examples=300)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=20,
    )
)
def test_arbitrary_json_never_raises(value: object) -> None:
    for data in (
        json.dumps(value).encode(),  # the standard library writes big integers and NaN too
        json.dumps({"@timestamp": 1.0, "authority": value, "upstream_cluster": value}).encode(),
    ):
        result = parse_record(data)
        if isinstance(result, AccessRecord):
            resolve(result, MESH, OPTIONS)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "authority",
                "upstream_cluster",
                "downstream_remote_address",
                "response_code",
                "kubernetes",
                "log",
                "x_forwarded_for",
                "peer_address",
                "lazystream",
            ]
        ),
        st.one_of(
            st.none(),
            st.text(max_size=50),
            st.integers(),
            st.lists(st.text(max_size=5), max_size=3),
            st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
            st.just("global-sidecar/v1"),
        ),
    )
)
def test_field_type_confusion_never_raises(fields: dict) -> None:
    for data in (json.dumps(fields).encode(), json.dumps({"@timestamp": 1.0, **fields}).encode()):
        result = parse_record(data)
        if isinstance(result, AccessRecord):
            resolve(result, MESH, OPTIONS)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_authorities)
def test_hostile_authorities_never_admit_an_unknown_host(authority: str) -> None:
    for data in records_with(authority):
        record = parse_record(data)
        if not isinstance(record, AccessRecord):
            continue
        result = resolve(record, MESH, OPTIONS)
        for edge in result.edges:
            assert is_dns_name(edge.host)
            assert admitted(edge.host, MESH), edge.host


KNOWN = [
    ("details", "default", "details.default.svc.cluster.local"),
    ("ratings", "default", "ratings.default.svc.cluster.local"),
    ("reviews-v2", "default", "reviews-v2.default.svc.cluster.local"),
    ("global-sidecar", "mesh-operator", None),  # exists, but is never a dependency
]


def spellings(name: str, namespace: str) -> list[str]:
    return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]


@settings(max_examples=200)
@given(
    st.sampled_from(KNOWN),
    st.integers(0, 3),
    st.booleans(),
    st.one_of(st.none(), st.integers(1, 65535)),
    st.booleans(),
)
def test_known_hosts_are_admitted_in_every_spelling(
    known, spelling: int, upper: bool, port, trailing_dot: bool
) -> None:
    name, namespace, fqdn = known
    host = spellings(name, namespace)[spelling]
    if namespace != "default" and spelling == 0:
        host = f"{name}.{namespace}"  # a single label resolves in the caller's namespace
    if trailing_dot:
        host += "."
    if upper:
        host = host.upper()
    if port is not None:
        host = f"{host}:{port}"
    for data in records_with(host):
        record = parse_record(data)
        assert isinstance(record, AccessRecord)
        result = resolve(record, MESH, OPTIONS)
        if fqdn is None:
            assert result.outcome is Outcome.REJECTED_GLOBAL_SIDECAR
        else:
            assert result.outcome is Outcome.LEARNED, (host, result)
            assert [e.host for e in result.edges] == [fqdn]


@settings(max_examples=200)
@given(st.from_regex(r"[a-z][a-z0-9]{0,8}\.example\.com", fullmatch=True), st.booleans())
def test_wildcard_service_entry_hosts_are_admitted(host: str, upper: bool) -> None:
    authority = host.upper() if upper else host
    record = parse_record(istio_text_line(authority=authority, upstream_cluster="inbound|80||").encode())
    assert isinstance(record, AccessRecord)
    result = resolve(record, MESH, OPTIONS)
    assert [e.host for e in result.edges] == [host]


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_normalize_authority_returns_a_dns_name_or_a_problem(text: str) -> None:
    host = normalize_authority(text)
    assert isinstance(host, HostProblem) or is_dns_name(host)
