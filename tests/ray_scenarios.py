"""Scenarios for tests/test_ray.py, run in a child process inside a private network namespace.

Ray 2.60's own servers (GCS, raylet, workers) listen on every interface whatever the node address; run in
`unshare --net`, the only interface they can reach is that namespace's loopback. Each scenario prints
one JSON document on its last stdout line.

    python tests/ray_scenarios.py executor WORK_DIR
    python tests/ray_scenarios.py recipe RECIPE WORK_DIR
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgecompress.errors import UserError
from edgecompress.pipeline.executor import LocalExecutor, TaskFiles
from edgecompress.pipeline.ray_executor import RayExecutor


@dataclass(frozen=True)
class Item:
    source: Path
    out: Path
    mode: str  # ok | raise | die-once
    attempts: str  # a str, not a Path: left where it is, so attempts are counted across retries

    def files(self) -> TaskFiles:
        return TaskFiles((self.source,), (self.out,))


def work(item: Item, emit) -> dict:
    emit("started")
    with open(item.attempts, "a") as fh:
        fh.write("x")
    attempt = len(Path(item.attempts).read_text())
    if item.mode == "raise":
        raise ValueError("a bad setting")
    if item.mode == "die-once" and attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    item.out.mkdir(parents=True, exist_ok=True)
    (item.out / "result.txt").write_text(item.source.read_text().upper())
    (item.out / "summary.json").write_text(json.dumps({"result": str(item.out / "result.txt")}))
    (item.out / "seen.bin").write_text(str(item.source))  # binary files come back as they are
    return {"out": str(item.out), "attempt": attempt}


def executor(work_dir: Path) -> dict:
    (work_dir / "in.txt").write_text("shipped")
    modes = ["ok", "raise", "die-once"]
    items = [Item(work_dir / "in.txt", work_dir / f"out-{m}", m, str(work_dir / f"attempts-{m}")) for m in modes]
    events: list = []
    outcomes = list(RayExecutor(jobs=2).map(work, items, lambda i, text: events.append([i, text])))
    # One job's default budget is 80% of RAM, more than Ray's node offers: capped, the task still runs (it once
    # waited for ever); an explicit budget over every node's is refused in one line.
    alone = Item(work_dir / "in.txt", work_dir / "out-alone", "ok", str(work_dir / "attempts-alone"))
    with RayExecutor(jobs=1) as one:
        single = [o.error for o in one.map(work, [alone])]
        try:
            list(RayExecutor(jobs=1, memory_mb=10**8).map(work, [alone]))
            too_big = None
        except UserError as exc:
            too_big = str(exc)
    return {
        "single_job": single,
        "too_big": too_big,
        "outcomes": {modes[o.index]: {"value": o.value, "error": o.error, "detail": o.detail, "crashed": o.crashed}
                     for o in outcomes},
        "events": events,
        "files": {str(p.relative_to(work_dir)): p.read_text() for p in sorted(work_dir.rglob("*")) if p.is_file()},
    }


def recipe(recipe_path: Path, work_dir: Path) -> dict:
    from edgecompress.pipeline.run import run_recipe

    def summary(result) -> dict:
        return {r.name: {"ok": r.ok, "error": r.error, "size": r.size_bytes, "gzip": r.gzip_bytes,
                         "accuracy": r.accuracy} for r in result.records}

    def built_files(run_dir: Path) -> dict:
        return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns
                for p in sorted((run_dir / "variants").rglob("*")) if p.suffix in (".tflite", ".keras", ".json")
                and p.name != "record.json"}

    local = run_recipe(recipe_path, work_dir / "local", progress=False, executor=LocalExecutor(jobs=2))
    ray_dir = work_dir / "ray"
    ray_run = run_recipe(recipe_path, ray_dir, progress=False, executor=RayExecutor(jobs=2))
    before = built_files(ray_dir)
    for record in (ray_dir / "variants").glob("*/record.json"):  # as if the driver was killed before measuring
        record.unlink()
    resumed = run_recipe(recipe_path, ray_dir, progress=False, executor=RayExecutor(jobs=2))
    return {"local": summary(local), "ray": summary(ray_run), "resumed": summary(resumed),
            "ray_notes": ray_run.notes, "redone": resumed.redone,
            "built_before": before, "built_after": built_files(ray_dir)}


if __name__ == "__main__":
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)  # a new namespace's loopback starts down
    name, *args = sys.argv[1:]
    result = executor(Path(args[0])) if name == "executor" else recipe(Path(args[0]), Path(args[1]))
    print(json.dumps(result, default=str))
