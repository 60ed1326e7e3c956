"""Where an estimated device p90 gets its spread: a multi-threaded host run vs a one-thread run, side by side.

`benchmark --device` runs a model with the device's threads (capped at the host's cores, 2 here). The
estimate scales the p50 by the device's rule; its p90 is that p50 times a p90/p50 measured on this host.
It used to take the ratio of the multi-threaded run itself; it now takes it from a one-thread run. This
script measures both on a tiny model (the digits CNN, microseconds per inference), ROUNDS times in
alternation, with the sweep's own phase settings (50 runs, 0.2 s), and prints each round's p50, p90, p99 and
p90/p50, then the spread of the ratios: the "before" column is what the estimate's p90/p50 used to be.

    .venv/bin/python benchmarks/estimate_spread.py [--rounds 10] [--model MODEL.tflite]

Without --model it trains the digits CNN for one epoch and converts it (float32): timing does not depend on
how well it is trained.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from edgecompress.measure import MeasureOptions, measure
from edgecompress.tables import table


def tiny_model(folder: Path) -> Path:
    from edgecompress.converters import convert_model
    from edgecompress.datasets import load_digits
    from edgecompress.examples import train_digits_cnn

    keras_path = folder / "digits.keras"
    train_digits_cnn(epochs=1, seed=0, data=load_digits()).save(keras_path)
    return convert_model(keras_path, folder / "digits.tflite").output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", type=int, default=2, help="the device run's host threads (default 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_model(Path(tmp))
        rows, ratios = [], {1: [], args.threads: []}
        for i in range(args.rounds):
            for threads in (args.threads, 1):
                options = MeasureOptions(threads=threads, cpu_cores=threads, runs=50, min_secs=0.2, warmup_min_secs=0.2)
                s = measure(model, options).latency_ms
                ratios[threads].append(s.p90 / s.p50)
                rows.append([i + 1, threads, s.count, s.p50 * 1000, s.p90 * 1000, s.p99 * 1000, s.p90 / s.p50])
    print(table(["round", "threads", "runs", "p50 us", "p90 us", "p99 us", "p90/p50"], rows, title=f"{model}"))
    summary = [
        [f"{threads} thread(s)", min(r), statistics.median(r), max(r)]
        for threads, r in ((args.threads, ratios[args.threads]), (1, ratios[1]))
    ]
    print()
    print(table(["p90/p50 of the run at", "min", "median", "max"], summary,
                title=f"before: the estimate's p90/p50 was the {args.threads}-thread run's; after: the 1-thread run's"))


if __name__ == "__main__":
    main()
