"""What turning TensorFlow's oneDNN CPU kernels off costs, and what it saves: edgecompress imports TensorFlow
with TF_ENABLE_ONEDNN_OPTS=0 (unless the user set it), because TF 2.21's oneDNN kernels crash (SIGSEGV) when
training a Conv2D with a 1x1 kernel and stride 2 on an even-sized feature map: every ResNet-style shortcut,
and fer's emotion CNN.

Each case runs in a fresh process per setting (the variable is read when TensorFlow loads), alternating,
and prints the median seconds of each with the ratio, or how the process ended:
- digits: the bundled example CNN, 3 epochs on the digits (what `edgecompress demo` trains)
- fer-like: a 64x64x1 CNN with fer's layer widths (no stride-2 1x1 convolution, so oneDNN can run it)
- shortcut: the same with a 1x1 stride-2 shortcut convolution (oneDNN crashes)
- predict: the fer-like model's inference on 512 images (what validation does with a Keras source)

    .venv/bin/python benchmarks/onednn_training.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys

from edgecompress.tables import table

CASE = r"""
import json, os, sys, time
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tf_keras as k
case = sys.argv[1]
k.utils.set_random_seed(0)
rng = np.random.default_rng(0)
if case == "digits":
    from edgecompress.datasets import load_digits
    from edgecompress.examples import build_digits_cnn
    data = load_digits()
    model, x, y = build_digits_cnn(), data.train.x, data.train.y
else:
    inp = k.Input((64, 64, 1))
    h = inp
    for width in (8, 16, 32, 64):
        h = k.layers.Conv2D(width, 3, padding="same", activation="relu")(h)
        h = k.layers.BatchNormalization()(h)
        if case == "shortcut":
            h = k.layers.Add()([k.layers.Conv2D(width, 1, strides=2)(h), k.layers.MaxPooling2D()(h)])
        else:
            h = k.layers.MaxPooling2D()(h)
    model = k.Model(inp, k.layers.Dense(7, activation="softmax")(k.layers.GlobalAveragePooling2D()(h)))
    x, y = rng.random((512, 64, 64, 1)).astype("float32"), np.arange(512) % 7
model.compile("adam", "sparse_categorical_crossentropy")
start = time.perf_counter()
if case == "predict":
    model.predict(x, batch_size=64, verbose=0)
else:
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""
CASES = ("digits", "fer-like", "shortcut", "predict")


def _run(case: str, onednn: str) -> float | str:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", CASE, case], capture_output=True, text=True, env=env)
    if proc.returncode < 0:
        return f"crashed ({signal.Signals(-proc.returncode).name})"
    if proc.returncode != 0:
        return f"failed (exit {proc.returncode})"
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for case in CASES:
        runs: dict[str, list[float | str]] = {"1": [], "0": []}
        for _ in range(args.rounds):
            for onednn in ("1", "0"):
                runs[onednn].append(_run(case, onednn))
        cells = []
        for onednn in ("1", "0"):
            failed = [r for r in runs[onednn] if isinstance(r, str)]
            cells.append(failed[0] if failed else statistics.median(runs[onednn]))  # type: ignore[type-var]
        ratio = cells[1] / cells[0] if all(isinstance(c, float) for c in cells) else None
        rows.append([case, *cells, ratio])
    print(table(["case", "oneDNN on (s)", "oneDNN off (s)", "off / on"], rows,
                title=f"TF_ENABLE_ONEDNN_OPTS, median of {args.rounds} fresh processes each"))


if __name__ == "__main__":
    main()
