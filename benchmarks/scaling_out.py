"""Sweeps on Ray: two measurements, each side by side in one run, on the bundled digits:

  overhead    the same 8-variant recipe built by the local executor (2 jobs) and by Ray (a private local
              instance, 2 CPUs), alternately in fresh run folders: Ray's wall time over the local one's
              (goal: at most 1.15)
  throughput  Ray with 1 CPU vs 2 CPUs on the same recipe: variants built per minute in the build phase
              (goal: 2 CPUs >= 1.6x); the whole run's ratio is printed too (it includes the driver's serial
              file check and measuring, which more workers do not shorten)

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

[training]  # a fixed EPOCHS epochs (patience as long never stops early): builds whose work outweighs a worker's start
epochs = EPOCHS
patience = EPOCHS
seed = 0

[benchmark]
runs = 20
min_secs = 0.1

[grid]  # 8 variants, each fine-tuned: 4 modes after pruning, 4 after clustering
quantize = ["none", "dynamic", "float16", "int8"]
prune = [0.5]

[[variants]]
cluster = 16

[[variants]]
cluster = 16
quantize = "dynamic"

[[variants]]
cluster = 16
quantize = "float16"

[[variants]]
cluster = 16
quantize = "int8"
"""


def timed_run(recipe: Path, run_dir: Path, executor) -> tuple[float, float]:
    """(the whole run's wall time, its build phase's), from a fresh run folder."""
    from edgecompress.pipeline.run import run_recipe

    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    result = run_recipe(recipe, run_dir, progress=False, executor=executor)
    seconds = time.perf_counter() - start
    failed = [r.name for r in result.records if not r.ok]
    if failed:
        sys.exit(f"variants failed: {failed}")
    return seconds, result.phase_seconds["build"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="folder for the model, data and runs (default: temporary)")
    parser.add_argument("--epochs", type=int, default=20, help="the fixed fine-tuning length of every build")
    parser.add_argument("--only", nargs="+", choices=["local-2", "ray-2", "ray-1"], help="time only these")
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
    recipe.write_text(RECIPE.replace("EPOCHS", str(args.epochs)))
    times: dict[str, list[float]] = {"local-2": [], "ray-2": [], "ray-1": []}
    builds: dict[str, list[float]] = {"local-2": [], "ray-2": [], "ray-1": []}
    makers = {"local-2": lambda: LocalExecutor(2), "ray-2": lambda: RayExecutor(2), "ray-1": lambda: RayExecutor(1)}
    for r in range(args.rounds):
        order = ("local-2", "ray-2", "ray-1") if r % 2 == 0 else ("ray-1", "ray-2", "local-2")
        for name in (n for n in order if not args.only or n in args.only):
            seconds, build = timed_run(recipe, folder / f"run-{name}", makers[name]())
            times[name].append(seconds)
            builds[name].append(build)
            print(f"round {r + 1}: {name:8s} {seconds:6.1f} s, builds {build:6.1f} s "
                  f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    bmed = {k: statistics.median(v) for k, v in builds.items() if v}
    print(f"\n8 variants, {args.rounds} rounds, medians (whole run / build phase): "
          + ", ".join(f"{k} {med[k]:.1f} / {bmed[k]:.1f} s" for k in med))
    if "local-2" in med and "ray-2" in med:
        print(f"Ray vs local executor (2 each): {med['ray-2'] / med['local-2']:.3f}x the wall time (goal <= 1.15)")
    if "ray-1" in med and "ray-2" in med:
        print(f"Ray 2 CPUs vs 1 CPU: build throughput {bmed['ray-1'] / bmed['ray-2']:.2f}x (goal >= 1.6), "
              f"whole run {med['ray-1'] / med['ray-2']:.2f}x")

if __name__ == "__main__":
    main()
