"""How much `edgecompress convert --quantize int8` costs over a plain TFLiteConverter script doing the
same conversion (the example digits CNN, fixed batch 1, full int8, the same calibration samples).

Both run as fresh processes (TensorFlow import included, as a user sees it), alternately, several rounds,
side by side in one run; the figure is the ratio of the medians. Goal: at most 1.2x.

    /work/venv/bin/python benchmarks/convert_overhead.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CALIBRATION_SAMPLES = 300

# The plain way: what a user writes with the TFLite guide open (tf-keras model, batch 1, full int8).
PLAIN_SCRIPT = '''
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
import tensorflow as tf
import tf_keras

model_path, calibration, output = sys.argv[1:4]
model = tf_keras.models.load_model(model_path, compile=False)
x = np.load(calibration)["x"][:{n}]
fn = tf.function(lambda t: model(t, training=False)).get_concrete_function(tf.TensorSpec([1, 8, 8, 1], tf.float32))
converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
converter.optimizations = [tf.lite.Optimize.DEFAULT]
converter.representative_dataset = lambda: ([s[None]] for s in x)
converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
with open(output, "wb") as fh:
    fh.write(converter.convert())
'''.format(n=CALIBRATION_SAMPLES)


def prepare(folder: Path) -> tuple[Path, Path]:
    from edgecompress.datasets import Split, load_digits
    from edgecompress.examples import train_digits_cnn

    data = load_digits()
    model = folder / "digits.keras"
    train_digits_cnn(epochs=10, data=data).save(model)
    calibration = Split(data.train.x[:CALIBRATION_SAMPLES], data.train.y[:CALIBRATION_SAMPLES]).save_npz(
        folder / "calibration.npz")
    return model, calibration


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of COMMAND.

    CPU time is reported too because this machine is shared: wall time swings with other load."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    edgecompress = str(Path(sys.executable).with_name("edgecompress"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("training the example model once...", file=sys.stderr)
        model, calibration = prepare(folder)
        script = folder / "plain.py"
        script.write_text(PLAIN_SCRIPT)
        ours_cmd = [edgecompress, "convert", str(model), "-o", str(folder / "ours.tflite"), "--quantize", "int8",
                    "--calibration", str(calibration), "--num-samples", str(CALIBRATION_SAMPLES), "--force"]
        plain_cmd = [sys.executable, str(script), str(model), str(calibration), str(folder / "plain.tflite")]
        ours, plain = [], []
        for i in range(args.rounds):  # alternate who goes first, so drift in machine load hits both
            pair = [(ours, ours_cmd), (plain, plain_cmd)]
            for times, command in pair if i % 2 == 0 else pair[::-1]:
                times.append(timed(command))
            print(f"round {i + 1}: edgecompress {ours[-1][0]:.2f} s, plain {plain[-1][0]:.2f} s", file=sys.stderr)
        sizes = ((folder / "ours.tflite").stat().st_size, (folder / "plain.tflite").stat().st_size)
    print(f"{'':24}{'median wall s':>14}{'median CPU s':>14}{'size bytes':>12}")
    medians = {}
    for name, times, size in (("edgecompress convert", ours, sizes[0]), ("plain TFLiteConverter", plain, sizes[1])):
        medians[name] = [statistics.median(t[k] for t in times) for k in (0, 1)]
        print(f"{name:24}{medians[name][0]:14.2f}{medians[name][1]:14.2f}{size:12,}")
    (ow, oc), (pw, pc) = medians.values()
    print(f"overhead ratio: {ow / pw:.2f}x wall, {oc / pc:.2f}x CPU "
          "(goal <= 1.2x; edgecompress also validates on 100 samples and reports statistics and gzip sizes)")


if __name__ == "__main__":
    main()
