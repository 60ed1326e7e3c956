"""The Keras layers edgecompress's own models need beyond tf-keras's: learned position embeddings (the text
encoders and language models) and a token embedding that is also the output head (language models). Beside
keras_activations.py, registered the same way.

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
        """x + P[:seq_len] for x of shape (batch, seq_len, width); P is learned, initialised small. P has
        MAX_LENGTH rows (a language model's longest context, its inputs' length varying), else the input's length."""

        def __init__(self, max_length: int | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.max_length = max_length

        def build(self, input_shape: Any) -> None:
            self.positions = self.add_weight(
                name="positions", shape=(int(self.max_length or input_shape[1]), int(input_shape[2])),
                initializer=tf_keras.initializers.RandomNormal(stddev=0.02),
            )
            super().build(input_shape)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), **({"max_length": self.max_length} if self.max_length else {})}

        def call(self, x: Any) -> Any:
            length = x.shape[1]
            if length is None:  # a language model's inputs: as long as the prompt
                import tensorflow as tf

                length = tf.shape(x)[1]
            return x + self.positions[None, :length]

    return PositionEmbedding


@cache
def reversible_embedding_class() -> type:
    import tf_keras

    @tf_keras.saving.register_keras_serializable(_PACKAGE)
    class ReversibleEmbedding(tf_keras.layers.Embedding):
        """A token embedding E whose second use, reverse=True, is the tied output head: logits = h E^T (as
        KerasHub's ReversibleEmbedding). One table for both ends: the largest weight of a small LM, stored once."""

        def call(self, inputs: Any, reverse: bool = False) -> Any:
            if reverse:
                import tensorflow as tf

                return tf.matmul(inputs, self.embeddings, transpose_b=True)
            return super().call(inputs)

        def compute_output_shape(self, input_shape: Any, reverse: bool = False) -> Any:
            if reverse:
                return tuple(input_shape[:-1]) + (self.input_dim,)
            return super().compute_output_shape(input_shape)

    return ReversibleEmbedding


def register() -> None:
    position_embedding_class()
    reversible_embedding_class()
