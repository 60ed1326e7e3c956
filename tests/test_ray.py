"""The Ray executor on a real local Ray instance (2 CPUs), inside a private network namespace so that Ray's
servers reach nothing but loopback: files shipped both ways, a raised error final with its traceback, a
killed worker retried, a recipe giving the local executor's results, and a resumed run rebuilding nothing."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).with_name("ray_scenarios.py")

RECIPE = """\
model = "{model}"
objective = "smallest"

[data]
train = "{train}"
test = "{test}"
calibration = "{calib}"
calibration_samples = 50

[training]
epochs = 1

[benchmark]
runs = 5
min_secs = 0.05

[execution]
executor = "ray"

[grid]
quantize = ["none", "int8"]

[[variants]]
quantize = "int8"
prune = 0.5
"""


def _scenario(*args: object) -> dict:
    assert shutil.which("unshare") and shutil.which("ip"), "util-linux (unshare) and iproute2 (ip) are needed"
    proc = subprocess.run(["unshare", "--net", "--", sys.executable, str(SCENARIOS), *map(str, args)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def executor_run(tmp_path_factory) -> dict:
    return _scenario("executor", tmp_path_factory.mktemp("ray-executor"))


def test_files_travel_to_the_worker_and_back(executor_run):
    ok = executor_run["outcomes"]["ok"]
    assert ok["error"] is None
    files = executor_run["files"]
    # the worker read a scratch copy of its input, and the paths it reported map back to the driver's
    assert "edgecompress-ray-" in files["out-ok/seen.bin"] and files["out-ok/seen.bin"].endswith("/in.txt")
    assert ok["value"]["out"].endswith("out-ok") and "edgecompress-ray-" not in ok["value"]["out"]
    assert files["out-ok/result.txt"] == "SHIPPED"
    summary = json.loads(files["out-ok/summary.json"])
    assert summary["result"].endswith("out-ok/result.txt") and "edgecompress-ray-" not in summary["result"]
    assert ["0", "started"] in [[str(i), t] for i, t in executor_run["events"]]


def test_a_raised_error_is_final_with_its_traceback(executor_run):
    raised = executor_run["outcomes"]["raise"]
    assert raised["error"] == "ValueError: a bad setting" and not raised["crashed"]
    assert "Traceback" in raised["detail"] or "line" in raised["detail"]
    assert "\x1b[" not in raised["detail"]
    assert executor_run["files"]["attempts-raise"] == "x"  # not retried
    assert "out-raise/result.txt" not in executor_run["files"]


def test_task_memory_fits_the_node(executor_run):
    assert executor_run["single_job"] == [None]
    assert "worker_memory_mb 100000000 is more than any Ray node offers" in executor_run["too_big"]


def test_a_killed_worker_is_retried(executor_run):
    died = executor_run["outcomes"]["die-once"]
    assert died["error"] is None and died["value"]["attempt"] == 2
    assert executor_run["files"]["attempts-die-once"] == "xx"
    assert executor_run["files"]["out-die-once/result.txt"] == "SHIPPED"


@pytest.fixture(scope="module")
def recipe_runs(digits, digits_model_path, test_npz, calib_npz, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("ray-recipe")
    train = digits.train.save_npz(folder / "train.npz")
    recipe = folder / "sweep.toml"
    recipe.write_text(RECIPE.format(model=digits_model_path, train=train, test=test_npz, calib=calib_npz))
    return _scenario("recipe", recipe, folder)


def test_ray_gives_the_local_executors_results(recipe_runs):
    local, ray = recipe_runs["local"], recipe_runs["ray"]
    assert set(local) == set(ray) == {"float32", "int8", "prune0.5-int8"}
    for name in local:
        assert local[name]["ok"] and ray[name]["ok"], (local[name]["error"], ray[name]["error"])
        if name != "prune0.5-int8":  # no training: conversions are bit-for-bit the same
            assert ray[name]["size"] == local[name]["size"] and ray[name]["gzip"] == local[name]["gzip"]
        assert ray[name]["accuracy"] == pytest.approx(local[name]["accuracy"], abs=0.01)
    assert any("local Ray instance" in n for n in recipe_runs["ray_notes"])


def test_a_resumed_ray_run_rebuilds_nothing(recipe_runs):
    assert sorted(recipe_runs["redone"]) == sorted(recipe_runs["ray"])  # re-measured, since records were gone
    assert recipe_runs["built_after"] == recipe_runs["built_before"]  # ...but no model file was rewritten
    assert recipe_runs["resumed"] == recipe_runs["ray"]
