"""The reference architectures behind the published device latencies, as cached .tflite files.

Device estimates compare host timings of these architectures with their published on-device latencies
(shared ANCHORS), so each one is rebuilt here with random weights (timing does not depend on the weights)
and converted to the precisions that some profile cites. Building needs TensorFlow, which the benchmark
process must never import: `build()` runs `python -m edgecompress.devices.references build NAME:PRECISION`
in a child process, one per architecture, and on a runtime-only install says that calibration needs
`edgecompress[full]` on the host.

Cache: $EDGECOMPRESS_CACHE/references/ (default ~/.cache/edgecompress/references/).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import UserError
from ..progress import bar

PRECISIONS = ("float", "int8")


class CalibrationUnavailable(UserError):
    """The host cannot build the references (no TensorFlow): the benchmark still measures, without estimates."""


@dataclass(frozen=True)
class ReferenceModel:
    name: str
    title: str
    input_size: int
    builder: str  # name of a builder below; looked up only in the child process that has TensorFlow


REFERENCE_MODELS: dict[str, ReferenceModel] = {
    m.name: m
    for m in (
        ReferenceModel("mobilenet_v1", "MobileNet v1 1.0/224", 224, "_mobilenet_v1"),
        ReferenceModel("mobilenet_v2", "MobileNet v2 1.0/224", 224, "_mobilenet_v2"),
        ReferenceModel("mobilenet_v3_large", "MobileNet v3 Large 1.0/224", 224, "_mobilenet_v3_large"),
        ReferenceModel("mobilenet_v3_small", "MobileNet v3 Small 1.0/224", 224, "_mobilenet_v3_small"),
        ReferenceModel("squeezenet", "SqueezeNet 1.0 (224)", 224, "_squeezenet"),
        ReferenceModel("nasnet_mobile", "NASNet mobile (224)", 224, "_nasnet_mobile"),
        ReferenceModel("inception_v3", "Inception v3 (299)", 299, "_inception_v3"),
        ReferenceModel("inception_v4", "Inception V4 (299)", 299, "_inception_v4"),
        ReferenceModel("inception_resnet_v2", "Inception-ResNet-V2 (299)", 299, "_inception_resnet_v2"),
    )
}


def cache_root() -> Path:
    """$EDGECOMPRESS_CACHE, else ~/.cache/edgecompress."""
    env = os.environ.get("EDGECOMPRESS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgecompress"


def reference_path(model: str, precision: str) -> Path:
    return cache_root() / "references" / f"{model}-{precision}.tflite"


def check_model_name(model: str, where: str) -> None:
    if model not in REFERENCE_MODELS:
        raise UserError(f"{where}: unknown reference model {model!r}; known: {', '.join(REFERENCE_MODELS)}")


def missing(needed: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted({(m, p) for m, p in needed if not reference_path(m, p).exists()})


def build(needed: Iterable[tuple[str, str]]) -> dict[str, float]:
    """Build the missing (model, precision) references, one child process per model; returns seconds per model."""
    todo: dict[str, list[str]] = {}
    for model, precision in missing(needed):
        todo.setdefault(model, []).append(precision)
    if not todo:
        return {}
    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tf_keras") is None:
        raise CalibrationUnavailable(
            "device estimates need the reference models built on the host, which needs TensorFlow: "
            "pip install 'edgecompress[full]' on this machine (the benchmark itself runs without it)"
        )
    seconds: dict[str, float] = {}
    with bar(list(todo.items()), label="building reference models (once)") as items:
        for model, precisions in items:
            start = time.perf_counter()
            args = [sys.executable, "-m", "edgecompress.devices.references", "build"]
            proc = subprocess.run(args + [f"{model}:{p}" for p in precisions], capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise UserError(f"building reference {model} failed: {tail}")
            seconds[model] = time.perf_counter() - start
    return seconds


# ---- below: runs only in the child process, with TensorFlow -------------------------------------------


def _conv_bn(keras: Any, x: Any, filters: int, kernel: tuple[int, int], strides: int = 1, padding: str = "same") -> Any:
    layers = keras.layers
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def _squeezenet(keras: Any) -> Any:
    """SqueezeNet 1.0 (Iandola et al. 2016); not in keras.applications."""
    layers = keras.layers

    def fire(x: Any, squeeze: int, expand: int) -> Any:
        s = layers.Conv2D(squeeze, 1, activation="relu")(x)
        return layers.Concatenate()(
            [layers.Conv2D(expand, 1, activation="relu")(s), layers.Conv2D(expand, 3, padding="same", activation="relu")(s)]
        )

    inp = keras.Input((224, 224, 3))
    x = layers.Conv2D(96, 7, strides=2, activation="relu")(inp)
    x = layers.MaxPooling2D(3, 2)(x)
    for s, e in ((16, 64), (16, 64), (32, 128)):
        x = fire(x, s, e)
    x = layers.MaxPooling2D(3, 2)(x)
    for s, e in ((32, 128), (48, 192), (48, 192), (64, 256)):
        x = fire(x, s, e)
    x = layers.MaxPooling2D(3, 2)(x)
    x = fire(x, 64, 256)
    x = layers.Conv2D(1000, 1, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Softmax()(x), name="squeezenet")


def _inception_v4(keras: Any) -> Any:
    """Inception-v4 (Szegedy et al. 2016, figures 3-9); not in keras.applications."""
    layers = keras.layers

    def c(x: Any, f: int, k: tuple[int, int] | int, s: int = 1, p: str = "same") -> Any:
        return _conv_bn(keras, x, f, k if isinstance(k, tuple) else (k, k), s, p)

    def pool_branch(x: Any, f: int) -> Any:
        return c(layers.AveragePooling2D(3, 1, padding="same")(x), f, 1)

    cat = layers.Concatenate
    inp = keras.Input((299, 299, 3))
    x = c(c(c(inp, 32, 3, 2, "valid"), 32, 3, 1, "valid"), 64, 3)
    x = cat()([layers.MaxPooling2D(3, 2)(x), c(x, 96, 3, 2, "valid")])
    a = c(c(x, 64, 1), 96, 3, 1, "valid")
    b = c(c(c(c(x, 64, 1), 64, (1, 7)), 64, (7, 1)), 96, 3, 1, "valid")
    x = cat()([a, b])
    x = cat()([c(x, 192, 3, 2, "valid"), layers.MaxPooling2D(3, 2)(x)])
    for _ in range(4):  # Inception-A
        x = cat()([pool_branch(x, 96), c(x, 96, 1), c(c(x, 64, 1), 96, 3), c(c(c(x, 64, 1), 96, 3), 96, 3)])
    x = cat()([layers.MaxPooling2D(3, 2)(x), c(x, 384, 3, 2, "valid"), c(c(c(x, 192, 1), 224, 3), 256, 3, 2, "valid")])
    for _ in range(7):  # Inception-B
        b3 = c(c(c(x, 192, 1), 224, (1, 7)), 256, (7, 1))
        b4 = c(c(c(c(c(x, 192, 1), 192, (7, 1)), 224, (1, 7)), 224, (7, 1)), 256, (1, 7))
        x = cat()([pool_branch(x, 128), c(x, 384, 1), b3, b4])
    x = cat()([
        layers.MaxPooling2D(3, 2)(x),
        c(c(x, 192, 1), 192, 3, 2, "valid"),
        c(c(c(c(x, 256, 1), 256, (1, 7)), 320, (7, 1)), 320, 3, 2, "valid"),
    ])
    for _ in range(3):  # Inception-C
        b3 = c(x, 384, 1)
        b4 = c(c(c(x, 384, 1), 448, (3, 1)), 512, (1, 3))
        x = cat()([pool_branch(x, 256), c(x, 256, 1), c(b3, 256, (1, 3)), c(b3, 256, (3, 1)), c(b4, 256, (1, 3)), c(b4, 256, (3, 1))])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(1000, activation="softmax")(x), name="inception_v4")


def _applications(name: str, size: int, **kwargs: Any) -> Callable[[Any], Any]:
    def build_app(keras: Any) -> Any:
        return getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), **kwargs)

    return build_app


_BUILDERS: dict[str, Callable[[Any], Any]] = {
    "_mobilenet_v1": _applications("MobileNet", 224),
    "_mobilenet_v2": _applications("MobileNetV2", 224),
    "_mobilenet_v3_large": _applications("MobileNetV3Large", 224),
    "_mobilenet_v3_small": _applications("MobileNetV3Small", 224),
    "_nasnet_mobile": _applications("NASNetMobile", 224),
    "_inception_v3": _applications("InceptionV3", 299),
    "_inception_resnet_v2": _applications("InceptionResNetV2", 299),
    "_squeezenet": _squeezenet,
    "_inception_v4": _inception_v4,
}


def _convert(tf: Any, model: Any, size: int, precision: str) -> bytes:
    import numpy as np

    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, size, size, 3], tf.float32)
    )
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    if precision == "int8":
        # Random calibration data: the int8 model is only timed, never judged on accuracy.
        rng = np.random.default_rng(0)
        samples = [rng.uniform(0, 1, (1, size, size, 3)).astype(np.float32) for _ in range(4)]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([s] for s in samples)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def _build_in_child(specs: list[str]) -> None:
    from ..fileio import write_bytes_atomic
    from ..models import import_tf, import_tf_keras

    keras = import_tf_keras("building the calibration references")
    tf = import_tf()
    for spec in specs:
        model_name, _, precision = spec.partition(":")
        check_model_name(model_name, "build")
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r} in {spec!r}: use float or int8")
        ref = REFERENCE_MODELS[model_name]
        keras.utils.set_random_seed(0)
        model = _BUILDERS[ref.builder](keras)
        start = time.perf_counter()
        data = _convert(tf, model, ref.input_size, precision)
        out = reference_path(model_name, precision)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(out, data)
        print(f"{spec}: {len(data) / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "build":
        sys.exit("usage: python -m edgecompress.devices.references build MODEL:PRECISION [...]")
    try:
        _build_in_child(sys.argv[2:])
    except UserError as exc:
        sys.exit(f"error: {exc}")
