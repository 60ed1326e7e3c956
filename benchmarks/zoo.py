"""The Keras applications users ship, through every technique and conversion mode: what works, and why not.

Each model is built twice with random weights at a small input size, once with Keras 3 (keras.applications)
and once with tf-keras (tf_keras.applications), saved, then
- converted as it is with every conversion mode: none, dynamic, float16, int8 and int16x8 (the last two
  calibrated on random images in the range the family's preprocess_input gives), each validated against its
  Keras model;
- optimized with each technique (prune 0.5, 2:4, cluster 16, QAT, prune+cluster+QAT; one epoch of training
  on a few random samples) and converted with --technique-modes (by default dynamic and int8, the modes that
  keep the technique's zeros and shared values in the weights; `none` and `float16` convert the same float
  graph as the model as built, and all five for every technique would take hours on this 2-core host).
It measures that things work, not accuracy. For each .tflite: the operator count, the operators left in
float, and the MUL/ADD/SUB operators with a constant operand (a BatchNormalization or a scale the converter
could not fold; residual Adds and squeeze-excite Multiplies take two activations and are not counted). For
Keras 3 models, the largest output difference between the original and its tf-keras rebuild.

    .venv/bin/python benchmarks/zoo.py [--models mobilenet_v2,...] [--flavours keras3,tf-keras]
        [--techniques qat,...] [--modes none,int8] [--technique-modes int8] [--jobs 2] [--side 32]
        [--work-dir DIR] [--save rows.json]
    .venv/bin/python benchmarks/zoo.py --load a.json,b.json   # the tables of runs split over processes
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgecompress.tables import markdown_table, table
from edgecompress.tflite_reader import read_model

# The input range each family's preprocess_input produces: [-1, 1], or raw pixels for the models that carry
# their own Rescaling (MobileNetV3, EfficientNet). Fed anything else, a random-weight model's activations
# collapse towards zero, which is a property of the wrong input, not of the model.
SIGNED, PIXELS = (-1.0, 1.0), (0.0, 255.0)
# name -> (builder(applications module, input shape), input side, input range)
MODELS: dict[str, tuple[Callable[[Any, tuple[int, int, int]], Any], int, tuple[float, float]]] = {
    "mobilenet_v1_0.25": (
        lambda A, s: A.MobileNet(input_shape=s, alpha=0.25, weights=None, classes=10), 96, SIGNED),
    "mobilenet_v2_0.35": (
        lambda A, s: A.MobileNetV2(input_shape=s, alpha=0.35, weights=None, classes=10), 96, SIGNED),
    "mobilenet_v3_small": (lambda A, s: A.MobileNetV3Small(input_shape=s, weights=None, classes=10), 96, PIXELS),
    "mobilenet_v3_small_min": (
        lambda A, s: A.MobileNetV3Small(input_shape=s, weights=None, classes=10, minimalistic=True), 96, PIXELS),
    "mobilenet_v3_large": (lambda A, s: A.MobileNetV3Large(input_shape=s, weights=None, classes=10), 96, PIXELS),
    "mobilenet_v3_large_min": (
        lambda A, s: A.MobileNetV3Large(input_shape=s, weights=None, classes=10, minimalistic=True), 96, PIXELS),
    "efficientnet_b0": (lambda A, s: A.EfficientNetB0(input_shape=s, weights=None, classes=10), 64, PIXELS),
    "efficientnet_v2_b0": (lambda A, s: A.EfficientNetV2B0(input_shape=s, weights=None, classes=10), 64, PIXELS),
    "resnet50_v2": (lambda A, s: A.ResNet50V2(input_shape=s, weights=None, classes=10), 64, SIGNED),
    "nasnet_mobile": (lambda A, s: A.NASNetMobile(input_shape=s, weights=None, classes=10), 64, SIGNED),
}
TECHNIQUES = ("prune 0.5", "2:4", "cluster 16", "qat", "pcqat")
MODES = ("none", "dynamic", "float16", "int8", "int16x8")
TECHNIQUE_MODES = ("dynamic", "int8")
QAT_STEPS = ("qat", "pcqat")
SAMPLES = 8


def techniques(name: str) -> list[Any]:
    from edgecompress.optimize import QAT, Cluster, Prune

    return {
        "prune 0.5": lambda: [Prune(0.5)],
        "2:4": lambda: [Prune(pattern=(2, 4))],
        "cluster 16": lambda: [Cluster(16)],
        "qat": lambda: [QAT()],
        "pcqat": lambda: [Prune(0.5), Cluster(16), QAT()],
    }[name]()


@dataclass
class Graph:
    operators: int
    float_ops: int  # compute operators with a float32 activation in or out (QUANTIZE/DEQUANTIZE aside)
    constant_affine: int  # MUL / ADD / SUB with a constant operand: an unfolded BatchNormalization or scale
    sparsity: float  # share of zeros over the int8 kernels (rank >= 2)
    distinct: int  # most distinct int8 values in one output channel of a kernel (clustering keeps it <= N)

    @property
    def structure(self) -> str:
        return f"{self.sparsity:.0%} zeros, <={self.distinct} values/channel"


def graph(tflite: Path) -> Graph:
    """Operator counts and weight structure from the flatbuffer alone (no TensorFlow)."""
    sg = read_model(tflite).main
    ops = sg.operators
    # Output channels along the quantized axis (the last one for DEPTHWISE_CONV_2D's [1, h, w, out] filter).
    kernels = [np.moveaxis(t.data, t.quantization.axis, 0) for t in sg.tensors
               if t.is_constant and t.dtype == "int8" and t.data is not None and t.data.ndim >= 2]
    zeros = sum(int(np.sum(k == 0)) for k in kernels) / max(1, sum(k.size for k in kernels))
    distinct = max((np.unique(channel).size for k in kernels for channel in k), default=0)
    floats = affine = 0
    for op in ops:
        tensors = [sg.tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0]
        if op.name not in ("QUANTIZE", "DEQUANTIZE") and any(
            t.dtype == "float32" and not t.is_constant for t in tensors
        ):
            floats += 1
        if op.name in ("MUL", "ADD", "SUB") and any(sg.tensors[i].is_constant for i in op.inputs if i >= 0):
            affine += 1
    return Graph(len(ops), floats, affine, zeros, distinct)


def build(name: str, flavour: str, side: int) -> Any:
    from edgecompress.models import import_tf_keras

    keras = import_tf_keras()
    if flavour == "keras3":
        import keras
    keras.utils.set_random_seed(0)
    return MODELS[name][0](keras.applications, (side, side, 3))


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:400]


def run_model(
    name: str, flavour: str, work: Path, modes: list[str], chosen: list[str], side: int | None = None,
    rows_to: Path | None = None, technique_modes: list[str] | None = None,
) -> list[list[Any]]:
    """Table rows for one model: every conversion mode of the model as built, then of each technique's result."""
    from edgecompress.converters.convert import convert_model
    from edgecompress.models import load_model
    from edgecompress.optimize import QAT, TrainSettings, optimize

    folder = work / f"{name}-{flavour}"
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[list[Any]] = []

    def record(doing: tuple[str, str]) -> None:
        # After every step, so a crash inside TensorFlow keeps the rows before it and names the step it hit.
        if rows_to is not None:
            rows_to.write_text(json.dumps({"rows": rows, "doing": doing}))

    def emit(row: list[Any]) -> None:
        rows.append(row)
        print(" | ".join("" if v is None else str(v) for v in row), file=sys.stderr, flush=True)
        record(("", ""))

    source = folder / "source.keras"
    side = side or MODELS[name][1]
    record(("build", ""))
    try:
        model = build(name, flavour, side)
        model.save(source)
    except Exception as exc:  # noqa: BLE001  # the table reports every failure with its reason
        emit([name, flavour, "build", "", _reason(exc), None, None, None, None, None])
        return rows
    rng = np.random.default_rng(0)
    data = folder / "data.npz"
    low, high = MODELS[name][2]
    x = rng.uniform(low, high, (SAMPLES, side, side, 3)).astype(np.float32)
    np.savez(data, x=x, y=rng.integers(0, 10, SAMPLES))

    def convert_all(step: str, keras_file: Path, slug: str, error: float | None, modes: list[str]) -> None:
        loaded = load_model(keras_file)
        for mode in modes:
            conflict = QAT.conversion_conflict(mode) if step in QAT_STEPS else None
            if conflict:  # what edgecompress's own pipeline answers for that combination
                emit([name, flavour, step, mode, f"refused: {conflict}", None, None, None, None, error])
                continue
            out = folder / f"{slug}-{mode}.tflite"
            record((step, mode))
            try:
                convert_model(loaded, out, quantize=mode, calibration=data, num_samples=SAMPLES, force=True,
                              validation_samples=4)
                g = graph(out)
                emit([name, flavour, step, mode, "ok", g.operators, g.float_ops, g.constant_affine, g.structure,
                      error])
            except Exception as exc:  # noqa: BLE001
                emit([name, flavour, step, mode, _reason(exc), None, None, None, None, error])

    convert_all("as built", source, "plain", None, modes)
    for technique in chosen:
        slug = technique.replace(" ", "_").replace(":", "of")
        record((technique, "training"))
        try:
            result = optimize(source, folder / f"{slug}.keras", data, techniques(technique),
                              settings=TrainSettings(epochs=1, batch_size=4), force=True)
        except Exception as exc:  # noqa: BLE001
            emit([name, flavour, technique, "", _reason(exc), None, None, None, None, None])
            continue
        convert_all(technique, Path(result.output), slug, result.details.get("rebuild", {}).get("max_abs_error"),
                    modes if technique_modes is None else technique_modes)
    return rows


def summary(rows: list[list[Any]], markdown: bool = False) -> str:
    """One line per model and flavour: per step, how many conversion modes worked, and QAT's int8 graph."""
    steps = ["as built", *TECHNIQUES]
    cells: dict[tuple[str, str], dict[str, list[list[Any]]]] = {}
    for row in rows:
        cells.setdefault((row[0], row[1]), {}).setdefault(row[2], []).append(row)
    lines = []
    for (name, flavour), by_step in cells.items():
        line: list[Any] = [name, flavour]
        for step in steps:
            got = by_step.get(step, [])
            tried = [r for r in got if not r[4].startswith("refused")]
            line.append(f"{sum(r[4] == 'ok' for r in tried)}/{len(tried)}" if tried else "-")
        qat = [r for r in by_step.get("qat", []) if r[3] == "int8" and r[4] == "ok"]
        line.append(f"{qat[0][5]} / {qat[0][6]} / {qat[0][7]}" if qat else "-")
        errors = [r[9] for step_rows in by_step.values() for r in step_rows if r[9] is not None]
        line.append(f"{max(errors):.1e}" if errors else "-")
        lines.append(line)
    headers = ["model", "built with", *steps, "QAT int8 ops / float / const MUL-ADD", "rebuild max err"]
    return (markdown_table if markdown else table)(headers, lines)


def _in_child(args: argparse.Namespace, name: str, flavour: str, work: Path) -> list[list[Any]]:
    """One model in its own process, so a crash inside TensorFlow (a segfault) becomes a row, not the end."""
    out = work / f"{name}-{flavour}.json"
    cmd = [sys.executable, __file__, "--models", name, "--flavours", flavour, "--techniques", args.techniques,
           "--modes", args.modes, "--technique-modes", args.technique_modes, "--work-dir", str(work),
           "--rows-to", str(out)]
    if args.side:
        cmd += ["--side", str(args.side)]
    out.unlink(missing_ok=True)
    code = subprocess.run(cmd).returncode
    state = json.loads(out.read_text()) if out.exists() else {"rows": [], "doing": ["start", ""]}
    rows = state["rows"]
    if code != 0:
        step, mode = state["doing"]
        rows.append([name, flavour, step, mode, f"the process died (exit {code})", None, None, None, None, None])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--flavours", default="keras3,tf-keras")
    parser.add_argument("--techniques", default=",".join(TECHNIQUES))
    parser.add_argument("--modes", default=",".join(MODES), help="conversion modes of the model as built")
    parser.add_argument("--technique-modes", default=",".join(TECHNIQUE_MODES),
                        help="conversion modes of each technique's model")
    parser.add_argument("--markdown", action="store_true", help="the summary as a Markdown table")
    parser.add_argument("--jobs", type=int, default=1, help="models run at once, each in its own process")
    parser.add_argument("--side", type=int, default=None, help="input height and width for every model")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--save", type=Path, default=None, help="also write every row as JSON here")
    parser.add_argument("--load", default=None,
                        help="comma-separated JSON files from --save (of runs split over processes): "
                        "print their tables, run nothing")
    parser.add_argument("--rows-to", type=Path, default=None, help=argparse.SUPPRESS)  # the child's answer
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="zoo_"))
    if args.rows_to:
        run_model(args.models, args.flavours, work, [m for m in args.modes.split(",") if m],
                  [t for t in args.techniques.split(",") if t], args.side, args.rows_to,
                  [m for m in args.technique_modes.split(",") if m])
        return
    rows = []
    if args.load:
        for saved in args.load.split(","):
            rows += json.loads(Path(saved).read_text())
    else:
        jobs = [(name, flavour) for name in args.models.split(",") for flavour in args.flavours.split(",")]
        with ThreadPoolExecutor(args.jobs) as pool:  # each job is a child process
            for result in pool.map(lambda job: _in_child(args, *job, work), jobs):
                rows += result
    print(table(["model", "built with", "step", "mode", "result", "ops", "float ops",
                 "const MUL/ADD", "int8 weights", "rebuild max err"], rows))
    print()
    print(summary(rows, args.markdown))
    failures = [r for r in rows if r[4] != "ok" and not r[4].startswith("refused")]
    if failures:
        print("\nwhat did not work, and why:")
        for r in failures:
            print(f"- {r[0]} ({r[1]}), {r[2]}{' -> ' + r[3] if r[3] else ''}: {r[4]}")
    if args.save:
        args.save.write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
