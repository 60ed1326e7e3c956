"""Acceptance check of the fine-tuning defaults on three classifiers they were not tuned on.

For each architecture (a plain CNN, a depthwise-separable CNN, an MLP), trained on the bundled digits' training
split, with edgecompress's DEFAULT training settings (validation split for early stopping):
  prune 80% + int8                  goal: at most 0.5 points below the source, gzip ratio >= 10x, and better
                                    accuracy than TF-MOT's tutorial recipe at an equal or better ratio
  TF-MOT tutorial by hand           prune_low_magnitude, PolynomialDecay(0.5 -> 0.8 over 4 epochs, masks updated
                                    every step), batch 128, validation_split 0.1, strip_pruning, int8 PTQ
                                    (the same converter)
  distilled student + int8          a tenth of the teacher's parameters, from scratch: within 1 point
  prune 80% + cluster 16 + QAT      within 0.5 points at 14x or better
Accuracy is on the held-out test split (300 images: one image is 0.33 points), through the .tflite interpreter;
the ratio and the drop are against the source's float32 .tflite. The defaults were chosen on the validation
split with the example CNN (benchmarks/training_tuning.py), never on this test split.

    python benchmarks/training_defaults.py [--work-dir DIR] [--only cnn,dscnn,mlp]
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgecompress.converters.convert import convert_model
from edgecompress.datasets import Digits, load_digits
from edgecompress.evaluate import evaluate
from edgecompress.examples import compile_classifier
from edgecompress.models import import_tf_keras
from edgecompress.optimize import QAT, Cluster, DistillationConfig, Prune, optimize
from edgecompress.optimize.layers import import_tfmot
from edgecompress.tables import table
from _common import digits_files

SOURCE_EPOCHS = 30


def cnn(scale: float) -> list[Any]:
    """Conv 32, Conv 64, MaxPool, Dense 128, Dense 10 (the student: a quarter of the widths)."""
    layers = import_tf_keras().layers
    w = int(32 * scale)
    return [layers.Conv2D(w, 3, padding="same", activation="relu"),
            layers.Conv2D(2 * w, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(int(128 * scale) + 16 * (scale < 1), "relu")]


def dscnn(scale: float) -> list[Any]:
    """Conv 32, depthwise-separable Conv 64 and 128 with batch normalization, MaxPool, Dense 128."""
    layers = import_tf_keras().layers
    w = int(32 * scale)
    return [layers.Conv2D(w, 3, padding="same", activation="relu"),
            layers.SeparableConv2D(2 * w, 3, padding="same", use_bias=False), layers.BatchNormalization(),
            layers.ReLU(),
            layers.SeparableConv2D(4 * w, 3, padding="same", use_bias=False), layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(int(128 * scale) + 16 * (scale < 1), "relu")]


def mlp(scale: float) -> list[Any]:
    """Dense 256, Dense 128 (the student: one hidden layer of 64)."""
    layers = import_tf_keras().layers
    if scale < 1:
        return [layers.Flatten(), layers.Dense(64, "relu")]
    return [layers.Flatten(), layers.Dense(256, "relu"), layers.Dense(128, "relu")]


ARCHITECTURES: dict[str, Callable[[float], list[Any]]] = {"cnn": cnn, "dscnn": dscnn, "mlp": mlp}
STUDENT_SCALE = 0.25


def build(arch: str, scale: float, seed: int) -> Any:
    keras = import_tf_keras()
    keras.utils.set_random_seed(seed)
    body = ARCHITECTURES[arch](scale)
    return keras.Sequential([keras.Input((8, 8, 1)), *body, keras.layers.Dense(10, activation="softmax")],
                            name=f"{arch}_{'student' if scale < 1 else 'source'}")


@dataclass
class Row:
    variant: str
    gzip_bytes: int
    correct: int
    total: int
    epochs: str = "-"
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


def tutorial_prune(source: Path, out: Path, digits: Digits) -> str:
    """TF-MOT's pruning tutorial, by hand: whole-model prune_low_magnitude, 4 epochs, strip."""
    keras = import_tf_keras()
    tfmot = import_tfmot()
    model = keras.models.load_model(source)
    keras.utils.set_random_seed(0)
    batch, epochs = 128, 4
    steps = math.ceil(len(digits.train.y) * 0.9 / batch)
    # The tutorial keeps PolynomialDecay's default frequency of 100 steps, fine for MNIST's 422 steps an epoch;
    # digits has 9, so with it the masks would never update (seen: no zeros at all). Every step instead.
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.50, 0.80, begin_step=0, end_step=steps * epochs, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    pruned.fit(digits.train.x, digits.train.y, batch_size=batch, epochs=epochs, validation_split=0.1, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    tfmot.sparsity.keras.strip_pruning(pruned).save(out)
    return str(epochs)


def run_architecture(arch: str, digits: Digits, work: Path) -> tuple[list[Row], int, int]:
    train, val, test = (work / "train.npz", work / "val.npz", work / "test.npz")
    source = work / f"{arch}.keras"
    model = compile_classifier(build(arch, 1.0, seed=0))
    model.fit(digits.train.x, digits.train.y, validation_data=(digits.val.x, digits.val.y),
              epochs=SOURCE_EPOCHS, batch_size=32, verbose=0)
    model.save(source)
    student = work / f"{arch}_student.keras"
    student_model = build(arch, STUDENT_SCALE, seed=1)
    student_model.save(student)
    rows: list[Row] = []

    def measure(variant: str, keras_file: Path, quantize: str, epochs: str = "-", seconds: float = 0.0) -> None:
        out = work / f"{arch}_{len(rows)}.tflite"
        result = convert_model(keras_file, out, quantize=quantize, calibration=train if quantize != "none" else None,
                               force=True)
        acc = evaluate(out, test).accuracy
        rows.append(Row(variant, result.gzip_bytes, round(acc * len(digits.test.y)), len(digits.test.y), epochs,
                        seconds))

    def epochs_of(result: Any) -> str:
        return " + ".join(f"{t.stage} {t.epochs_run} (kept {t.best_epoch})" for t in result.training)

    measure("source float32", source, "none")
    measure("source int8 PTQ", source, "int8")

    start = time.perf_counter()
    pruned = optimize(source, work / f"{arch}_pruned.keras", train, [Prune(0.8)], val=val, force=True)
    measure("prune 80% + int8 (defaults)", pruned.output, "int8", epochs_of(pruned), time.perf_counter() - start)

    start = time.perf_counter()
    epochs = tutorial_prune(source, work / f"{arch}_tutorial.keras", digits)
    measure("TF-MOT tutorial prune + int8", work / f"{arch}_tutorial.keras", "int8", epochs,
            time.perf_counter() - start)

    start = time.perf_counter()
    distilled = optimize(student, work / f"{arch}_distilled.keras", train, [], val=val,
                         distill=DistillationConfig(source), force=True)
    measure("distilled student + int8 (defaults)", distilled.output, "int8", epochs_of(distilled),
            time.perf_counter() - start)

    start = time.perf_counter()
    pcq = optimize(source, work / f"{arch}_pcq.h5", train, [Prune(0.8), Cluster(16), QAT()], val=val, force=True)
    measure("prune 80% + cluster 16 + QAT int8 (defaults)", pcq.output, "int8", epochs_of(pcq),
            time.perf_counter() - start)
    return rows, model.count_params(), student_model.count_params()


def verdicts(rows: list[Row]) -> dict[str, str]:
    base = rows[0]
    by = {r.variant: r for r in rows}

    def ratio(r: Row) -> float:
        return base.gzip_bytes / r.gzip_bytes

    def drop(r: Row) -> float:
        return 100 * (base.accuracy - r.accuracy)

    ours, tut = by["prune 80% + int8 (defaults)"], by["TF-MOT tutorial prune + int8"]
    student = by["distilled student + int8 (defaults)"]
    pcq = by["prune 80% + cluster 16 + QAT int8 (defaults)"]

    def say(ok: bool, goal: str) -> str:
        return f"{'met' if ok else 'MISSED'} ({goal})"

    return {
        # Two 80%-sparse int8 files differ in gzip size by a few bytes depending on which weights are zero:
        # ratios within 1% count as equal.
        ours.variant: say(drop(ours) <= 0.5 and ratio(ours) >= 10 and ours.accuracy > tut.accuracy
                          and ratio(ours) >= 0.99 * ratio(tut),
                          "drop <= 0.5, >= 10x, more accurate than the tutorial at a ratio within 1% or better"),
        student.variant: say(drop(student) <= 1.0, "drop <= 1.0"),
        pcq.variant: say(drop(pcq) <= 0.5 and ratio(pcq) >= 14, "drop <= 0.5, >= 14x"),
    }


def render(arch: str, rows: list[Row], params: int, student_params: int) -> str:
    base = rows[0]
    goals = verdicts(rows)
    lines = []
    for r in rows:
        lines.append((r.variant, r.gzip_bytes, f"{base.gzip_bytes / r.gzip_bytes:.1f}x", f"{r.correct}/{r.total}",
                      f"{100 * r.accuracy:.2f}%", f"{100 * (base.accuracy - r.accuracy):+.2f}",
                      f"{r.seconds:.0f}" if r.seconds else "-", r.epochs, goals.get(r.variant, "-")))
    return table(("variant", "gzip B", "ratio", "correct", "top-1", "drop", "train s", "epochs run", "goal"), lines,
                 title=f"\n{arch}: {params:,} parameters, student {student_params:,} "
                       f"({student_params / params:.0%}); held-out test split")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, help="Keep the models here (default: a temporary folder).")
    parser.add_argument("--only", default=",".join(ARCHITECTURES), help="Comma-separated architectures.")
    args = parser.parse_args()
    digits = load_digits(seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        digits_files(work, digits)
        for arch in args.only.split(","):
            rows, params, student_params = run_architecture(arch, digits, work)
            print(render(arch, rows, params, student_params), flush=True)


if __name__ == "__main__":
    main()
