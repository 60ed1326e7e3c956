"""QAT on a Conv+BatchNorm CNN: edgecompress's `optimize --qat` against TF-MOT's `quantize_model` by hand.

Both start from the same float model (the digits CNN with Conv2D -> BatchNormalization -> ReLU blocks,
trained on the bundled digits), fine-tune for the same epochs at the same learning rate on the training
split, and are converted to full-integer int8 by edgecompress's converter with the same calibration
samples; accuracy is on the held-out test split with the .tflite interpreter. The operator counts show
whether BatchNormalization was folded (no MUL, no ADD left). The 300 test images make one image a third of a
point, so the whole comparison runs for several seeds (the float model's initialisation and every fine-tuning)
and the mean is what to judge.

    .venv/bin/python benchmarks/qat_vs_tfmot.py [--epochs 2] [--learning-rate 1e-4] [--seeds 5] [--work-dir DIR]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.converters.convert import convert_model
from edgecompress.datasets import Split, load_digits
from edgecompress.evaluate import evaluate
from edgecompress.examples import build_digits_cnn, compile_classifier
from edgecompress.inspect import inspect_model
from edgecompress.optimize import QAT, TrainSettings, optimize
from edgecompress.optimize.layers import import_tfmot
from edgecompress.tables import table


def _ops(tflite: Path) -> str:
    report = inspect_model(tflite)
    return " ".join(f"{o.name}x{o.count}" for o in report.operators)


def _int8(model: Path, out: Path, calib: Path, test: Path) -> tuple[float, str]:
    convert_model(model, out, quantize="int8", calibration=calib, force=True)
    return evaluate(out, test).accuracy, _ops(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="QAT fine-tuning epochs (both paths)")
    parser.add_argument("--float-epochs", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="QAT learning rate (both paths)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="qat_vs_tfmot_"))
    work.mkdir(parents=True, exist_ok=True)

    data = load_digits()
    train, val, test = (s.save_npz(work / f"{n}.npz") for s, n in ((data.train, "train"), (data.val, "val"),
                                                                       (data.test, "test")))
    calib = Split(data.train.x[:200], data.train.y[:200]).save_npz(work / "calib.npz")
    names = ["float32 (no QAT)", "int8 PTQ (no QAT)", "edgecompress optimize --qat, int8",
             "TF-MOT quantize_model by hand, int8"]
    accuracy: dict[str, list[float]] = {name: [] for name in names}
    operators: dict[str, str] = {}
    for seed in range(args.seeds):
        folder = work / f"seed{seed}"
        folder.mkdir(exist_ok=True)
        for name, (acc, ops) in zip(names, _one_seed(seed, folder, data, train, val, test, calib, args)):
            accuracy[name].append(acc)
            operators[name] = ops
        print(f"seed {seed}: " + ", ".join(f"{n.split(',')[0]} {a[-1]:.2%}" for n, a in accuracy.items()), flush=True)

    floats = np.array(accuracy[names[0]])
    rows = [[name, *(f"{a:.2%}" for a in accs), f"{np.mean(accs):.2%}",
             f"{(np.mean(accs) - floats.mean()) * 100:+.2f}", operators[name]] for name, accs in accuracy.items()]
    print(table(["variant", *(f"seed {i}" for i in range(args.seeds)), "mean", "vs float (points)",
                 "int8 operators"], rows))
    print(f"QAT {args.epochs} epochs at learning rate {args.learning_rate:g}; work files in {work}")


def _one_seed(seed: int, work: Path, data: Any, train: Path, val: Path, test: Path, calib: Path,
              args: argparse.Namespace) -> list[tuple[float, str]]:
    model = compile_classifier(build_digits_cnn(seed=seed, batch_norm=True))
    model.fit(data.train.x, data.train.y, epochs=args.float_epochs, batch_size=32, verbose=0, shuffle=True)
    source = work / "float.keras"
    model.save(source)
    convert_model(source, work / "float.tflite", force=True)
    results = [(evaluate(work / "float.tflite", test).accuracy, _ops(work / "float.tflite")),
               _int8(source, work / "ptq.tflite", calib, test)]

    # edgecompress: its QAT scales the training rate by QAT.learning_rate_scale; give the same final rate.
    settings = TrainSettings(epochs=args.epochs, learning_rate=args.learning_rate / QAT.learning_rate_scale,
                             seed=seed)
    ours = optimize(source, work / "ours.keras", train, [QAT()], val=val, settings=settings, force=True)
    results.append(_int8(ours.output, work / "ours.tflite", calib, test))

    # TF-MOT by hand, as its guide does it.
    tfmot = import_tfmot()
    keras = __import__("tf_keras")
    keras.utils.set_random_seed(seed)
    qmodel = tfmot.quantization.keras.quantize_model(keras.models.load_model(source))
    qmodel.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                   loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    qmodel.fit(data.train.x, data.train.y, epochs=args.epochs, batch_size=32, verbose=0, shuffle=True)
    by_hand = work / "tfmot.h5"
    with tfmot.quantization.keras.quantize_scope():
        qmodel.save(by_hand)
    results.append(_int8(by_hand, work / "tfmot.tflite", calib, test))
    return results


if __name__ == "__main__":
    main()
