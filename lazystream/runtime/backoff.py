"""Retry pacing with jitter: one implementation for every loop that retries (the watch cache's re-lists,
the sink's writes, the leader's Lease attempts).

Jitter spreads the retries of many workers so that they do not hammer a recovering server at once; the
random numbers have nothing to do with cryptography. Pure: no I/O, no sleeping, so the callers sleep the
way their thread or event loop needs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


def jittered(seconds: float, low: float, high: float) -> float:
    """``seconds`` times a factor drawn uniformly from ``[low, high]``."""
    return seconds * random.uniform(low, high)  # noqa: S311 - jitter, not cryptography


@dataclass
class Backoff:
    """Exponential backoff with jitter: the n-th delay in a row is ``initial * 2**n`` times a jitter
    factor from ``[jitter_low, jitter_high]``, never more than ``maximum``; :meth:`reset` after a
    success starts again at ``initial``."""

    initial: float
    maximum: float
    jitter_low: float = 1.0
    jitter_high: float = 1.5
    failures: int = 0
    """Delays handed out since the last reset."""

    def __post_init__(self) -> None:
        if not 0 <= self.initial <= self.maximum:
            raise ValueError("backoff needs 0 <= initial <= maximum")
        if not 0 <= self.jitter_low <= self.jitter_high:
            raise ValueError("backoff needs 0 <= jitter_low <= jitter_high")

    def next(self) -> float:
        """The delay before the next attempt (and one more failure counted)."""
        delay = self.initial * 2.0 ** min(self.failures, 32)
        self.failures += 1
        return min(self.maximum, jittered(delay, self.jitter_low, self.jitter_high))

    def reset(self) -> None:
        self.failures = 0
