"""benchmark_model's phase rule on a fake clock: run while run < runs OR elapsed < min_secs, capped by max_secs."""
from __future__ import annotations

import pytest

from edgecompress.measure.phases import PhaseRule, run_phase


class FakeClock:
    """A clock that moves only when a fake inference 'runs' for the given durations (binary fractions, exact)."""

    def __init__(self, durations: list[float]) -> None:
        self.now = 100.0
        self.durations = durations
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1


def _run(rule: PhaseRule, durations: list[float]) -> tuple[list[float], FakeClock]:
    clock = FakeClock(durations)
    return run_phase(clock.step, rule, clock)[0], clock


def test_count_bound_when_runs_take_longer_than_min_secs():
    times, clock = _run(PhaseRule(runs=5, min_secs=1.0), [0.5])
    assert len(times) == 5 and clock.calls == 5  # 2.5 s > 1 s: the count decides
    assert times == [0.5] * 5


def test_time_bound_when_runs_are_fast():
    times, _ = _run(PhaseRule(runs=2, min_secs=1.0), [0.125])
    assert len(times) == 8  # runs continue until 1.0 s has elapsed: 8 x 0.125


def test_recorded_durations_are_each_runs_own():
    times, _ = _run(PhaseRule(runs=4, min_secs=0.0), [0.25, 0.5])
    assert times == [0.25, 0.5, 0.25, 0.5]


def test_max_secs_caps_a_phase():
    # benchmark_model's loop condition is `... && elapsed <= max_secs`: run 11 starts at exactly 10 s.
    times, _ = _run(PhaseRule(runs=50, min_secs=0.0, max_secs=10.0), [1.0])
    assert len(times) == 11


def test_zero_runs_and_zero_seconds_skip_the_phase():
    times, clock = _run(PhaseRule(runs=0, min_secs=0.0), [1.0])
    assert times == [] and clock.calls == 0


@pytest.mark.parametrize(
    "run, elapsed, expected",
    [(0, 0.0, True), (49, 5.0, True), (50, 0.5, True), (50, 1.0, False), (50, 2.0, False), (3, 151.0, False)],
)
def test_keep_going(run, elapsed, expected):
    assert PhaseRule(runs=50, min_secs=1.0, max_secs=150.0).keep_going(run, elapsed) is expected


@pytest.mark.parametrize(
    "rule, durations, stopped_by",
    [
        (PhaseRule(runs=5, min_secs=1.0), [0.5], "runs"),  # 5 runs take 2.5 s: the count was met last
        (PhaseRule(runs=2, min_secs=1.0), [0.125], "min_secs"),  # 2 runs take 0.25 s: the time was
        (PhaseRule(runs=50, min_secs=0.0, max_secs=10.0), [1.0], "max_secs"),  # 11 of 50 runs: cut short
    ],
)
def test_a_phase_says_which_condition_ended_it(rule, durations, stopped_by):
    clock = FakeClock(durations)
    times, end = run_phase(clock.step, rule, clock)
    assert (end.runs, end.seconds, end.stopped_by, end.rule) == (len(times), sum(times), stopped_by, rule)
