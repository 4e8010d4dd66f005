"""Learned state and its messages."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lazystream.domain import learned
from lazystream.domain.cluster import ObjectKey
from lazystream.domain.learned import LearnedHost, apply

B = 10.0


def test_observations_write_only_new_hosts_or_new_buckets() -> None:
    s1 = apply({}, learned.observe("a", "fallback", 100.0), B)
    assert s1 == {"a": LearnedHost(100.0, 100.0, 1)}
    assert apply(s1, learned.observe("a", "direct", 109.9), B) is None  # same bucket [100, 110)
    assert apply(s1, learned.observe("a", "direct", 95.0), B) is None  # older: nothing to record
    s2 = apply(s1, learned.observe("a", "direct", 110.0), B)
    assert s2 == {"a": LearnedHost(100.0, 110.0, 2)}
    s3 = apply(s2, learned.observe("b", "fallback", 111.0), B)
    assert s3 == {"a": LearnedHost(100.0, 110.0, 2), "b": LearnedHost(111.0, 111.0, 1)}


def test_seed_reset_expire() -> None:
    state = {"a": LearnedHost(1.0, 2.0, 3)}
    seeded = apply(state, learned.seed(["a", "b"], 50.0), B)
    assert seeded == {"a": LearnedHost(1.0, 2.0, 3), "b": LearnedHost(50.0, 50.0, 0)}
    assert apply(seeded, learned.seed(["a"], 60.0), B) is None
    assert apply(seeded, learned.expire(["b", "zz"], 70.0), B) == {"a": LearnedHost(1.0, 2.0, 3)}
    assert apply(seeded, learned.expire(["zz"], 70.0), B) is None
    assert apply(seeded, learned.reset(80.0), B) == {}
    assert apply({}, learned.reset(80.0), B) is None


def test_bad_messages_change_nothing() -> None:
    for message in ({}, {"op": "observe"}, {"op": "observe", "host": 3}, {"op": "nope"}, {"op": "seed"}):
        assert apply({"a": LearnedHost(1, 1, 1)}, message, B) is None


def test_encoding_round_trip_and_keys() -> None:
    state = {"b": LearnedHost(1.5, 2.5, 3), "a": LearnedHost(0.0, 0.0, 0)}
    assert learned.decode_state(learned.encode_state(state)) == state
    assert learned.decode_state(b"garbage") == {}
    assert learned.decode_state(None) == {}
    assert learned.fence_key(ObjectKey("default", "productpage")) == b"default/productpage"
    assert learned.parse_fence_key(b"default/productpage") == ObjectKey("default", "productpage")
    assert learned.parse_fence_key(b"nonsense") is None


def test_idle_hosts_and_conditional_expiry() -> None:
    state = {
        "old.a.svc.cluster.local": learned.LearnedHost(100.0, 200.0, 3),
        "new.a.svc.cluster.local": learned.LearnedHost(100.0, 900.0, 5),
    }
    assert learned.idle_hosts(state, now=1000.0, ttl=500.0) == ["old.a.svc.cluster.local"]
    assert learned.idle_hosts(state, now=1000.0, ttl=50.0) == sorted(state)
    message = learned.expire(["old.a.svc.cluster.local"], 1000.0, idle_before=500.0)
    assert learned.apply(state, message, 10.0) == {
        "new.a.svc.cluster.local": state["new.a.svc.cluster.local"]
    }
    # an observation that reached the table after the decision keeps its host
    seen_again = {**state, "old.a.svc.cluster.local": learned.LearnedHost(100.0, 990.0, 4)}
    assert learned.apply(seen_again, message, 10.0) is None
    # an unconditional expiry (Prometheus drop-outs, resets of single hosts) removes it regardless
    assert "old.a.svc.cluster.local" not in (
        learned.apply(seen_again, learned.expire(["old.a.svc.cluster.local"], 1000.0), 10.0) or {}
    )


# -- reports from a polled source (Prometheus) --------------------------------------------------------------


def test_report_observes_and_marks_hosts() -> None:
    state = learned.apply({}, learned.report("prometheus", ["a", "b"], 100.0), 10.0)
    assert state == {
        "a": learned.LearnedHost(100.0, 100.0, 1, "prometheus"),
        "b": learned.LearnedHost(100.0, 100.0, 1, "prometheus"),
    }
    assert learned.apply(state, learned.report("prometheus", ["a", "b"], 101.0), 10.0) is None  # same bucket
    later = learned.apply(state, learned.report("prometheus", ["a", "b"], 111.0), 10.0)
    assert later is not None
    assert later["a"] == learned.LearnedHost(100.0, 111.0, 2, "prometheus")


def test_a_host_no_longer_reported_goes_but_observed_hosts_stay() -> None:
    state = {
        "a": learned.LearnedHost(1.0, 1.0, 1, "prometheus"),
        "logged": learned.LearnedHost(1.0, 1.0, 3),
        "seeded": learned.LearnedHost(1.0, 1.0, 0),
    }
    assert learned.apply(state, learned.report("prometheus", [], 5.0), 10.0) == {
        "logged": learned.LearnedHost(1.0, 1.0, 3)
    }


def test_a_seeded_host_that_is_reported_is_kept_and_marked() -> None:
    state = {"seeded": learned.LearnedHost(1.0, 1.0, 0)}
    new = learned.apply(state, learned.report("prometheus", ["seeded"], 2.0), 10.0)
    assert new == {"seeded": learned.LearnedHost(1.0, 1.0, 0, "prometheus")}


def test_a_report_without_source_changes_nothing() -> None:
    assert learned.apply({}, {"op": "report", "hosts": ["a"], "t": 1.0}, 10.0) is None


def test_the_source_survives_encoding_and_old_values_still_decode() -> None:
    state = {"a": learned.LearnedHost(1.0, 2.0, 3, "prometheus"), "b": learned.LearnedHost(1.0, 2.0, 3)}
    assert learned.decode_state(learned.encode_state(state)) == state
    assert learned.encode_state({"b": state["b"]}) == b'{"b":[1.0,2.0,3]}'
    restored = learned.apply({}, learned.restore(state, 5.0), 10.0)
    assert restored == state


def _general(stored: bytes | None, message: dict[str, Any], bucket_seconds: float) -> learned.Change | None:
    state = learned.decode_state(stored)
    new = apply(state, message, bucket_seconds)
    if new is None:
        return None
    return learned.Change(
        learned.encode_state(new), [h for h in new if h not in state], len(new), len(new) > len(state)
    )


_hosts = st.sampled_from([f"h{i}.ns.svc.cluster.local" for i in range(6)] + ["é.ns", "a"])
_times = st.floats(min_value=0, max_value=2e9, allow_nan=False) | st.integers(0, 2_000_000_000)
_values = st.builds(
    LearnedHost,
    first=st.floats(min_value=0, max_value=2e9, allow_nan=False),
    last=st.floats(min_value=0, max_value=2e9, allow_nan=False),
    count=st.integers(0, 1000),
    source=st.sampled_from(["", "prometheus"]),
)


@given(
    state=st.dictionaries(_hosts, _values, max_size=6),
    host=_hosts,
    t=_times,
    bucket_seconds=st.sampled_from([1.0, 60.0, 3600.0]),
)
def test_the_observation_shortcut_equals_the_general_path(
    state: dict[str, LearnedHost], host: str, t: float, bucket_seconds: float
) -> None:
    stored = learned.encode_state(state) if state else None
    message = learned.observe(host, "service", t)
    assert learned.change(stored, message, bucket_seconds) == _general(stored, message, bucket_seconds)


def test_change_takes_the_general_path_for_other_messages_and_odd_values() -> None:
    stored = learned.encode_state({"a": LearnedHost(1.0, 1.0, 1)})
    for stored_value, message in [
        (stored, learned.seed(["b"], 5.0)),
        (stored, learned.expire(["a"], 5.0)),
        (b'{"a": "not a list"}', learned.observe("b", "service", 5.0)),
        (b"[1, 2]", learned.observe("b", "service", 5.0)),
        (b"not json", learned.observe("b", "service", 5.0)),
        (b'{"a": [1, 1.0, 1]}', learned.observe("b", "service", 5.0)),  # not as encode_state writes it
        (b'{"a": [1.0, 1.0, 1, ""]}', learned.observe("a", "service", 500.0)),
        (b'{"a": [1.0, 1.0, 1.5]}', learned.observe("a", "service", 500.0)),
        (stored, {"op": "observe", "host": 7, "t": 5.0}),
    ]:
        assert learned.change(stored_value, message, 60.0) == _general(stored_value, message, 60.0)
