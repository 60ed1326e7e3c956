"""The reference architectures, built with random weights and converted to .tflite: the TensorFlow side.

Runs only as a child process (`python -m edgecompress.devices.reference_builders MODEL:PRECISION ...`),
started by references.build(), so that the benchmark process never imports TensorFlow.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

from edgecompress.errors import UserError
from edgecompress.devices.references import PRECISIONS, REFERENCE_MODELS, check_model_name, reference_path


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
    from edgecompress.fileio import write_bytes_atomic
    from edgecompress.models import import_tf, import_tf_keras

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
    if len(sys.argv) < 2:
        sys.exit("usage: python -m edgecompress.devices.reference_builders MODEL:PRECISION [...]")
    try:
        _build_in_child(sys.argv[1:])
    except UserError as exc:
        sys.exit(f"error: {exc}")
