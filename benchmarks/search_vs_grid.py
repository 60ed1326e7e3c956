"""TPE search vs the full grid on the bundled digits: how close to the grid's best a third of the trials get.

    python benchmarks/search_vs_grid.py [--trials N] [--seeds 0 1 2] [--keep DIR]

The space: quantize {dynamic, float16, int8} x prune {0, 0.5, 0.7, 0.8} x cluster {0, 8, 16, 32} = 48
variants of the demo's trained CNN, objective smallest (gzip) within 1 point of the source's accuracy. The
grid is built once (every variant); each TPE search then runs in the same run folder, so a variant it
proposes is read from the grid's cache rather than rebuilt: what is compared is the number of trials and
the best feasible objective found, not wall time. Prints the grid's best and, per seed, TPE's best, its
ratio to the grid's, and the trial at which it was found.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
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
runs = 10
min_secs = 0.05

[constraints]
max_accuracy_drop = 1.0

{search}

[grid]
quantize = ["dynamic", "float16", "int8"]
prune = [0, 0.5, 0.7, 0.8]
cluster = [0, 8, 16, 32]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="TPE's budget (default: a third of 48)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="folder for the model, data and runs (default: temporary)")
    args = parser.parse_args()

    from edgecompress.demo import prepare_demo
    from edgecompress.pipeline.run import run_recipe
    from edgecompress.pipeline.search import objective_value

    folder = args.keep or Path(tempfile.mkdtemp(prefix="search-vs-grid-"))
    if not (folder / "digits.keras").exists():
        prepare_demo(folder, force=True)
    grid = folder / "grid.toml"
    grid.write_text(RECIPE.format(search=""))
    full = run_recipe(grid, folder / "run", jobs=args.jobs)
    chosen = full.selections[0].chosen
    if chosen is None:
        raise SystemExit("no grid variant meets the constraint: nothing to compare against")
    best = next(objective_value(r, "smallest", "host") for r in full.records if r.name == chosen)
    print(f"\ngrid: {len(full.records)} variants, best feasible {chosen} at {best / 1024:.1f} KB gzip")
    ratios = []
    for seed in args.seeds:
        recipe = folder / f"tpe-{seed}.toml"
        recipe.write_text(RECIPE.format(search=f'[search]\nstrategy = "tpe"\ntrials = {args.trials}\nseed = {seed}'))
        result = run_recipe(recipe, folder / "run", jobs=args.jobs, progress=False)
        found = result.search.best()
        ratio = found.objective / best if found else float("inf")
        ratios.append(ratio)
        print(f"TPE seed {seed}: {len(result.search.trials)} trials, best {found.variant if found else 'none'} "
              + (f"at {found.objective / 1024:.1f} KB (x{ratio:.3f} of the grid's best), found at trial {found.number}"
                 if found else ""))
    print(f"mean ratio over {len(args.seeds)} seeds: {statistics.mean(ratios):.3f} (goal <= 1.05) with "
          f"{args.trials} of {len(full.records)} trials ({args.trials / len(full.records):.0%})")


if __name__ == "__main__":
    main()
