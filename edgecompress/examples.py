"""The bundled example: a small CNN classifier trained on the bundled digits (real data, no download).

It is the default model of the README's main job, the demo and the tests. Built with tf-keras, since
TF-MOT works only on tf-keras models.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgecompress.datasets import NUM_CLASSES, Digits, load_digits
from edgecompress.models import import_tf_keras


def build_digits_cnn(seed: int = 0, width: int = 16, dense: int = 128, batch_norm: bool = False) -> Any:
    """Conv(width) -> Conv(2*width) -> Dense(dense) -> softmax over 10 digits, for 8x8x1 inputs.

    With BATCH_NORM each convolution is Conv2D (no bias) -> BatchNormalization -> ReLU, the block most
    image models are made of.
    """
    keras = import_tf_keras("building the example model")
    keras.utils.set_random_seed(seed)
    layers = keras.layers

    def conv(filters: int, name: str) -> list[Any]:
        if not batch_norm:
            return [layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)]
        return [
            layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name),
            layers.BatchNormalization(name=f"{name}_bn"),
            layers.ReLU(name=f"{name}_relu"),
        ]

    return keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            *conv(width, "conv1"),
            *conv(2 * width, "conv2"),
            layers.MaxPooling2D(2, name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(dense, activation="relu", name="dense"),
            layers.Dense(NUM_CLASSES, activation="softmax", name="probs"),
        ],
        name="digits_bn_cnn" if batch_norm else "digits_cnn",
    )


def compile_classifier(model: Any, learning_rate: float = 1e-3) -> Any:
    keras = import_tf_keras()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train_digits_cnn(
    epochs: int = 20, seed: int = 0, data: Digits | None = None, verbose: int = 0, **build: Any
) -> Any:
    """Build and train the example classifier; about 97-99% test accuracy in a few seconds on 2 cores."""
    data = data or load_digits(seed)
    model = compile_classifier(build_digits_cnn(seed, **build))
    model.fit(
        data.train.x, data.train.y, validation_data=(data.val.x, data.val.y),
        epochs=epochs, batch_size=32, verbose=verbose, shuffle=True,
    )
    return model


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    probs = model.predict(x, verbose=0)
    return float(np.mean(np.argmax(probs, axis=-1) == y))


def with_outlier_channel(model: Any, layer: str = "conv1", magnitude: float = 1e4, seed: int = 0) -> Any:
    """A copy of a Sequential CNN whose Conv2D LAYER gets one more output channel, with activations around
    MAGNITUDE, that the next Conv2D reads with zero weights: the float outputs are unchanged, but the tensor's
    single int8 scale becomes so coarse that every other channel rounds to zero. A model built to break
    full-integer int8 the way real outlier channels do."""
    keras = import_tf_keras("building the example model")
    config = model.get_config()
    names = [spec["config"]["name"] for spec in config["layers"]]
    spec = config["layers"][names.index(layer)]
    spec["config"]["filters"] += 1
    broken = keras.Sequential.from_config(config)
    after = [l.name for l in model.layers].index(layer) + 1
    if type(model.layers[after]).__name__ != "Conv2D":
        raise ValueError(f"the layer after {layer} must be a Conv2D (it reads the outlier channel with zero weights)")
    rng = np.random.default_rng(seed)
    for source, target in zip(model.layers, broken.layers):
        weights = source.get_weights()
        if source.name == layer:
            kernel, bias = weights
            loud = magnitude * np.abs(rng.normal(size=(*kernel.shape[:-1], 1)))
            weights = [np.concatenate([kernel, loud], -1), np.append(bias, magnitude)]
        elif source is model.layers[after]:
            kernel, bias = weights
            weights = [np.concatenate([kernel, np.zeros((*kernel.shape[:2], 1, kernel.shape[3]))], 2), bias]
        target.set_weights([w.astype(np.float32) for w in weights])
    return broken
