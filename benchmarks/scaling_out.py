"""Issue: sweeps on Ray. Two measurements, each side by side in one run, on the bundled digits:

  overhead    the same 8-variant recipe built by the local executor (2 jobs) and by Ray (a private local
              instance, 2 CPUs), alternately in fresh run folders: Ray's wall time over the local one's
              (goal: at most 1.15)
  throughput  Ray with 1 CPU vs 2 CPUs on the same recipe: variants per minute (goal: 2 CPUs >= 1.6x)

    python benchmarks/scaling_out.py [--rounds N] [--keep DIR]

Ray's servers listen on every interface whatever address it is given (Ray 2.60), so the script re-runs
itself in a private network namespace (`unshare --net`, root) where only loopback exists. The model is
trained once (the demo's files); timings include Ray's start-up, as a user's `run --executor ray` does.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = """\
model = "digits.keras"
objective = "smallest"

[data]
train = "data/train.npz"
val = "data/val.npz"
test = "data/test.npz"
calibration = "data/calibration.npz"
calibration_samples = 100

[training]
epochs = 2
seed = 0

[benchmark]
runs = 20
min_secs = 0.1

[grid]  # 8 variants: 4 post-training modes, and the same 4 after pruning (2 epochs of fine-tuning)
quantize = ["none", "dynamic", "float16", "int8"]
prune = [0, 0.5]
"""


def timed_run(recipe: Path, run_dir: Path, executor) -> float:
    from edgecompress.pipeline.run import run_recipe

    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    result = run_recipe(recipe, run_dir, progress=False, executor=executor)
    seconds = time.perf_counter() - start
    failed = [r.name for r in result.records if not r.ok]
    if failed:
        sys.exit(f"variants failed: {failed}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="folder for the model, data and runs (default: temporary)")
    args = parser.parse_args()
    if os.environ.get("EDGECOMPRESS_NETNS") != "1":
        os.environ["EDGECOMPRESS_NETNS"] = "1"
        os.execvp("unshare", ["unshare", "--net", "--", sys.executable, *sys.argv])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    from edgecompress.demo import prepare_demo
    from edgecompress.pipeline.executor import LocalExecutor
    from edgecompress.pipeline.ray_executor import RayExecutor

    folder = args.keep or Path(tempfile.mkdtemp(prefix="scaling-out-"))
    if not (folder / "digits.keras").exists():
        prepare_demo(folder, force=True)
    recipe = folder / "scaling.toml"
    recipe.write_text(RECIPE)
    times: dict[str, list[float]] = {"local-2": [], "ray-2": [], "ray-1": []}
    makers = {"local-2": lambda: LocalExecutor(2), "ray-2": lambda: RayExecutor(2), "ray-1": lambda: RayExecutor(1)}
    for r in range(args.rounds):
        for name in (("local-2", "ray-2", "ray-1") if r % 2 == 0 else ("ray-1", "ray-2", "local-2")):
            seconds = timed_run(recipe, folder / f"run-{name}", makers[name]())
            times[name].append(seconds)
            print(f"round {r + 1}: {name:8s} {seconds:6.1f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n8 variants, {args.rounds} rounds, medians: local 2 jobs {med['local-2']:.1f} s, Ray 2 CPUs "
          f"{med['ray-2']:.1f} s, Ray 1 CPU {med['ray-1']:.1f} s")
    print(f"Ray overhead vs local (2 jobs): {med['ray-2'] / med['local-2']:.3f}x wall time (goal <= 1.15)")
    print(f"Ray throughput 2 CPUs vs 1 CPU: {med['ray-1'] / med['ray-2']:.2f}x (goal >= 1.6)")


if __name__ == "__main__":
    main()
