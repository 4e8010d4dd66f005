"""The global-sidecar's per-request decisions."""

# ruff: noqa: S104 - wildcard listener addresses are data here, nothing binds them
from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lazystream.domain.forwarding import (
    Decisions,
    Forward,
    Refuse,
    access_record,
    complete_authority,
    connection_is_self,
    decide,
    parse_orig_dest,
    principal_from_xfcc,
    split_host_port,
    targets_self,
)
from lazystream.domain.records import AccessRecord, RecordFormat, parse_record
from lazystream.testing import global_sidecar_record

SERVICES = {("default", "details"), ("default", "reviews")}


def exists(namespace: str, name: str) -> bool:
    return (namespace, name) in SERVICES


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("details", ("details", None)),
        ("details:9080", ("details", 9080)),
        ("10.0.0.1:80", ("10.0.0.1", 80)),
        ("[fd00::1]:8080", ("fd00::1", 8080)),
        ("[fd00::1]", ("fd00::1", None)),
        ("fd00::1", ("fd00::1", None)),
        ("details:http", None),
        ("details:0", None),
        ("details:70000", None),
        ("[fd00::1]x", None),
        ("[fd00::1", None),
    ],
)
def test_split_host_port(authority: str, expected: tuple[str, int | None] | None) -> None:
    assert split_host_port(authority) == expected


@pytest.mark.parametrize(
    ("authority", "source_ns", "expected"),
    [
        ("details", "default", "details.default"),
        ("details:9080", "default", "details.default:9080"),
        ("Details:9080", "default", "Details.default:9080"),
        ("ratings", "default", "ratings"),  # no such Service: maybe an external single-label name
        ("details", None, "details"),
        ("details", "", "details"),
        ("details.default", "other", "details.default"),
        ("10.0.0.1:80", "default", "10.0.0.1:80"),
        ("[fd00::1]:80", "default", "[fd00::1]:80"),
        ("details:bad", "default", "details:bad"),
        ("details", "not a namespace", "details"),
    ],
)
def test_short_names_complete_in_the_source_namespace_when_the_service_exists(
    authority: str, source_ns: str | None, expected: str
) -> None:
    assert complete_authority(authority, source_ns, exists) == expected


def test_without_a_service_cache_short_names_always_complete() -> None:
    assert complete_authority("ratings:9080", "default", None) == "ratings.default:9080"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.96.0.20:9080", ("10.96.0.20", 9080)),
        ("10.96.0.20", ("10.96.0.20", 8000)),  # the listener's port
        (" 10.96.0.20:9080 ", ("10.96.0.20", 9080)),
        ("[fd00::20]:9080", ("fd00::20", 9080)),
        ("10.96.0.20:http", Refuse),
        ("10.96.0.20:0", Refuse),
        ("10.96.0.20:99999", Refuse),
        ("details:9080", Refuse),  # Istio sends %DOWNSTREAM_LOCAL_ADDRESS%: always an IP
        ("", Refuse),
        (":9080", Refuse),
    ],
)
def test_orig_dest(value: str, expected: object) -> None:
    result = parse_orig_dest(value, 8000)
    if expected is Refuse:
        assert isinstance(result, Refuse)
        assert result.status == 400
    else:
        assert result == expected


def test_orig_dest_is_dialled_and_the_completed_host_sent() -> None:
    decision = decide(
        authority="details:9080",
        source_ns="default",
        orig_dest="10.96.0.20:9080",
        listener_port=9080,
        exists=exists,
    )
    assert decision == Forward("10.96.0.20", 9080, "details.default:9080")


def test_a_malformed_orig_dest_is_a_400() -> None:
    decision = decide(
        authority="details", source_ns="default", orig_dest="10.0.0.1:x", listener_port=80, exists=exists
    )
    assert isinstance(decision, Refuse)
    assert decision.status == 400


@pytest.mark.parametrize(
    ("authority", "prefer_listener", "expected"),
    [
        ("details", False, Forward("details.default", 80, "details.default")),
        ("details:9080", False, Forward("details.default", 9080, "details.default:9080")),
        ("details:9080", True, Forward("details.default", 9090, "details.default:9080")),
        ("api.example.com", False, Forward("api.example.com", 80, "api.example.com")),
    ],
)
def test_without_orig_dest_the_host_is_dialled(
    authority: str, prefer_listener: bool, expected: Forward
) -> None:
    decision = decide(
        authority=authority,
        source_ns="default",
        orig_dest=None,
        listener_port=9090,
        exists=exists,
        prefer_listener_port=prefer_listener,
    )
    assert decision == expected


@pytest.mark.parametrize("authority", [None, "", ":80", "details:port"])
def test_no_usable_host_is_a_400(authority: str | None) -> None:
    decision = decide(authority=authority, source_ns=None, orig_dest=None, listener_port=80, exists=None)
    assert isinstance(decision, Refuse)
    assert decision.status == 400


def test_a_request_that_went_round_is_a_502() -> None:
    decision = decide(
        authority="details", source_ns=None, orig_dest=None, listener_port=80, exists=None, looped=True
    )
    assert decision == Refuse(502, "loop: the request has already passed through a global-sidecar")


@pytest.mark.parametrize(
    ("host", "port", "listeners", "expected"),
    [
        ("127.0.0.1", 80, [("0.0.0.0", 80)], True),
        ("0.0.0.0", 80, [("0.0.0.0", 80)], True),
        ("::1", 80, [("::", 80)], True),
        ("127.0.0.1", 81, [("0.0.0.0", 80)], False),
        ("10.1.2.3", 80, [("10.1.2.3", 80)], True),
        ("10.1.2.4", 80, [("10.1.2.3", 80)], False),
        ("10.1.2.3", 80, [("0.0.0.0", 80)], False),  # maybe another host: judged after connecting
        ("details", 80, [("0.0.0.0", 80)], False),
    ],
)
def test_targets_self(host: str, port: int, listeners: list[tuple[str, int]], expected: bool) -> None:
    assert targets_self(host, port, listeners) is expected
    if expected:  # and a Host naming it is refused before any dialling
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        decision = decide(
            authority=authority,
            source_ns=None,
            orig_dest=None,
            listener_port=port,
            exists=None,
            own_listeners=listeners,
        )
        assert isinstance(decision, Refuse)
        assert decision.status == 502


def test_connection_is_self() -> None:
    assert connection_is_self(("10.0.0.5", 40000), ("10.0.0.5", 80), {80, 9080})
    assert connection_is_self(("127.0.0.1", 40000), ("127.0.0.2", 9080), {80, 9080})
    assert not connection_is_self(("10.0.0.5", 40000), ("10.0.0.6", 80), {80})
    assert not connection_is_self(("10.0.0.5", 40000), ("10.0.0.5", 81), {80})


@pytest.mark.parametrize(
    ("xfcc", "expected"),
    [
        (None, None),
        ("", None),
        (
            'By=spiffe://cluster.local/ns/mesh-operator/sa/global-sidecar;Hash=abc;Subject="";'
            "URI=spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        ),
        (  # APPEND_FORWARD: the caller's own claim first, the sidecar's element last
            "URI=spiffe://cluster.local/ns/evil/sa/liar,"
            'By=spiffe://td/ns/m/sa/gs;Hash=1;Subject="CN=a,O=b";URI=spiffe://td/ns/default/sa/reviews',
            "spiffe://td/ns/default/sa/reviews",
        ),
        ('By=x;URI="spiffe://td/ns/a/sa/b"', "spiffe://td/ns/a/sa/b"),
        ("By=x;Hash=y", None),
    ],
)
def test_principal_from_xfcc(xfcc: str | None, expected: str | None) -> None:
    assert principal_from_xfcc(xfcc) == expected


def test_the_record_is_what_the_worker_parses_and_the_testing_kit_builds() -> None:
    record = access_record(
        time=1700000000.25,
        peer_address="10.244.0.15:51234",
        authority="details:9080",
        status=200,
        duration_ms=3.21,
        source_namespace="default",
        original_destination="10.96.0.20:9080",
        upstream="10.96.0.20:9080",
    )
    kit = global_sidecar_record(
        authority="details:9080", peer_address="10.244.0.15:51234", time=1700000000.25, duration_ms=3.21
    )
    assert {k: v for k, v in record.items() if k != "upstream"} == kit
    assert parse_record(orjson.dumps(record)) == AccessRecord(
        format=RecordFormat.GLOBAL_SIDECAR,
        authority="details:9080",
        downstream_remote_address="10.244.0.15:51234",
        event_time=1700000000.25,
        response_code=200,
        source_namespace="default",
        original_destination="10.96.0.20:9080",
    )


AUTHORITIES = st.one_of(
    st.none(),
    st.sampled_from(["", "details", "details:9080", "Details", "ratings", "a.b", "10.0.0.1:80", "[::1]:80"]),
    st.sampled_from(["details:0", "details:x", "127.0.0.1:8080", "localhost:8080", "-bad-"]),
)
ORIG_DESTS = st.one_of(
    st.none(), st.sampled_from(["10.0.0.9:9080", "127.0.0.1:8080", "127.0.0.1", "x:1", ""])
)
NAMESPACES = st.one_of(st.none(), st.sampled_from(["", "default", "Default", "other", "bad_ns"]))


@settings(max_examples=300, deadline=None)
@given(
    requests=st.lists(
        st.tuples(
            AUTHORITIES, NAMESPACES, ORIG_DESTS, st.sampled_from([8080, 9080]), st.booleans(), st.booleans()
        ),
        min_size=1,
        max_size=20,
    ),
    services=st.lists(st.frozensets(st.sampled_from(sorted(SERVICES | {("other", "details")}))), min_size=1),
    cache=st.booleans(),
)
def test_remembered_decisions_are_decide_s_answers(
    requests: list[tuple[str | None, str | None, str | None, int, bool, bool]],
    services: list[frozenset[tuple[str, str]]],
    cache: bool,
) -> None:
    """Every request twice (the second from memory), while the Services that exist change in between."""
    decisions = Decisions(size=8)
    listeners = [("0.0.0.0", 8080)]
    for i, (authority, source_ns, orig_dest, port, prefer, looped) in enumerate(requests * 2):
        known = services[i % len(services)]

        def present(ns: str, name: str, known: frozenset[tuple[str, str]] = known) -> bool:
            return (ns, name) in known

        service_exists = present if cache else None
        expected = decide(
            authority=authority,
            source_ns=source_ns,
            orig_dest=orig_dest,
            listener_port=port,
            exists=service_exists,
            prefer_listener_port=prefer,
            looped=looped,
            own_listeners=listeners,
        )
        got = decisions.decide(
            authority, source_ns, orig_dest, port, service_exists, prefer, looped, listeners
        )
        assert got == expected


def test_remembered_decisions_are_forgotten_when_the_listeners_change() -> None:
    decisions = Decisions()
    first = decisions.decide("x", None, "127.0.0.1:9090", 8080, None, False, False, [("0.0.0.0", 8080)])
    assert isinstance(first, Forward)
    again = decisions.decide("x", None, "127.0.0.1:9090", 8080, None, False, False, [("0.0.0.0", 9090)])
    assert isinstance(again, Refuse)
    assert again.status == 502  # now a listener of its own
