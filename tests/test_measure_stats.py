"""Latency statistics on recorded timings, against values computed by hand."""
from __future__ import annotations

import math

import pytest

from edgecompress.measure.stats import latency_stats


def test_statistics_of_five_timings():
    # sorted: 1 2 3 4 10; mean 4; squared deviations 9+4+1+0+36 = 50, population variance 50/5 = 10.
    # Linear percentiles: k = (n-1) p / 100 = 4p/100 -> p5: k=0.2 -> 1 + 0.2*(2-1) = 1.2; p50: k=2 -> 3;
    # p90: k=3.6 -> 4 + 0.6*(10-4) = 7.6; p95: k=3.8 -> 8.8; p99: k=3.96 -> 9.76.
    s = latency_stats([4.0, 10.0, 1.0, 3.0, 2.0])
    assert s.count == 5
    assert s.avg == pytest.approx(4.0)
    assert s.std == pytest.approx(math.sqrt(10.0))
    assert (s.min, s.max) == (1.0, 10.0)
    assert s.p5 == pytest.approx(1.2)
    assert s.p50 == pytest.approx(3.0)
    assert s.p90 == pytest.approx(7.6)
    assert s.p95 == pytest.approx(8.8)
    assert s.p99 == pytest.approx(9.76)


def test_even_count_median_interpolates():
    # 2 5 7 11: p50 at k=1.5 -> 5 + 0.5*(7-5) = 6; p5 at k=0.15 -> 2 + 0.15*3 = 2.45; p99 at k=2.97 -> 7 + 0.97*4 = 10.88
    s = latency_stats([11.0, 2.0, 7.0, 5.0])
    assert s.p50 == pytest.approx(6.0)
    assert s.p5 == pytest.approx(2.45)
    assert s.p99 == pytest.approx(10.88)
    assert s.avg == pytest.approx(6.25)
    # deviations -4.25 -1.25 0.75 4.75 -> 18.0625 + 1.5625 + 0.5625 + 22.5625 = 42.75; /4 = 10.6875
    assert s.std == pytest.approx(math.sqrt(10.6875))


def test_one_timing_has_no_spread():
    s = latency_stats([2.5])
    assert s.count == 1 and s.std == 0.0
    assert s.min == s.max == s.p5 == s.p50 == s.p99 == 2.5


def test_no_timings_is_an_error():
    with pytest.raises(ValueError, match="no timings"):
        latency_stats([])
