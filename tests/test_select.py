"""Selection under constraints, every rejection's reason, the none-meets case, and the Pareto front."""
from __future__ import annotations

from edgecompress.pipeline.recipe import Constraints
from edgecompress.pipeline.record import DeviceResult, VariantRecord
from edgecompress.pipeline.select import pareto_front, select


def rec(name: str, gzip_kb: float, acc: float, drop: float, pi_ms: float | None, error: str | None = None) -> VariantRecord:
    return VariantRecord(
        name=name, settings={"quantize": "int8"}, techniques=[], key=name, error=error,
        failed_stage="convert" if error else None,
        size_bytes=None if error else int(gzip_kb * 1024 * 1.1), gzip_bytes=None if error else int(gzip_kb * 1024),
        accuracy=None if error else acc, accuracy_drop=None if error else drop, host_latency_ms=None if error else 0.5,
        devices={} if error or pi_ms is None else {"pi": DeviceResult(estimated_p50_ms=pi_ms)},
    )


RECORDS = [
    rec("float32", 300, 0.990, 0.0, 40.0),
    rec("int8", 80, 0.985, 0.5, 12.0),
    rec("prune-int8", 20, 0.975, 1.5, 11.0),
    rec("tiny", 10, 0.900, 9.0, 5.0),
    rec("broken", 0, 0, 0, None, error="conversion failed: op not supported"),
]


def test_smallest_within_constraints_and_every_reason():
    s = select(RECORDS, Constraints(max_accuracy_drop=1.0, max_latency_ms={"pi": 20.0}), "smallest", "pi")
    assert s.chosen == "int8"
    assert "smallest gzip size" in s.why and "1 variant" in s.why
    assert set(s.rejected) == {"float32", "prune-int8", "tiny", "broken"}
    assert "accuracy drop 1.50 > 1.00 points" in s.rejected["prune-int8"]
    assert "accuracy drop 9.00 > 1.00 points" in s.rejected["tiny"]
    assert "estimated latency on pi 40.0 ms > 20.0 ms" in s.rejected["float32"]
    assert s.rejected["broken"].startswith("failed in convert: conversion failed")
    assert s.closest == []


def test_objectives_rank_differently():
    loose = Constraints(max_accuracy_drop=2.0)
    assert select(RECORDS, loose, "smallest", "pi").chosen == "prune-int8"
    assert select(RECORDS, loose, "fastest", "pi").chosen == "prune-int8"
    assert select(RECORDS, loose, "most_accurate", "pi").chosen == "float32"
    s = select(RECORDS, loose, "most_accurate", "pi")
    assert "meets the constraints, but accuracy 98.50% vs accuracy 99.00% for float32" == s.rejected["int8"]
    assert select(RECORDS, Constraints(), "fastest", "pi").chosen == "tiny"


def test_size_constraints_in_kb():
    s = select(RECORDS, Constraints(max_gzip_kb=50, max_size_kb=15), "most_accurate", "pi")
    assert s.chosen == "tiny"
    assert "gzip size 80.0 KB > 50 KB" in s.rejected["int8"]
    assert "size 22.0 KB > 15 KB" in s.rejected["prune-int8"]


def test_none_meets_names_the_closest_and_what_they_break():
    s = select(RECORDS, Constraints(max_accuracy_drop=0.1, max_latency_ms={"pi": 8.0}), "smallest", "pi")
    assert s.chosen is None and "no variant meets the constraints" in s.why
    names = [name for name, _ in s.closest]
    assert len(names) == 3 and "broken" not in names
    # one broken constraint beats two; among single breakers the smaller excess comes first
    assert names[:2] == ["float32", "tiny"]
    assert s.closest[0][1] == ["estimated latency on pi 40.0 ms > 20.0 ms".replace("20", "8")]
    assert s.closest[1][1] == ["accuracy drop 9.00 > 0.10 points"]
    assert len(s.closest[2][1]) == 2
    assert set(s.rejected) == {r.name for r in RECORDS}


def test_missing_estimate_breaks_a_latency_limit():
    records = [rec("a", 10, 0.99, 0.0, None)]
    s = select(records, Constraints(max_latency_ms={"pi": 10.0}), "smallest", "pi")
    assert s.chosen is None and s.closest == [("a", ["no latency estimate for pi"])]


def test_pareto_front():
    points = [(300, 99.0), (80, 98.5), (20, 97.5), (10, 90.0), (90, 98.0), (20, 97.0), (300, 98.9)]
    assert pareto_front(points) == [3, 2, 1, 0]
    assert pareto_front([(1.0, 1.0)]) == [0]
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)]) == [0, 1]  # equal points: neither dominates
