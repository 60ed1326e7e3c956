"""Latency statistics from recorded timings (milliseconds).

Percentiles use linear interpolation between the closest ranks (numpy's default "linear" method, the same
rule as litert-benchmark's percentile): p-th percentile = x[k] + (k - floor k) * (x[k+1] - x[k]) with
k = (n - 1) * p / 100 over the sorted timings. std is the population standard deviation (divide by n), as
benchmark_model's Stat computes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

PERCENTILES = (5, 50, 90, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    count: int
    avg: float
    std: float
    min: float
    max: float
    p5: float
    p50: float
    p90: float
    p95: float
    p99: float


def latency_stats(times_ms: Sequence[float]) -> LatencyStats:
    """Summarise timings in milliseconds; at least one timing is needed."""
    x = np.asarray(times_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no timings recorded: a phase must run at least once")
    p5, p50, p90, p95, p99 = (float(v) for v in np.percentile(x, PERCENTILES, method="linear"))
    return LatencyStats(
        count=int(x.size),
        avg=float(x.mean()),
        std=float(x.std()),
        min=float(x.min()),
        max=float(x.max()),
        p5=p5,
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
    )
