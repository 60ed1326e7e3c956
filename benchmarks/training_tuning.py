"""How the fine-tuning defaults were chosen: each alternative measured on the VALIDATION split only.

The tuning model is the project's example CNN (edgecompress.examples, width 16, dense 128); the student is
its half-width, quarter-dense twin trained from scratch. benchmarks/training_defaults.py then checks the chosen
defaults on three other architectures and on the held-out test split, which this script never reads.
Each row: prune 80% + int8 .tflite, or the distilled student as int8 .tflite, scored on the 300 validation
images (one image = 0.33 points), averaged over --seeds fine-tuning seeds.

    python benchmarks/training_tuning.py [--seeds 2]
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from edgecompress.converters.convert import convert_model
from edgecompress.datasets import load_digits
from edgecompress.evaluate import evaluate
from edgecompress.examples import build_digits_cnn, train_digits_cnn
from edgecompress.optimize import DistillationConfig, Prune, TrainSettings, optimize
from edgecompress.optimize import prune as prune_module
from edgecompress.optimize import train as train_module
from edgecompress.tables import table
from _common import digits_files

# name -> (module, constant, value) overrides of the defaults; the first row is the defaults themselves.
# LOSS_MIN_DELTA 1.0 means no loss ever counts as better: training stops on the accuracy alone.
PRUNE_ALTERNATIVES = {
    "defaults": [],
    "constant learning rate": [(train_module, "LR_FACTOR", 1.0)],
    "patience 3": [(train_module, "PATIENCE", 3)],
    "stop on accuracy only": [(train_module, "LOSS_MIN_DELTA", 1.0)],
    "ramp from 50% (tutorial)": [(prune_module, "INITIAL_SHARE", 0.625)],
    "ramp over 20% of epochs": [(prune_module, "RAMP_SHARE", 0.2)],
}
DISTILL_ALTERNATIVES = {
    "defaults": [],
    "constant learning rate": [(train_module, "LR_FACTOR", 1.0)],
    "stop on accuracy only": [(train_module, "LOSS_MIN_DELTA", 1.0)],
    "learning rate 1e-3": [("settings", "learning_rate", 1e-3)],
    "patience 10": [(train_module, "PATIENCE", 10)],
}


@contextlib.contextmanager
def overridden(changes: list) -> Iterator[dict]:
    """Module constants set for the block; ('settings', field, value) entries become TrainSettings fields."""
    saved = [(m, k, getattr(m, k)) for m, k, _ in changes if m != "settings"]
    for m, k, v in changes:
        if m != "settings":
            setattr(m, k, v)
    try:
        yield {k: v for m, k, v in changes if m == "settings"}
    finally:
        for m, k, v in saved:
            setattr(m, k, v)


def settings_for(seed: int, fields: dict) -> TrainSettings:
    # TrainSettings' defaults are read at class creation: pass the module's current values explicitly.
    return TrainSettings(patience=train_module.PATIENCE, seed=seed, **fields)


def int8_accuracy(model: Path, work: Path, train: Path, val: Path) -> tuple[float, int]:
    out = work / f"{model.stem}.tflite"
    result = convert_model(model, out, quantize="int8", calibration=train, force=True)
    return evaluate(out, val).accuracy, result.gzip_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    digits = load_digits(seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, val, _ = digits_files(work, digits)
        teacher = work / "teacher.keras"
        train_digits_cnn(epochs=20, seed=0, data=digits).save(teacher)
        source_acc, _ = int8_accuracy(teacher, work, train, val)
        rows.append(("source, int8", "-", f"{100 * source_acc:.2f}", "-"))
        studies = (("prune 80% + int8", PRUNE_ALTERNATIVES), ("distilled student, int8", DISTILL_ALTERNATIVES))
        for what, alternatives in studies:
            for name, changes in alternatives.items():
                accs, epochs = [], []
                for seed in range(args.seeds):
                    with overridden(changes) as fields:
                        settings = settings_for(seed, fields)
                        if what.startswith("prune"):
                            result = optimize(teacher, work / "m.keras", train, [Prune(0.8)], val=val,
                                              settings=settings, force=True)
                        else:
                            student = work / "student.keras"
                            build_digits_cnn(seed, width=8, dense=32).save(student)
                            result = optimize(student, work / "m.keras", train, [], val=val, settings=settings,
                                              distill=DistillationConfig(teacher), force=True)
                    accs.append(int8_accuracy(result.output, work, train, val)[0])
                    epochs.append(sum(t.epochs_run for t in result.training))
                rows.append((what, name, f"{100 * np.mean(accs):.2f}", f"{np.mean(epochs):.1f}"))
    print(table(("variant", "training settings", "val top-1 % (int8)", "epochs run"), rows,
                title=f"Fine-tuning alternatives on the validation split ({args.seeds} seeds each)"))


if __name__ == "__main__":
    main()
