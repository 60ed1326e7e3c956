"""The report: results.json, report.md with the table and choices, and PNG plots that are real images."""
from __future__ import annotations

import json

import matplotlib.image
import pytest

from edgecompress.pipeline.recipe import Constraints
from edgecompress.pipeline.record import DeviceResult, VariantRecord
from edgecompress.pipeline.report import write_report
from edgecompress.pipeline.select import select

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def rec(name, kb, acc, pi, phone, techniques=(), error=None):
    return VariantRecord(
        name=name, settings={"quantize": "int8"}, techniques=list(techniques), key=name, error=error,
        failed_stage="optimize" if error else None,
        size_bytes=None if error else int(kb * 1024 * 1.3), gzip_bytes=None if error else int(kb * 1024),
        accuracy=None if error else acc, accuracy_drop=None if error else (0.99 - acc) * 100,
        host_latency_ms=None if error else pi / 3,
        devices={} if error else {"raspberry-pi-4": DeviceResult(estimated_p50_ms=pi),
                                  "pixel-3a": DeviceResult(estimated_p50_ms=phone)},
    )


@pytest.fixture()
def records():
    return [
        rec("float32", 280, 0.99, 3.0, 1.5),
        rec("int8", 75, 0.988, 1.1, 0.6),
        rec("prune0.8-int8", 22, 0.984, 1.2, 0.7, ["prune"]),
        rec("tiny", 9, 0.93, 0.5, 0.2, ["distillation"]),
        rec("qat-int8", 0, 0, 0, 0, ["qat"], error="ValueError: layer not supported"),
    ]


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    image = matplotlib.image.imread(path)  # decodes the whole file: a truncated PNG raises here
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image.std() > 0.01  # not a blank canvas


def test_report_files(tmp_path, records):
    constraints = Constraints(max_accuracy_drop=1.0, max_latency_ms={"raspberry-pi-4": 2.0, "pixel-3a": 0.65})
    targets = ["raspberry-pi-4", "pixel-3a"]
    selections = [select(records, constraints, "smallest", t) for t in targets]
    assert [s.chosen for s in selections] == ["prune0.8-int8", "int8"]
    baseline = {"model": "digits.keras", "accuracy": 0.99, "samples": 300}
    report = write_report(tmp_path, tmp_path / "recipe.toml", baseline, records, selections, targets,
                          ["grid combination left out: qat-float16"])

    assert sorted(p.name for p in report.plots) == [
        "accuracy_vs_latency_pixel-3a.png", "accuracy_vs_latency_raspberry-pi-4.png", "accuracy_vs_size.png"]
    for path in report.plots:
        assert_png(path)

    results = json.loads(report.results.read_text())
    assert [v["name"] for v in results["variants"]] == [r.name for r in records]
    int8 = results["variants"][1]
    for field in ("settings", "size_bytes", "gzip_bytes", "accuracy", "accuracy_drop", "host_latency_ms", "devices", "error"):
        assert field in int8
    assert int8["devices"]["pixel-3a"]["estimated_p50_ms"] == 0.6
    assert results["variants"][4]["error"] == "ValueError: layer not supported"
    assert results["selections"][0]["chosen"] == "prune0.8-int8"

    md = report.markdown.read_text()
    assert "| variant | techniques | quantize | size KB | gzip KB | accuracy % | drop pts | host ms |" in md
    assert "| prune0.8-int8 | prune | int8 |" in md
    assert "## Choice for raspberry-pi-4 (objective: smallest)" in md
    assert "**prune0.8-int8**: the smallest gzip size" in md
    assert "- tiny: breaks the constraints: accuracy drop 6.00 points > 1" in md
    assert "- prune0.8-int8: breaks the constraints: estimated latency on pixel-3a 0.7 ms > 0.65 ms" in md
    assert "- qat-int8: failed in optimize: ValueError: layer not supported" in md
    for path in report.plots:
        assert f"]({path.relative_to(tmp_path).as_posix()})" in md
    assert "grid combination left out: qat-float16" in md
    assert not list(tmp_path.rglob(".*"))  # no temporary file left


def test_report_when_nothing_meets_the_constraints(tmp_path, records):
    selections = [select(records, Constraints(max_gzip_kb=5), "fastest", "host")]
    report = write_report(tmp_path, tmp_path / "r.toml", None, records, selections, ["host"], [])
    md = report.markdown.read_text()
    assert "**None**: no variant meets the constraints." in md
    assert "Closest variants and the constraints they break:" in md
    assert "- tiny: gzip size 9.0 KB > 5 KB" in md
    assert [p.name for p in report.plots] == ["accuracy_vs_size.png", "accuracy_vs_latency_host.png"]
    for path in report.plots:
        assert_png(path)
