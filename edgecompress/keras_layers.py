"""The Keras layers edgecompress's own models need beyond tf-keras's: learned position embeddings (the text
encoders). Beside keras_activations.py, registered the same way.

Registered as "edgecompress>PositionEmbedding" so a saved model loads (in safe mode) wherever
edgecompress.models.import_tf_keras has run. It adds a (sequence length, width) table to the token
embeddings: one ADD of a constant in the .tflite, which every runtime and quantizer handles.
"""
from __future__ import annotations

from functools import cache
from typing import Any

_PACKAGE = "edgecompress"


@cache
def position_embedding_class() -> type:
    import tf_keras

    @tf_keras.saving.register_keras_serializable(_PACKAGE)
    class PositionEmbedding(tf_keras.layers.Layer):
        """x + P[:seq_len] for x of shape (batch, seq_len, width); P is learned, initialised small."""

        def build(self, input_shape: Any) -> None:
            self.positions = self.add_weight(
                name="positions", shape=(int(input_shape[1]), int(input_shape[2])),
                initializer=tf_keras.initializers.RandomNormal(stddev=0.02),
            )
            super().build(input_shape)

        def call(self, x: Any) -> Any:
            return x + self.positions[None, : x.shape[1]]

    return PositionEmbedding


def register() -> None:
    position_embedding_class()
