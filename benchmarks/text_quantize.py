"""Every quantization mode on a text encoder (token ids -> Embedding -> transformer blocks), side by side in one
run: raw and gzip sizes, the embedding table's stored dtype, held-out accuracy on the bundled reviews and the
validation error against the Keras original.

Goals: every mode converts and runs in ai-edge-litert; int4 is the smallest file and within 1 point of float32.

    .venv/bin/python benchmarks/text_quantize.py MODEL.keras [--calibration CAL.npz] [--data TEST.npz]

Without --calibration / --data: 300 training reviews and the 1,280 test reviews of the bundled set
(edgecompress.text.data), which is what the text encoders are trained on.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

MODES = ("none", "dynamic", "float16", "int8", "int16x8", "int4", "int8-weights")


def table_dtype(path: Path) -> str:
    """The dtype the largest constant (the embedding table) is stored in."""
    from edgecompress.tflite_reader import read_model

    constants = [t for sg in read_model(path).subgraphs for t in sg.tensors if t.is_constant]
    return max(constants, key=lambda t: t.stored_bytes).dtype if constants else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--calibration", type=Path)
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()

    from edgecompress.converters import convert_model
    from edgecompress.datasets import Split
    from edgecompress.evaluate import evaluate
    from edgecompress.tables import table

    folder = Path(tempfile.mkdtemp(prefix="text-quantize-"))
    calibration, data = args.calibration, args.data
    if calibration is None or data is None:
        from edgecompress.text.data import load_reviews

        reviews = load_reviews()
        calibration = calibration or Split(reviews.train.x[:300], reviews.train.y[:300]).save_npz(folder / "cal.npz")
        data = data or reviews.test.save_npz(folder / "test.npz")
    rows, base = [], None
    for mode in MODES:
        out = folder / f"{mode}.tflite"
        result = convert_model(args.model, out, quantize=mode, calibration=calibration)
        accuracy = evaluate(out, data).accuracy
        base = base or (result.size_bytes, accuracy)
        v = result.validation
        rows.append([mode, result.size_bytes, result.gzip_bytes, f"{base[0] / result.size_bytes:.2f}x",
                     table_dtype(out), f"{accuracy:.2%}", f"{(accuracy - base[1]) * 100:+.2f}",
                     f"{v.max_abs_error:.2g} / {v.mean_abs_error:.2g}", f"{v.top1_agreement:.0%}"])
    print(table(["mode", "bytes", "gzip", "vs float32", "largest weight", "accuracy", "points",
                        "max / mean abs error", "top-1 agreement"], rows))
    smallest = min(rows, key=lambda r: r[1])[0]
    int4 = next(r for r in rows if r[0] == "int4")
    met = smallest == "int4" and abs(float(int4[6])) <= 1
    print(f"goal (int4 smallest, within 1 point of float32): {'met' if met else 'NOT met'}")
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
