"""A run killed with SIGKILL resumes without redoing finished work and leaves no half-written file.

The run goes through the real CLI in a child process; it is killed twice (during the builds, then during
the measurements), then completed. Work finished before a kill is not redone: its files keep their
modification times, and the final results mark those variants as reused.
"""
from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecompress.fileio import current_umask
from edgecompress.pipeline.cache import partial_files
from edgecompress.runtime import check_tflite_file, load_interpreter

RECIPE = """\
model = "{model}"

[data]
test = "{test}"
calibration = "{calib}"
calibration_samples = 50

[benchmark]  # slow enough measurements that the kill lands between two finished variants
runs = 20
min_secs = 1.0

[grid]
quantize = ["none", "dynamic", "float16"]
"""
NAMES = ["float32", "dynamic", "float16"]


@pytest.fixture()
def recipe(digits_model_path, test_npz, calib_npz, tmp_path) -> Path:
    path = tmp_path / "resume.toml"
    path.write_text(RECIPE.format(model=digits_model_path, test=test_npz, calib=calib_npz))
    return path


def start(recipe: Path, run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edgecompress", "run", str(recipe), "-o", str(run_dir), "--jobs", "1"],
        cwd=recipe.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def kill_when(proc: subprocess.Popen, condition, timeout: float = 300) -> set[int]:
    """SIGKILL the run's main process once CONDITION holds; returns the worker processes it had then."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before the kill point: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.02)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    proc.stderr.close()
    return workers


def assert_complete_files(run_dir: Path) -> None:
    """Every file at its final name is whole: JSON parses, each .tflite loads in the interpreter."""
    for path in run_dir.rglob("*.json"):
        if not path.name.startswith("."):
            json.loads(path.read_text())
    for path in run_dir.rglob("*.tflite"):
        if not path.name.startswith("."):
            check_tflite_file(path)
            load_interpreter(path)[0].allocate_tensors()


def stamps(run_dir: Path, name: str) -> dict[str, int]:
    folder = run_dir / "variants" / name
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if not p.name.startswith(".")}


def test_killed_twice_then_resumed(recipe, tmp_path):
    run_dir = tmp_path / "run"
    records = {n: run_dir / "variants" / n / "record.json" for n in NAMES}
    builds = {n: run_dir / "variants" / n / "build.json" for n in NAMES}

    # kill 1: the first variant is built, the second is being converted
    proc = start(recipe, run_dir)
    workers = kill_when(proc, lambda: builds["float32"].exists() and (run_dir / "variants" / "dynamic" / "key").exists())
    assert workers, "the build should be running in a worker process"
    deadline = time.monotonic() + 10
    while any(alive(w) for w in workers):  # workers die with the run: none keeps writing behind it
        assert time.monotonic() < deadline, "a worker outlived the killed run"
        time.sleep(0.05)
    assert_complete_files(run_dir)
    built_first = stamps(run_dir, "float32")

    # kill 2: during the measurements, once the first variant's record exists
    proc = start(recipe, run_dir)
    kill_when(proc, lambda: records["float32"].exists())
    finished = [n for n in NAMES if records[n].exists()]
    assert 1 <= len(finished) < len(NAMES)
    assert_complete_files(run_dir)
    assert {k: v for k, v in stamps(run_dir, "float32").items() if k != "record.json"} == {
        k: v for k, v in built_first.items() if k != "record.json"}, "the built variant was rebuilt"
    before = {n: stamps(run_dir, n) for n in finished}

    # the rerun completes, redoing nothing that was finished
    done = subprocess.run(
        [sys.executable, "-m", "edgecompress", "run", str(recipe), "-o", str(run_dir), "--json"],
        cwd=recipe.parent, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert sorted(result["redone"]) == sorted(set(NAMES) - set(finished))
    variants = {v["name"]: v for v in result["variants"]}
    assert all(variants[n]["error"] is None for n in NAMES)
    assert all(variants[n]["reused"] for n in finished)
    for n in finished:
        assert stamps(run_dir, n) == before[n], f"{n} was redone"
    assert partial_files(run_dir) == []
    assert_complete_files(run_dir)
    assert (run_dir / "report.md").is_file()
    assert not (run_dir / "run.lock").exists()  # the lock is on the folder: a finished run leaves none
    assert stat.S_IMODE((run_dir / "report.md").stat().st_mode) == 0o666 & ~current_umask()
