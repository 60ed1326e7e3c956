"""Why converters.convert hands TFLiteConverter a plain module owning a tf-keras model's variables, not the
model: the same conversion, both ways, alternately in one process, on a Keras application (tf-keras, random
weights). Prints the median seconds of each, the ratio, and the largest difference between the two .tflite
files' outputs on one input (0 expected: the same graph and weights).

    .venv/bin/python benchmarks/convert_owner.py [--model EfficientNetB0] [--side 64] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.models import import_tf, import_tf_keras
from edgecompress.runtime import load_interpreter
from edgecompress.tables import table


def _convert(tf: Any, function: Any, owner: Any) -> tuple[float, bytes]:
    start = time.perf_counter()
    data = tf.lite.TFLiteConverter.from_concrete_functions([function], owner).convert()
    return time.perf_counter() - start, data


def _output(data: bytes, x: np.ndarray) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(data)
        interpreter, _ = load_interpreter(path)  # allocated
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="EfficientNetB0", help="a tf_keras.applications constructor")
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tf, keras = import_tf(), import_tf_keras()
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, args.model)(input_shape=(args.side, args.side, 3), weights=None,
                                                    classes=10)
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, args.side, args.side, 3], tf.float32))
    module = tf.Module()
    module.tf_variables = list(model.variables)
    times: dict[str, list[float]] = {"the Keras model": [], "a module with its variables": []}
    files: dict[str, bytes] = {}
    for _ in range(args.rounds):
        for name, owner in (("the Keras model", model), ("a module with its variables", module)):
            seconds, files[name] = _convert(tf, function, owner)
            times[name].append(seconds)
            print(f"{name}: {seconds:.1f} s", flush=True)
    x = np.random.default_rng(0).uniform(0, 255, (1, args.side, args.side, 3)).astype(np.float32)
    outputs = [_output(data, x) for data in files.values()]
    slow, fast = (statistics.median(t) for t in times.values())
    print(table(["owner", "median seconds", "rounds"],
                [[name, f"{statistics.median(t):.1f}", len(t)] for name, t in times.items()]))
    print(f"{args.model} {args.side}x{args.side} (tf-keras): the module is {slow / fast:.1f}x faster; "
          f"outputs differ by at most {float(np.abs(outputs[0] - outputs[1]).max()):.1e}")


if __name__ == "__main__":
    main()
