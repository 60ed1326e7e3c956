"""Activations Keras 3 models use that tf-keras lacks (or defines differently), as tf-keras functions.

A Keras 3 model rebuilt in tf-keras for TF-MOT (optimize/rebuild.py) names them by these registered names
("edgecompress>hard_swish"), so they serialize with the saved model and load again once register() has run,
which edgecompress.models.import_tf_keras does. Each is written with the TensorFlow ops the TFLite converter
maps to one builtin kernel (x * relu6(x + 3) / 6 becomes HARD_SWISH).
"""
from __future__ import annotations

from functools import cache
from typing import Any

_PACKAGE = "edgecompress"

# Keras 3 activation name -> the tf-keras name to use instead (same function, or one registered below).
KERAS3_NAMES = {
    "hard_sigmoid": f"{_PACKAGE}>hard_sigmoid",
    "hard_silu": f"{_PACKAGE}>hard_swish",
    "hard_swish": f"{_PACKAGE}>hard_swish",
    "relu6": f"{_PACKAGE}>relu6",
    "leaky_relu": f"{_PACKAGE}>leaky_relu",
    "silu": "swish",
}


@cache
def register() -> None:
    """Register the functions with tf-keras (TensorFlow must be imported through edgecompress.models first)."""
    import tensorflow as tf
    import tf_keras

    def hard_sigmoid(x: Any) -> Any:
        """Keras 3's hard_sigmoid, relu6(x + 3) / 6 (tf-keras's is 0.2 x + 0.5, clipped)."""
        return tf.nn.relu6(x + 3.0) * (1.0 / 6.0)

    def hard_swish(x: Any) -> Any:
        """Keras 3's hard_silu / hard_swish, x * relu6(x + 3) / 6 (MobileNetV3)."""
        return x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)

    def relu6(x: Any) -> Any:
        return tf.nn.relu6(x)

    def leaky_relu(x: Any) -> Any:
        """Keras 3's leaky_relu with its default negative slope, 0.2."""
        return tf.nn.leaky_relu(x, alpha=0.2)

    for fn in (hard_sigmoid, hard_swish, relu6, leaky_relu):
        tf_keras.saving.register_keras_serializable(_PACKAGE)(fn)
