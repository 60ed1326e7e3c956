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


def _mobilebert(seq_len: int, head: str) -> Callable[[Any], Any]:
    """MobileBERT (Sun et al., ACL 2020), the optimised configuration the published latencies are for
    (uncased_L-24_H-128_B-512_A-4_F-4_OPT): vocabulary 30522, trigram embedding 128 -> 512, 24 blocks of
    [two 512->128 bottlenecks (the block input and the query/key input it shares), 4-head attention at width 128
    with values from the 512-wide input, three stacked feed-forward networks 128->512->128 with residuals, the
    block's own feed-forward network, 128->512 output bottleneck with residual], NoNorm (an elementwise
    scale and shift) instead of LayerNorm and ReLU instead of GELU. HEAD "classify": pooled first token ->
    Dense(512, tanh) -> Dense(2); "span": Dense(2) per token (SQuAD start/end logits).
    Simplified: one input (token ids): no attention mask or segment ids (an elementwise ADD and a
    2-row embedding), which cost little next to the matrix products."""

    def build_mobilebert(keras: Any) -> Any:
        layers = keras.layers

        class NoNorm(layers.Layer):
            def build(self, input_shape: Any) -> None:
                width = int(input_shape[-1])
                self.scale = self.add_weight(name="scale", shape=(width,), initializer="ones")
                self.shift = self.add_weight(name="shift", shape=(width,), initializer="zeros")

            def call(self, x: Any) -> Any:
                return x * self.scale + self.shift

        class Positions(layers.Layer):
            def build(self, input_shape: Any) -> None:
                self.table = self.add_weight(name="table", shape=tuple(int(d) for d in input_shape[1:]),
                                             initializer=keras.initializers.RandomNormal(stddev=0.02))

            def call(self, x: Any) -> Any:
                return x + self.table

        def dense_norm(x: Any, units: int, residual: Any = None, activation: str | None = None) -> Any:
            y = layers.Dense(units, activation=activation)(x)
            return NoNorm()(y if residual is None else layers.Add()([y, residual]))

        def ffn(x: Any) -> Any:
            return dense_norm(layers.Dense(512, activation="relu")(x), 128, residual=x)

        ids = keras.Input((seq_len,), dtype="int32")
        e = layers.Embedding(30522, 128)(ids)
        after = layers.ZeroPadding1D((0, 1))(layers.Cropping1D((1, 0))(e))  # token t+1
        before = layers.ZeroPadding1D((1, 0))(layers.Cropping1D((0, 1))(e))  # token t-1
        x = NoNorm()(Positions()(layers.Dense(512)(layers.Concatenate()([after, e, before]))))
        for _ in range(24):
            inner = dense_norm(x, 128)
            shared = dense_norm(x, 128)
            attended = layers.MultiHeadAttention(4, 32)(query=shared, value=x, key=shared)
            h = NoNorm()(layers.Add()([attended, inner]))
            for _ in range(3):
                h = ffn(h)
            h = ffn(h)
            x = dense_norm(h, 512, residual=x)
        if head == "classify":
            first = layers.Cropping1D((0, seq_len - 1))(x)
            out = layers.Dense(2)(layers.Dense(512, activation="tanh")(layers.Flatten()(first)))
        else:
            out = layers.Dense(2)(x)
        return keras.Model(ids, out, name=f"mobilebert_{seq_len}")

    return build_mobilebert


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
    "_mobilebert_128": _mobilebert(128, "classify"),
    "_mobilebert_squad_384": _mobilebert(384, "span"),
}


def _convert(tf: Any, model: Any, precision: str) -> bytes:
    import numpy as np

    spec = tf.TensorSpec([1, *model.inputs[0].shape[1:]], model.inputs[0].dtype)  # batch 1, as on the devices
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    if precision == "int8":
        # Random calibration data (token ids for text models): the int8 model is only timed, never judged on accuracy.
        rng = np.random.default_rng(0)
        if spec.dtype.is_integer:
            samples = [rng.integers(0, 1000, spec.shape).astype(spec.dtype.as_numpy_dtype) for _ in range(4)]
        else:
            samples = [rng.uniform(0, 1, spec.shape).astype(np.float32) for _ in range(4)]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([s] for s in samples)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if not spec.dtype.is_integer:  # token ids stay int32
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
        data = _convert(tf, model, precision)
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
