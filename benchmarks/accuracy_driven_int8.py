"""Accuracy-driven int8 on a model built to break int8, with the figures side by side.

The bundled digits CNN is trained, then given one outlier channel in a conv layer (activations about 1e4 that
the next conv reads with zero weights): the float model's outputs do not change, but full int8's single scale
for that tensor rounds every other channel to zero. The script checks that
  - full int8 collapses (held-out accuracy far below float),
  - `diagnose` ranks the layer with the outlier first,
  - `convert --max-drop 1` (decided on the validation split) comes within 1 point of float on the held-out test
    split while staying at least 2x smaller than the float32 .tflite,
and prints each figure with the time each step took. Exit status 1 when a check fails.

    .venv/bin/python benchmarks/accuracy_driven_int8.py [--work-dir DIR] [--epochs N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from edgecompress.converters.convert import convert_model
from edgecompress.converters.diagnose import diagnose
from edgecompress.datasets import load_digits
from edgecompress.evaluate import evaluate
from edgecompress.examples import train_digits_cnn, with_outlier_channel
from edgecompress.tables import key_values, table
from _common import digits_files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        return run(args.work_dir or Path(tmp), "conv1", args.epochs)


def run(work: Path, layer: str, epochs: int) -> int:
    work.mkdir(parents=True, exist_ok=True)
    digits = load_digits(seed=0)
    calib, val, test = digits_files(work, digits)
    clock = time.perf_counter()
    model = with_outlier_channel(train_digits_cnn(epochs=epochs, seed=0, data=digits), layer=layer)
    model.save(work / "broken.keras")
    seconds = {"train + build": time.perf_counter() - clock}

    def timed(label: str, call):  # noqa: ANN001, ANN202 - a small local helper
        start = time.perf_counter()
        result = call()
        seconds[label] = time.perf_counter() - start
        return result

    source = work / "broken.keras"
    float32 = timed("convert float32", lambda: convert_model(source, work / "float32.tflite", force=True))
    full = timed("convert int8", lambda: convert_model(source, work / "int8.tflite", "int8", calibration=calib,
                                                        force=True))
    report = timed("diagnose", lambda: diagnose(source, calib, data=val))
    fallback = timed("convert int8 --max-drop 1", lambda: convert_model(
        source, work / "fallback.tflite", "int8", calibration=calib, eval_data=val, max_drop=1.0, force=True))
    acc = {name: evaluate(path, test).accuracy for name, path in
           [("keras", source), ("float32", float32.output), ("int8", full.output), ("fallback", fallback.output)]}

    print(table(["layer", "op", "signal lost", "rmse", "rmse/scale", "range"],
                [[l.name, l.op, f"{l.signal_lost:.1%}", l.rmse, l.rmse_over_scale, l.range] for l in report.layers],
                title=f"diagnose (outlier channel in {layer}), worst first"))
    print()
    print(table(["layers in float", "size (bytes)", "val accuracy", "drop (points)"],
                [[", ".join(s.float_layers) or "(none: full int8)", s.size_bytes, s.accuracy, s.drop]
                 for s in fallback.steps], title="convert --max-drop 1: steps on the validation split"))
    print()
    print(table(["model", "size (bytes)", "test accuracy", "vs float32 size"], [
        ["keras (float)", None, acc["keras"], None],
        ["float32 .tflite", float32.size_bytes, acc["float32"], 1.0],
        ["full int8", full.size_bytes, acc["int8"], float32.size_bytes / full.size_bytes],
        ["int8 --max-drop 1", fallback.size_bytes, acc["fallback"], float32.size_bytes / fallback.size_bytes],
    ], title="held-out test split (never seen by the search)"))
    print()
    print(key_values([(k, f"{v:.1f} s") for k, v in seconds.items()], title="time"))
    checks = {
        "full int8 collapses (>= 20 points below float)": acc["keras"] - acc["int8"] >= 0.20,
        f"diagnose puts {layer} first": report.layers[0].name == layer,
        "full int8 warned": bool(full.warnings),
        "--max-drop 1 within 1 point of float on test": acc["keras"] - acc["fallback"] <= 0.01,
        "--max-drop 1 at least 2x smaller than float32": 2 * fallback.size_bytes <= float32.size_bytes,
        "--max-drop 1 met its target on val": bool(fallback.target_met),
    }
    print()
    print(key_values([(k, "ok" if v else "FAILED") for k, v in checks.items()], title="checks"))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
