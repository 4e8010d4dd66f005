"""The worker's own decisions that need no servers (the rest of it is tested as a process)."""

from __future__ import annotations

from lazystream.worker import FULL_SWEEP_TICKS, IDLE_REPORT_SECONDS, CountersLine, SweepSchedule


def sweeping_ticks(schedule: SweepSchedule, rebalances_at: dict[int, int], ticks: int) -> list[int]:
    """The ticks at which ``schedule`` sweeps, faust's rebalance count changing as ``rebalances_at`` says."""
    swept = []
    rebalances = 0
    for _ in range(ticks):
        schedule.tick()
        rebalances = rebalances_at.get(schedule.ticks, rebalances)
        if schedule.due(rebalances):
            schedule.swept(rebalances)
            swept.append(schedule.ticks)
    return swept


def test_full_sweeps_come_every_period_without_rebalances() -> None:
    assert sweeping_ticks(SweepSchedule(every_ticks=30), {}, 95) == [30, 60, 90]
    assert SweepSchedule().every_ticks == FULL_SWEEP_TICKS


def test_a_rebalance_sweeps_at_once_and_the_next_periodic_sweep_counts_from_it() -> None:
    # rebalances at ticks 14 and 15 (one sweep each), then none: the periodic sweep comes 30 ticks later,
    # not at tick 30, a quarter of the period after the rebalance's
    assert sweeping_ticks(SweepSchedule(every_ticks=30), {14: 1, 15: 2}, 80) == [14, 15, 45, 75]


def test_a_sweep_that_could_not_run_is_made_at_the_next_tick() -> None:
    # the worker skips a due sweep while its table cannot be read (it then calls neither swept nor anything)
    schedule = SweepSchedule(every_ticks=3)
    for _ in range(3):
        schedule.tick()
    assert schedule.due(rebalances=1)  # rebalancing: state not readable, no sweep made
    schedule.tick()
    assert schedule.due(rebalances=1)
    schedule.swept(rebalances=1)
    schedule.tick()
    assert not schedule.due(rebalances=1)


def test_the_counters_line_is_logged_when_it_changes_and_once_a_minute_while_idle() -> None:
    line = CountersLine()
    assert line.due("1 learned", 0.0)
    assert not line.due("1 learned", 5.0)  # idle: the same line is not repeated every 5 s
    assert line.due("2 learned", 10.0)
    assert not line.due("2 learned", 10.0 + IDLE_REPORT_SECONDS - 1)
    assert line.due("2 learned", 10.0 + IDLE_REPORT_SECONDS)
