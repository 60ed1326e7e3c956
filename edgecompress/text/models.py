"""BERT-style encoder classifiers over token ids, built with tf-keras (TF-MOT works only on tf-keras).

token ids (batch, seq_len) int32 -> token embedding + learned position embedding -> LayerNormalization ->
`depth` blocks of [MultiHeadAttention -> residual add -> LayerNormalization -> Dense(ffn, gelu) ->
Dense(width) -> residual add -> LayerNormalization] (post-norm, as in BERT) -> mean over the sequence ->
Dense(num_classes, softmax). Padding (id 0) is not masked: a Keras mask adds comparison and cast ops that
TFLite's int16x8 quantizer cannot calibrate (it fails on the int32 ids), and the model learns to ignore the
padding embedding anyway.

Only stock Keras layers besides PositionEmbedding, so structured pruning (heads, feed-forward neurons),
low-rank factorization and clustering find the attention and Dense layers by their types, and the model
converts to builtin TFLite ops (FULLY_CONNECTED, BATCH_MATMUL, SOFTMAX, GELU, MEAN, ...).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgecompress.models import import_tf_keras
from edgecompress.keras_layers import position_embedding_class


@dataclass(frozen=True)
class EncoderShape:
    vocab_size: int
    seq_len: int
    num_classes: int = 2
    # BERT-Mini's shape (Turc et al., 2019: 4 layers, hidden 256, 4 heads, feed-forward 1024): about 150M MACs
    # for 48 tokens, a millisecond-scale model on a desktop core.
    width: int = 256
    depth: int = 4
    heads: int = 4
    ffn: int = 1024
    dropout: float = 0.1


# The distillation student of the demo and benchmarks/text_workload.py: 2 blocks of width 64 instead of the
# default 4 of width 256 (a tenth of the parameters, most of them in its token embedding; 1/28 of the MACs).
STUDENT_LAYOUT = {"width": 64, "depth": 2, "heads": 2, "ffn": 256}


def build_text_encoder(shape: EncoderShape, seed: int = 0, name: str = "text_encoder") -> Any:
    keras = import_tf_keras("building a text model")
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    ids = keras.Input((shape.seq_len,), dtype="int32", name="token_ids")
    x = layers.Embedding(shape.vocab_size, shape.width, name="token_embedding")(ids)
    x = position_embedding_class()(name="position_embedding")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name="embedding_norm")(x)
    x = layers.Dropout(shape.dropout, name="embedding_dropout")(x)
    for block in range(shape.depth):
        p = f"block{block}"
        attended = layers.MultiHeadAttention(shape.heads, shape.width // shape.heads, dropout=shape.dropout,
                                             name=f"{p}_attention")(x, x)
        attended = layers.Dropout(shape.dropout, name=f"{p}_attention_dropout")(attended)
        x = layers.LayerNormalization(epsilon=1e-6, name=f"{p}_attention_norm")(layers.Add(name=f"{p}_attention_add")([x, attended]))
        hidden = layers.Dense(shape.ffn, activation="gelu", name=f"{p}_ffn_in")(x)
        hidden = layers.Dense(shape.width, name=f"{p}_ffn_out")(hidden)
        hidden = layers.Dropout(shape.dropout, name=f"{p}_ffn_dropout")(hidden)
        x = layers.LayerNormalization(epsilon=1e-6, name=f"{p}_ffn_norm")(layers.Add(name=f"{p}_ffn_add")([x, hidden]))
    pooled = layers.GlobalAveragePooling1D(name="mean_pool")(x)
    pooled = layers.Dropout(shape.dropout, name="pool_dropout")(pooled)
    probs = layers.Dense(shape.num_classes, activation="softmax", name="probs")(pooled)
    model = keras.Model(ids, probs, name=name)
    model.encoder_shape = asdict(shape)  # for reports; not saved
    return model


def inference_copy(model: Any) -> Any:
    """MODEL's layers and weights without its optimizer: what a saved file should hold (AdamW's two moments
    would make it three times bigger, and the tf-keras .keras format has no include_optimizer=False)."""
    keras = import_tf_keras()
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def train_text_classifier(model: Any, train: Any, val: Any, epochs: int = 10, learning_rate: float = 3e-4,
                          batch_size: int = 32, patience: int = 2, verbose: int = 0) -> Any:
    """Train MODEL on TRAIN (a Split of token ids) with AdamW, keeping its best epoch on VAL; returns an
    inference_copy of it. 10k reviews are few for a transformer: it fits them by heart within 3-4 epochs, so
    early stopping, not the epoch budget, ends the training."""
    keras = import_tf_keras()
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=0.01),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping("val_accuracy", patience=patience, restore_best_weights=True, mode="max")
    model.fit(train.x, train.y, validation_data=(val.x, val.y), epochs=epochs, batch_size=batch_size,
              callbacks=[stop], verbose=verbose, shuffle=True)
    return inference_copy(model)
