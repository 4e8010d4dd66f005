"""The benchmarks' shared arithmetic (no servers)."""

from __future__ import annotations

import math

from bench.harness import quantile


def test_quantiles_are_nearest_rank() -> None:
    hundred = [float(n) for n in range(100, 0, -1)]  # 1..100, unsorted
    assert quantile(hundred, 0.99) == 99.0  # not the largest: one sample in a hundred may be above
    assert quantile(hundred, 0.5) == 50.0
    assert quantile(hundred, 1.0) == 100.0
    assert quantile(hundred, 0.0) == 1.0
    assert quantile([3.0, 1.0, 2.0], 0.99) == 3.0  # too few samples: the p99 is the largest
    assert quantile([7.0], 0.5) == 7.0
    assert math.isnan(quantile([], 0.99))
