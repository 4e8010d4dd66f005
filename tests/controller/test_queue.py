"""The work queue on its own: coalescing, per-key exclusivity, bounds, retries, sweeps and stopping, with a
handler that records what it was asked (no Kubernetes, no faust)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest

from lazystream.controller.queue import SWEEP_DUTY, Outcome, WorkQueue

pytestmark = pytest.mark.timeout(30)


class Recorder:
    """A handler that records each run (key, start time) and can be told to hold, fail or retry."""

    def __init__(self, *, hold: float = 0.0, outcome: Outcome | None = None) -> None:
        self.runs: list[tuple[str, float]] = []
        self.hold = hold
        self.outcome = outcome or Outcome()
        self.running: set[str] = set()
        self.peak = 0
        self.overlaps = 0
        self.fail: set[str] = set()

    async def __call__(self, key: str) -> Outcome:
        if key in self.running:
            self.overlaps += 1
        self.running.add(key)
        self.peak = max(self.peak, len(self.running))
        self.runs.append((key, time.monotonic()))
        try:
            if self.hold:
                await asyncio.sleep(self.hold)
            if key in self.fail:
                raise RuntimeError(f"{key} failed")
            return self.outcome
        finally:
            self.running.discard(key)

    def count(self, key: str) -> int:
        return sum(1 for k, _ in self.runs if k == key)


async def test_a_burst_of_schedules_is_one_leading_and_one_trailing_run() -> None:
    handler = Recorder()
    queue = WorkQueue(handler, coalesce_seconds=0.2)
    queue.start()
    for _ in range(50):
        queue.schedule("a")
        await asyncio.sleep(0.001)
    assert await queue.wait_idle(2)
    assert handler.count("a") == 2
    (_, first), (_, second) = handler.runs
    assert second - first >= 0.19  # the trailing run waited for the end of the interval
    await queue.stop()


async def test_a_key_never_runs_twice_at_once_and_a_schedule_during_a_run_asks_for_one_more() -> None:
    handler = Recorder(hold=0.1)
    queue = WorkQueue(handler, coalesce_seconds=0.0)
    queue.start()
    queue.schedule("a")
    await asyncio.sleep(0.02)
    queue.schedule("a")
    queue.schedule("a")
    assert await queue.wait_idle(2)
    assert handler.overlaps == 0
    assert handler.count("a") == 2
    await queue.stop()


async def test_at_most_concurrency_runs_at_once() -> None:
    handler = Recorder(hold=0.05)
    queue = WorkQueue(handler, concurrency=3)
    queue.start()
    for i in range(12):
        queue.schedule(f"k{i}")
    assert await queue.wait_idle(3)
    assert handler.peak == 3
    assert queue.peak_in_flight == 3
    assert len(handler.runs) == 12
    await queue.stop()


async def test_retry_later_runs_the_key_again_after_the_delay() -> None:
    handler = Recorder(outcome=Outcome(retry_later=True))
    queue = WorkQueue(handler, retry_later_seconds=0.15, coalesce_seconds=0.0)
    queue.start()
    queue.schedule("a")
    await asyncio.sleep(0.4)
    assert 2 <= handler.count("a") <= 4
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(handler.runs)]
    assert all(gap >= 0.14 for gap in gaps), gaps
    assert not queue.idle()  # a retry is still due: the key is not lost
    await queue.stop()


async def test_a_failing_handler_is_logged_and_can_run_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = Recorder()
    handler.fail.add("a")
    queue = WorkQueue(handler, coalesce_seconds=0.0)
    queue.start()
    queue.schedule("a")
    assert await queue.wait_idle(1)
    assert "handling a failed" in caplog.text
    handler.fail.clear()
    queue.schedule("a")
    assert await queue.wait_idle(1)
    assert handler.count("a") == 2
    await queue.stop()


async def test_a_run_that_wrote_nothing_does_not_delay_the_next() -> None:
    handler = Recorder(outcome=Outcome(wrote=False))
    queue = WorkQueue(handler, coalesce_seconds=5.0)
    queue.start()
    queue.schedule("a")
    assert await queue.wait_idle(1)
    queue.schedule("a")
    assert await queue.wait_idle(1)  # without wrote=False the second run would wait 5 s
    assert handler.count("a") == 2
    await queue.stop()


async def test_a_sweep_goes_behind_what_is_scheduled_and_is_paced() -> None:
    handler = Recorder(hold=0.01, outcome=Outcome(loop_seconds=0.02))
    queue = WorkQueue(handler, concurrency=4, coalesce_seconds=0.0)
    queue.start()
    queue.sweep([f"s{i}" for i in range(5)])
    await asyncio.sleep(0.005)
    queue.schedule("urgent")
    assert queue.sweep_pending > 0
    assert await queue.wait_idle(3)
    order = [k for k, _ in handler.runs]
    assert order.index("urgent") <= 1  # at most the one swept key already running went first
    assert sorted(order) == sorted(["urgent", *(f"s{i}" for i in range(5))])
    swept = [t for k, t in handler.runs if k.startswith("s")]
    pause = 0.02 * (1 - SWEEP_DUTY) / SWEEP_DUTY
    assert all(b - a >= pause for a, b in itertools.pairwise(swept))
    assert handler.peak <= 2  # one swept key at a time, beside the scheduled one
    assert queue.sweep_pending == 0
    await queue.stop()


async def test_schedule_after_runs_the_key_once_at_the_latest_time_asked() -> None:
    handler = Recorder()
    queue = WorkQueue(handler, coalesce_seconds=0.0)
    queue.start()
    queue.schedule_after("a", 0.05)
    queue.schedule_after("a", 0.15)  # the latest wins
    queue.schedule_after("b", 0.05)
    queue.schedule_after("b", None)  # cancelled
    assert queue.timed == 1
    await asyncio.sleep(0.1)
    assert handler.runs == []
    await asyncio.sleep(0.15)
    assert [k for k, _ in handler.runs] == ["a"]
    await queue.stop()


async def test_stop_runs_what_is_scheduled_once_more_and_then_nothing() -> None:
    handler = Recorder()
    queue = WorkQueue(handler, coalesce_seconds=10.0)
    queue.start()
    queue.schedule("a")
    await asyncio.sleep(0.02)
    queue.schedule("a")  # a trailing run 10 s away: stop runs it now
    queue.schedule_after("b", 5)
    await queue.stop()
    assert handler.count("a") == 2
    assert handler.count("b") == 0
    queue.schedule("c")
    await asyncio.sleep(0.02)
    assert handler.count("c") == 0


async def test_stop_cancels_runs_that_outlast_the_drain(caplog: pytest.LogCaptureFixture) -> None:
    handler = Recorder(hold=5.0)
    queue = WorkQueue(handler)
    queue.start()
    queue.schedule("slow")
    await asyncio.sleep(0.02)
    started = time.monotonic()
    await queue.stop(timeout=0.1)
    assert time.monotonic() - started < 1.5
    assert "did not finish" in caplog.text
    assert queue.in_flight == 0


async def test_schedules_before_start_run_at_start_and_threadsafe_schedules_arrive() -> None:
    handler = Recorder()
    queue: WorkQueue[str] = WorkQueue(handler)
    queue.schedule("early")
    with pytest.raises(RuntimeError, match="not started"):
        queue.schedule_threadsafe("x")
    queue.start()
    thread = threading.Thread(target=queue.schedule_threadsafe, args=("from-thread",))
    thread.start()
    thread.join()
    await asyncio.sleep(0.02)
    assert await queue.wait_idle(1)
    assert {k for k, _ in handler.runs} == {"early", "from-thread"}
    await queue.stop()
