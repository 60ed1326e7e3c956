"""How long `edgecompress demo` takes from a fresh folder: wall time, and where the time goes.

    /work/venv/bin/python benchmarks/demo_time.py [--jobs N] [--keep DIR]

Runs the real CLI (`edgecompress demo -o TMP --json`) in a fresh temporary folder and prints the wall time
(goal: under 5 minutes on a 2-core machine), the baseline's training time, and per stage the time summed
over the variants (optimize, convert, evaluate, measure: the host benchmark and the device runs). Device
estimates are calibrated once per host and cached (~/.cache/edgecompress): the script says whether that
cache was already there, since a first run on a new machine also builds and times the reference models.
Also prints the load average, because on a shared machine the wall time says as much about the neighbours.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

STAGES = ("optimize", "convert", "evaluate", "measure")


def calibrated() -> bool:
    root = Path(os.environ.get("EDGECOMPRESS_CACHE", Path.home() / ".cache" / "edgecompress"))
    return any((root / "calibration").glob("*.json"))


def time_demo(folder: Path, jobs: int) -> tuple[float, dict]:
    command = [sys.executable, "-m", "edgecompress", "demo", "-o", str(folder), "--jobs", str(jobs), "--json"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"the demo failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return wall, json.loads(done.stdout)


def report(wall: float, result: dict, jobs: int, cache_before: bool, load_before: float) -> str:
    per_stage: dict[str, float] = defaultdict(float)
    for v in result["variants"]:
        for stage, seconds in (v.get("seconds") or {}).items():
            per_stage[stage] += seconds
    failed = [v["name"] for v in result["variants"] if v["error"]]
    lines = [
        f"edgecompress demo, {len(result['variants'])} variants, --jobs {jobs}, {os.cpu_count()} cores, "
        f"load average before {load_before:.1f}, after {os.getloadavg()[0]:.1f}",
        f"device calibration cache present before the run: {'yes' if cache_before else 'no (first run on this host)'}",
        f"wall time             {wall:7.1f} s  (goal: under 300 s)",
        f"  train baseline      {result['train_seconds']:7.1f} s",
        f"  run the recipe      {result['run_seconds']:7.1f} s",
        "summed over variants (builds run --jobs at a time, so these add up to more than the wall time):",
    ]
    lines += [f"  {stage:<18}  {per_stage.get(stage, 0.0):7.1f} s" for stage in STAGES]
    lines.append(f"failed variants: {', '.join(failed) if failed else 'none'}")
    for s in result["selections"]:
        lines.append(f"chosen for {s['target']}: {s['chosen'] or 'none'} ({s['why']})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="Run in this (new) folder and keep it, instead of a temporary one.")
    args = parser.parse_args()
    cache_before, load_before = calibrated(), os.getloadavg()[0]
    if args.keep:
        wall, result = time_demo(args.keep, args.jobs)
    else:
        with tempfile.TemporaryDirectory(prefix="edgecompress-demo-") as tmp:
            wall, result = time_demo(Path(tmp) / "demo", args.jobs)
    print(report(wall, result, args.jobs, cache_before, load_before))


if __name__ == "__main__":
    main()
