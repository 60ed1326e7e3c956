"""The report: results.json, report.md with the goal, the table and the choices, and PNG plots that are real
images with readable labels, failing variants marked and a Pareto front only where there is one."""
from __future__ import annotations

import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from edgecompress.pipeline.recipe import Constraints  # noqa: E402
from edgecompress.pipeline.record import DeviceResult, VariantRecord  # noqa: E402
from edgecompress.pipeline.report import _label, write_report  # noqa: E402
from edgecompress.pipeline.select import select  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONSTRAINTS = Constraints(max_accuracy_drop=1.0, max_latency_ms={"raspberry-pi-4": 2.0, "pixel-3a": 0.65})
TARGETS = ["raspberry-pi-4", "pixel-3a"]


def rec(name, kb, acc, pi, phone, techniques=(), error=None, host=None):
    return VariantRecord(
        name=name, settings={"quantize": "int8"}, techniques=list(techniques), key=name, error=error,
        failed_stage="optimize" if error else None,
        size_bytes=None if error else int(kb * 1024 * 1.3), gzip_bytes=None if error else int(kb * 1024),
        accuracy=None if error else acc, accuracy_drop=None if error else (0.99 - acc) * 100,
        host_latency_ms=None if error else (host if host is not None else pi / 3),
        devices={} if error else {"raspberry-pi-4": DeviceResult(estimated_p50_ms=pi),
                                  "pixel-3a": DeviceResult(estimated_p50_ms=phone)},
    )


@pytest.fixture()
def records():
    return [
        rec("float32", 280, 0.99, 3.0, 1.5),
        rec("int8", 75, 0.988, 1.1, 0.6, host=0.007086),
        rec("prune0.8-int8", 22, 0.9733, 1.2, 0.7, ["prune"]),  # 1.67 points below: over the 1-point limit
        rec("tiny", 9, 0.93, 0.5, 0.2, ["distillation"]),
        rec("qat-int8", 0, 0, 0, 0, ["qat"], error="ValueError: layer not supported"),
    ]


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    image = matplotlib.image.imread(path)  # decodes the whole file: a truncated PNG raises here
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image.std() > 0.01  # not a blank canvas


def row(md, name):
    return next(line for line in md.splitlines() if re.match(rf"\| \d+ \| {re.escape(name)} \|", line))


def test_report_files(tmp_path, records):
    selections = [select(records, CONSTRAINTS, "smallest", t) for t in TARGETS]
    assert [s.chosen for s in selections] == ["int8", "int8"]
    baseline = {"model": "digits.keras", "accuracy": 0.99, "samples": 300}
    report = write_report(tmp_path, tmp_path / "recipe.toml", "smallest", CONSTRAINTS, baseline, records, selections,
                          TARGETS, ["grid combination left out: qat-float16"])

    assert sorted(p.name for p in report.plots) == [
        "accuracy_vs_latency_pixel-3a.png", "accuracy_vs_latency_raspberry-pi-4.png", "accuracy_vs_size.png"]
    for path in report.plots:
        assert_png(path)

    results = json.loads(report.results.read_text())
    assert results["objective"] == "smallest"
    assert results["constraints"]["max_accuracy_drop"] == 1.0
    assert results["constraints"]["max_latency_ms"] == {"raspberry-pi-4": 2.0, "pixel-3a": 0.65}
    assert [v["name"] for v in results["variants"]] == [r.name for r in records]
    int8 = results["variants"][1]
    for field in ("settings", "size_bytes", "gzip_bytes", "accuracy", "accuracy_drop", "host_latency_ms", "devices", "error"):
        assert field in int8
    assert int8["devices"]["pixel-3a"]["estimated_p50_ms"] == 0.6
    assert results["variants"][4]["error"] == "ValueError: layer not supported"
    assert results["selections"][0]["chosen"] == "int8"

    md = report.markdown.read_text()
    head = md.split("## Variants")[0]  # the goal comes before the table
    assert "**Objective**: smallest, the smallest gzip size among the variants that meet the constraints." in head
    assert ("**Constraints**: accuracy drop <= 1.00 points below the source model; estimated latency on "
            "raspberry-pi-4 <= 2.0 ms; estimated latency on pixel-3a <= 650 us.") in head
    assert "| # | variant | techniques | quantize | size KB | gzip KB | accuracy % | drop pts | host p50 |" in md
    # the status says when a finished variant breaks the constraints, with the same numbers as the choice below
    assert row(md, "prune0.8-int8").startswith("| 3 | prune0.8-int8 | prune | int8 |")
    assert row(md, "prune0.8-int8").endswith("| 1.67 | 400 us | 1.2 ms | 700 us | fails: accuracy drop 1.67 > 1.00 points; "
                                             "estimated latency on pixel-3a 700 us > 650 us |")
    assert row(md, "float32").endswith("| 0.00 | 1.0 ms | 3.0 ms | 1.5 ms | fails: estimated latency on raspberry-pi-4 "
                                       "3.0 ms > 2.0 ms; estimated latency on pixel-3a 1.5 ms > 650 us |")
    assert row(md, "int8").endswith("| 0.20 | 7.1 us | 1.1 ms | 600 us | ok |")  # microseconds read as such
    assert row(md, "qat-int8").endswith("| failed: optimize |")
    assert "## Choice for raspberry-pi-4 (objective: smallest)" in md
    assert "**int8**: the smallest gzip size" in md
    assert "- tiny: breaks the constraints: accuracy drop 6.00 > 1.00 points" in md
    assert "- prune0.8-int8: breaks the constraints: accuracy drop 1.67 > 1.00 points" in md
    assert "- qat-int8: failed in optimize: ValueError: layer not supported" in md
    for path in report.plots:
        assert f"]({path.relative_to(tmp_path).as_posix()})" in md
    assert "grid combination left out: qat-float16" in md
    assert not list(tmp_path.rglob(".*"))  # no temporary file left

    phone = report.shown["accuracy_vs_latency_pixel-3a.png"]
    assert phone.xlabel == "estimated p50 latency on pixel-3a (ms)"
    assert phone.numbers == {"float32": 1, "int8": 2, "prune0.8-int8": 3, "tiny": 4}  # the table's numbers
    assert sorted(phone.failing) == ["float32", "prune0.8-int8", "tiny"]
    assert phone.legend == ["meets the constraints", "breaks the constraints", "Pareto front", "chosen (pixel-3a)"]
    size = report.shown["accuracy_vs_size.png"]
    assert "chosen (raspberry-pi-4, pixel-3a)" in size.legend


def test_report_when_nothing_meets_the_constraints(tmp_path, records):
    selections = [select(records, Constraints(max_gzip_kb=5), "fastest", "host")]
    report = write_report(tmp_path, tmp_path / "r.toml", "fastest", Constraints(max_gzip_kb=5), None, records,
                          selections, ["host"], [])
    md = report.markdown.read_text()
    assert "**Constraints**: gzip size <= 5 KB." in md
    assert "**None**: no variant meets the constraints." in md
    assert "Closest variants and the constraints they break:" in md
    assert "- tiny: gzip size 9.0 KB > 5 KB" in md
    assert [p.name for p in report.plots] == ["accuracy_vs_size.png", "accuracy_vs_latency_host.png"]
    for path in report.plots:
        assert_png(path)
    assert "chosen" not in " ".join(report.shown["accuracy_vs_latency_host.png"].legend)


def test_a_one_point_front_is_not_drawn_nor_listed(tmp_path):
    records = [rec("best", 10, 0.99, 1.0, 1.0), rec("worse", 20, 0.98, 2.0, 2.0)]  # best dominates everywhere
    selections = [select(records, Constraints(), "smallest", "host")]
    report = write_report(tmp_path, tmp_path / "r.toml", "smallest", Constraints(), None, records, selections,
                          ["host"], [])
    shown = report.shown["accuracy_vs_latency_host.png"]
    assert shown.front == ["best"] and "Pareto front" not in shown.legend and not shown.failing
    assert shown.xlabel == "measured p50 latency on this host (us)"  # 0.33 and 0.67 ms: microseconds fit
    assert "**Constraints**: none (every finished variant qualifies)." in report.markdown.read_text()


def test_labels_of_a_tight_cluster_do_not_overlap():
    fig, ax = plt.subplots(figsize=(7, 4.8))
    points = [(10.0, 98.0), (10.2, 98.02), (10.1, 97.99), (10.3, 98.01), (10.15, 98.03), (50.0, 90.0)]
    ax.scatter(*zip(*points))
    ax.set_xlim(0, 60)
    ax.set_ylim(85, 100)
    _label(ax, points, [str(i) for i in range(1, len(points) + 1)])
    fig.canvas.draw()
    boxes = [Text.get_window_extent(t) for t in ax.texts]  # the text alone, without its leader line
    assert len(boxes) == len(points)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    plt.close(fig)


def test_durations_and_drops_have_one_format_aligned_like_numbers():
    from edgecompress.tables import fmt_duration, fmt_points, table

    assert [fmt_duration(ms) for ms in (0.007086, 0.65, 1.0, 123.4, 2500.0, None)] == [
        "7.1 us", "650 us", "1.0 ms", "123 ms", "2.5 s", "-"]
    assert [fmt_points(p) for p in (1.666, -0.6667, -0.001, 0.0, None)] == ["1.67", "-0.67", "0.00", "0.00", "-"]
    lines = table(["variant", "p50"], [["a", fmt_duration(0.007086)], ["bb", fmt_duration(12.34)]]).splitlines()
    assert lines[2:] == ["a         7.1 us", "bb       12.3 ms"]  # right-aligned like the numbers they are
