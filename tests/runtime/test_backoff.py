"""The one backoff helper: delays double from ``initial``, carry jitter in the given range, never pass
``maximum``, and start again after a reset."""

from __future__ import annotations

import pytest

from lazystream.runtime import backoff as backoff_module
from lazystream.runtime.backoff import Backoff, jittered


def test_delays_double_within_their_jitter_and_stop_at_the_maximum() -> None:
    backoff = Backoff(0.5, 30.0)
    for n in range(12):
        base = 0.5 * 2**n
        delay = backoff.next()
        assert min(30.0, base) <= delay <= min(30.0, base * 1.5)
    assert backoff.failures == 12
    assert backoff.next() == 30.0


def test_reset_starts_again_at_initial() -> None:
    backoff = Backoff(0.2, 10.0, jitter_low=0.5, jitter_high=1.0)
    for _ in range(5):
        backoff.next()
    backoff.reset()
    assert 0.1 <= backoff.next() <= 0.2


def test_jitter_bounds_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backoff_module.random, "uniform", lambda low, high: high)
    assert jittered(2.0, 1.0, 1.2) == pytest.approx(2.4)
    monkeypatch.setattr(backoff_module.random, "uniform", lambda low, high: low)
    assert Backoff(1.0, 8.0, jitter_low=0.5, jitter_high=1.0).next() == 0.5


def test_many_failures_do_not_overflow() -> None:
    backoff = Backoff(0.5, 30.0, failures=10_000)
    assert backoff.next() == 30.0


@pytest.mark.parametrize(
    ("initial", "maximum", "low", "high"), [(-1.0, 1.0, 1.0, 1.5), (2.0, 1.0, 1.0, 1.5), (1.0, 2.0, 1.5, 1.0)]
)
def test_nonsense_settings_are_refused(initial: float, maximum: float, low: float, high: float) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(initial, maximum, jitter_low=low, jitter_high=high)
