"""`run` end to end on the trained example model: real conversion, evaluation, benchmark and device estimate;
a variant that fails is recorded with its error while the others finish; a rerun redoes nothing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecompress.pipeline.cache import partial_files
from edgecompress.pipeline.run import run_recipe
from edgecompress.runtime import check_tflite_file

RECIPE = """\
model = "{model}"
devices = ["raspberry-pi-4"]
objective = "smallest"

[data]
train = "{train}"
test = "{test}"
calibration = "{calib}"
calibration_samples = 100

[benchmark]
runs = 10
min_secs = 0.1

[constraints]
max_accuracy_drop = 2.0

[grid]
quantize = ["dynamic", "int8"]

[[variants]]
name = "no-savings-lowrank"  # keeps all the spectral energy: no layer gets smaller, so optimize refuses it
low_rank = 1.0

[[variants]]
name = "pruned-int8"  # other weights, the same graph as int8: the same timings, not noise between them
quantize = "int8"
prune = 0.5
epochs = 2
"""


@pytest.fixture(scope="module")
def recipe(digits, digits_model_path, test_npz, calib_npz, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recipe")
    train = digits.train.save_npz(folder / "train.npz")
    path = folder / "sweep.toml"
    path.write_text(RECIPE.format(model=digits_model_path, train=train, test=test_npz, calib=calib_npz))
    return path


@pytest.fixture(scope="module")
def first_run(recipe, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sweep") / "run"
    return run_dir, run_recipe(recipe, run_dir, jobs=2, progress=False)


def test_run_end_to_end_with_an_isolated_failure(first_run):
    run_dir, result = first_run
    by_name = {r.name: r for r in result.records}
    assert list(by_name) == ["no-savings-lowrank", "pruned-int8", "dynamic", "int8"]

    failed = by_name["no-savings-lowrank"]
    assert failed.failed_stage == "optimize" and "low-rank" in failed.error and "\n" not in failed.error
    assert (run_dir / "variants" / "no-savings-lowrank" / "log.txt").read_text().strip()

    assert result.baseline["accuracy"] > 0.9
    for name in ("dynamic", "int8"):
        r = by_name[name]
        assert r.ok, r.error
        check_tflite_file(run_dir / r.tflite)  # a real, complete .tflite in the run folder
        assert r.size_bytes == (run_dir / r.tflite).stat().st_size
        assert r.gzip_bytes < r.size_bytes
        assert abs(r.accuracy_drop) <= 2.0 and r.accuracy > 0.9
        assert r.host_latency_ms > 0 and r.host_runtime.startswith("ai-edge-litert")
        pi = r.devices["raspberry-pi-4"]
        assert pi.error is None and pi.estimated_p50_ms > 0 and pi.estimated_p90_ms >= pi.estimated_p50_ms
        assert r.validation["top1_agreement"] >= 0.95
    # int8 quantizes activations too: a different precision, so a different device factor
    assert by_name["int8"].devices["raspberry-pi-4"].calibration["rule"] != by_name["dynamic"].devices["raspberry-pi-4"].calibration["rule"]

    # One graph, one estimate: the twin is not timed again, so noise cannot pass for a difference between them.
    twin, first = sorted((by_name["pruned-int8"], by_name["int8"]), key=lambda r: r.same_graph_as is None)
    assert twin.same_graph_as == first.name and first.same_graph_as is None
    assert twin.devices["raspberry-pi-4"] == first.devices["raspberry-pi-4"]
    assert twin.host_latency_ms == first.host_latency_ms
    assert f"{twin.name} runs the same graph as {first.name}" in (run_dir / "report.md").read_text()

    (selection,) = result.selections
    assert selection.target == "raspberry-pi-4" and selection.chosen in ("dynamic", "int8", "pruned-int8")
    assert set(selection.rejected) == {"no-savings-lowrank", "dynamic", "int8", "pruned-int8"} - {selection.chosen}

    results = json.loads((run_dir / "results.json").read_text())
    assert [v["name"] for v in results["variants"]] == list(by_name)
    assert results["variants"][0]["error"] == failed.error
    assert (run_dir / "report.md").read_text().count("| ok |") == 3
    assert {p.name for p in result.report.plots} == {"accuracy_vs_size.png", "accuracy_vs_latency_raspberry-pi-4.png"}
    assert partial_files(run_dir) == []


def test_rerun_through_the_cli_reuses_everything(recipe, first_run, run_cli):
    run_dir, _ = first_run
    stamps = {p: p.stat().st_mtime_ns for p in run_dir.glob("variants/*/*")}
    code, out, err = run_cli(["run", recipe, "-o", run_dir, "--json"])
    assert code == 0, err
    data = json.loads(out)
    assert data["redone"] == []  # the failure is final too: the same inputs fail the same way
    assert all(v["reused"] for v in data["variants"])
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_run_refuses_a_folder_it_did_not_make(recipe, tmp_path, run_cli):
    (tmp_path / "mine.txt").write_text("user data")
    code, out, err = run_cli(["run", recipe, "-o", tmp_path])
    assert code == 2 and "not an edgecompress run folder" in err and out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_executor_isolates_a_worker_over_its_memory_budget(digits_model_path, float_tflite, test_npz, tmp_path):
    """Real work in real workers: scoring the Keras model loads TensorFlow (hundreds of MB, over the budget:
    killed), scoring the .tflite needs only the runtime (fits), a missing data file raises (recorded)."""
    from edgecompress.pipeline.executor import LocalExecutor
    from edgecompress.pipeline.stages import BaselineTask, run_task

    tasks = [
        BaselineTask(digits_model_path, test_npz, "k", tmp_path / "keras.json"),
        BaselineTask(float_tflite, test_npz, "k", tmp_path / "tflite.json"),
        BaselineTask(float_tflite, tmp_path / "missing.npz", "k", tmp_path / "missing.json"),
    ]
    events: list[tuple[int, str]] = []
    outcomes = {o.index: o for o in LocalExecutor(jobs=2, memory_mb=350).map(run_task, tasks, lambda i, e: events.append((i, e)))}
    assert outcomes[0].crashed and "over its 350 MB budget" in outcomes[0].error
    assert outcomes[1].error is None and outcomes[1].value["accuracy"] > 0.9
    assert not outcomes[2].crashed and "missing.npz" in outcomes[2].error and outcomes[2].detail.startswith("Traceback")
    assert sorted(events) == [(0, "evaluate"), (1, "evaluate"), (2, "evaluate")]
    assert (tmp_path / "tflite.json").is_file() and not (tmp_path / "keras.json").exists()


def _recipe(folder: Path, model: Path, test: Path, variants: str, train: Path | None = None) -> Path:
    path = folder / "recipe.toml"
    lines = [f'model = "{model}"', "", "[data]", f'test = "{test}"'] + ([f'train = "{train}"'] if train else [])
    path.write_text("\n".join(lines) + "\n\n[benchmark]\nruns = 5\nmin_secs = 0.05\n\n" + variants)
    return path


def test_a_run_where_no_variant_finishes_exits_1_with_the_report(digits, digits_model_path, test_npz, tmp_path, run_cli):
    train = digits.train.save_npz(tmp_path / "train.npz")
    recipe = _recipe(tmp_path, digits_model_path, test_npz, "[[variants]]\nlow_rank = 1.0\n", train)
    code, out, err = run_cli(["run", recipe, "-o", tmp_path / "run"])
    assert code == 1 and "error: no variant finished" in err and "Traceback" not in err
    assert "failed: optimize" in out  # the table still shows what happened
    md = (tmp_path / "run" / "report.md").read_text()
    assert "| lowrank1-float32 |" in md and "failed: optimize" in md


def test_files_that_do_not_fit_the_model_stop_the_run_before_any_build(digits_model_path, test_npz, tmp_path, run_cli):
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64))  # the model takes 8x8x1 images
    recipe = _recipe(tmp_path, digits_model_path, flat, '[[variants]]\nquantize = "dynamic"\n')
    code, out, err = run_cli(["run", recipe, "-o", tmp_path / "run"])
    errors = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and out == "" and len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith("error: recipe recipe.toml: data.test: ") and "flat.npz" in errors[0]
    assert not list((tmp_path / "run").rglob("*.tflite")) and not (tmp_path / "run" / "report.md").exists()
