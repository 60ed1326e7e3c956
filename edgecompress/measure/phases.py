"""The phase rule of TFLite's benchmark_model, separate from any model so it can be tested on a fake clock.

benchmark_model runs each phase (warm-up, timed runs) while `run < runs OR elapsed < min_secs`, and stops
any phase once `elapsed > max_secs` whatever the counts say (defaults: runs 50, min_secs 1.0, warm-up runs 1,
warm-up min_secs 0.5, max_secs 150).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

RUNS = 50
MIN_SECS = 1.0
WARMUP_RUNS = 1
WARMUP_MIN_SECS = 0.5
MAX_SECS = 150.0


@dataclass(frozen=True)
class PhaseRule:
    runs: int
    min_secs: float
    max_secs: float = MAX_SECS

    def keep_going(self, run: int, elapsed: float) -> bool:
        """Whether run number RUN (0-based) starts, ELAPSED seconds after the phase began."""
        if elapsed > self.max_secs:
            return False
        return run < self.runs or elapsed < self.min_secs

    def stopped_by(self, runs_made: int, elapsed: float) -> str:
        """Which condition ended a phase of RUNS_MADE runs over ELAPSED seconds: "runs" (the count was the
        last to be met), "min_secs" (the time was) or "max_secs" (the cap cut it short)."""
        if elapsed > self.max_secs or runs_made < self.runs:
            return "max_secs"
        return "min_secs" if runs_made > self.runs else "runs"


@dataclass(frozen=True)
class PhaseEnd:
    """How many runs a phase made and why it stopped then (see PhaseRule.stopped_by)."""

    runs: int  # made
    seconds: float
    stopped_by: str  # "runs", "min_secs" or "max_secs"
    rule: PhaseRule


def run_phase(
    step: Callable[[], object], rule: PhaseRule, clock: Callable[[], float] = time.perf_counter
) -> tuple[list[float], PhaseEnd]:
    """Call STEP under RULE; return each call's duration in seconds (as measured by CLOCK) and how it ended."""
    times: list[float] = []
    start = clock()
    now = start
    # The loop holds only what timing needs: a clock read before and after each step and one append.
    while rule.keep_going(len(times), now - start):
        t0 = clock()
        step()
        now = clock()
        times.append(now - t0)
    return times, PhaseEnd(len(times), now - start, rule.stopped_by(len(times), now - start), rule)
