"""Learned state and its messages (decisions §1.1)."""

from __future__ import annotations

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
