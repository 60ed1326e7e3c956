"""Decoder-only causal language models over byte-level BPE ids, built and trained with tf-keras.

token ids (batch, T) int32 -> tied token embedding + learned position embedding -> `depth` pre-norm blocks of
[LayerNormalization -> causal MultiHeadAttention -> residual add -> LayerNormalization -> Dense(ffn, gelu) ->
Dense(width) -> residual add] -> LayerNormalization -> logits = h E^T (the embedding table E reused as the
head). Stock Keras layers besides the two in keras_layers.py, so head and feed-forward pruning, low-rank
factorization, clustering and the weight quantizers find them by type.

Generation reads and extends a KV cache instead of recomputing the prefix. The interface is KerasHub's
CausalLM.call_with_cache, so a KerasHub backbone with that method exports the same way:

    call_with_cache(token_ids (B, n) int32, cache (B, depth, 2, seq_len, heads, head_dim) float32,
                    cache_update_index int) -> (logits (B, n, vocab), hidden (B, n, width), cache)

`call_with_cache` below implements it for the models `build_causal_lm` makes, from their layers' weights;
KerasHub's CausalLM tasks (GPT2CausalLM, GemmaCausalLM, ...) have it as a method. `as_causal_lm` gives either
the way the export uses it (CausalLM): the shape of its cache, its cached step, and its plain forward pass.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from edgecompress.keras_layers import position_embedding_class, reversible_embedding_class
from edgecompress.models import import_tf, import_tf_keras
from edgecompress.progress import note
from edgecompress.text.bpe import BPETokenizer


@dataclass(frozen=True)
class LMShape:
    vocab_size: int
    seq_len: int = 128  # the longest context: prompt and generated tokens together
    width: int = 128
    depth: int = 2
    heads: int = 4
    ffn: int = 512
    dropout: float = 0.0
    key_dim: int | None = None  # one head's size; None: width // heads (head pruning keeps the size, not the sum)

    @property
    def head_dim(self) -> int:
        return self.key_dim or self.width // self.heads


def build_causal_lm(shape: LMShape, seed: int = 0, name: str = "causal_lm") -> Any:
    keras = import_tf_keras("building a language model")
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    embedding = reversible_embedding_class()(shape.vocab_size, shape.width, name="token_embedding",
                                             embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02))
    x = position_embedding_class()(name="position_embedding", max_length=shape.seq_len)(embedding(ids))
    for block in range(shape.depth):
        p = f"block{block}"
        h = layers.LayerNormalization(epsilon=1e-5, name=f"{p}_attention_norm")(x)
        h = layers.MultiHeadAttention(shape.heads, shape.head_dim, dropout=shape.dropout, name=f"{p}_attention")(
            h, h, use_causal_mask=True)
        x = layers.Add(name=f"{p}_attention_add")([x, h])
        h = layers.LayerNormalization(epsilon=1e-5, name=f"{p}_ffn_norm")(x)
        h = layers.Dense(shape.ffn, activation="gelu", name=f"{p}_ffn_in")(h)
        h = layers.Dense(shape.width, name=f"{p}_ffn_out")(h)
        h = layers.Dropout(shape.dropout, name=f"{p}_ffn_dropout")(h)
        x = layers.Add(name=f"{p}_ffn_add")([x, h])
    x = layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    logits = embedding(x, reverse=True)
    model = keras.Model(ids, logits, name=name)
    model.lm_shape = asdict(shape)  # for reports; not saved
    return model


def lm_shape_of(model: Any) -> LMShape:
    """The shape of a model build_causal_lm made (read from its layers, so it holds after loading a file)."""
    if "token_embedding" not in {layer.name for layer in model.layers}:
        raise ValueError("it has no token_embedding layer")  # Keras's own message lists every layer
    embedding = model.get_layer("token_embedding")
    if not isinstance(embedding, reversible_embedding_class()) or len(model.output_shape) != 3:
        # The text encoders share the layer names; only a causal LM ends in the tied head, logits per position.
        raise ValueError("it does not end in the tied embedding's head (logits per position)")
    table = embedding.embeddings
    blocks = [layer for layer in model.layers if layer.name.endswith("_attention") and layer.name.startswith("block")]
    first = blocks[0]
    if any((b._num_heads, b._key_dim) != (first._num_heads, first._key_dim) for b in blocks):
        # One cache shape serves every block in the exported file.
        raise ValueError("its blocks have different numbers of attention heads")
    width = int(table.shape[1])
    return LMShape(vocab_size=int(table.shape[0]), seq_len=int(model.get_layer("position_embedding").positions.shape[0]),
                   width=width, depth=len(blocks), heads=first._num_heads,
                   ffn=int(model.get_layer("block0_ffn_in").kernel.shape[1]),
                   key_dim=None if first._key_dim * first._num_heads == width else first._key_dim)


@dataclass(frozen=True)
class CausalLM:
    """A Keras causal LM as the export takes it: the cache's shape (seq_len: its rows, the context), the cached
    step call_with_cache(token_ids, cache, cache_update_index) -> (logits, hidden, cache), and the plain forward
    pass token ids (B, T) -> logits (B, T, vocab) the step is checked against."""

    model: Any
    shape: LMShape
    step: Callable[[Any, Any, Any], tuple[Any, Any, Any]]
    forward: Callable[[np.ndarray], Any]


def as_causal_lm(model: Any, context: int | None = None) -> CausalLM:
    """MODEL (build_causal_lm's, or a KerasHub CausalLM task: anything with call_with_cache and a backbone) with a
    cache of CONTEXT rows (default: the longest its positions allow); what it cannot serve is a ValueError."""
    if hasattr(model, "call_with_cache") and hasattr(model, "backbone"):
        shape, forward = _keras_hub_shape(model.backbone, context), partial(_keras_hub_forward, model)
        step = model.call_with_cache
    else:
        try:
            shape = lm_shape_of(model)
        except (ValueError, AttributeError, IndexError) as exc:
            raise ValueError(f"it has no call_with_cache method, nor the layers build_causal_lm makes "
                             f"(token_embedding, position_embedding, blockN_attention): {exc}") from None
        step, forward = partial(call_with_cache, model), partial(model, training=False)
    if context is not None:
        if context > shape.seq_len:
            raise ValueError(f"context {context} is longer than the {shape.seq_len} positions the model has")
        shape = replace(shape, seq_len=context)
    return CausalLM(model, shape, step, forward)


def _keras_hub_shape(backbone: Any, context: int | None) -> LMShape:
    """A KerasHub backbone's cache shape: (num_layers, 2, context, key/value heads, head size), as its
    CausalLM._build_cache makes it (grouped-query models cache num_key_value_heads, not the query heads)."""
    heads = getattr(backbone, "num_key_value_heads", None) or backbone.num_heads
    head_dim = getattr(backbone, "head_dim", None) or backbone.hidden_dim // backbone.num_heads
    longest = getattr(backbone, "max_sequence_length", None) or context  # rotary positions: no limit of their own
    if longest is None:
        raise ValueError(f"{type(backbone).__name__} has no limit on positions of its own: give the cache length as "
                         "context")
    return LMShape(vocab_size=backbone.vocabulary_size, seq_len=longest, width=backbone.hidden_dim,
                   depth=backbone.num_layers, heads=heads, ffn=backbone.intermediate_dim, key_dim=head_dim)


def _keras_hub_forward(model: Any, ids: np.ndarray) -> Any:
    return model({"token_ids": ids, "padding_mask": np.ones_like(ids)}, training=False)


def empty_cache(shape: LMShape, batch: int = 1) -> np.ndarray:
    return np.zeros((batch, shape.depth, 2, shape.seq_len, shape.heads, shape.head_dim), np.float32)


def call_with_cache(model: Any, token_ids: Any, cache: Any, cache_update_index: Any) -> tuple[Any, Any, Any]:
    """KerasHub's CausalLM.call_with_cache (module doc) for a build_causal_lm model: TOKEN_IDS at positions
    CACHE_UPDATE_INDEX.. attend to the cache's first positions and to each other, causally; their keys and values
    are written into the cache, which is returned with the logits."""
    tf = import_tf()
    shape = lm_shape_of(model)
    rows = tf.shape(cache)[3]  # the context: at most the model's positions
    n = tf.shape(token_ids)[1]
    positions = cache_update_index + tf.range(n)
    x = model.get_layer("token_embedding")(token_ids)
    x = x + tf.gather(model.get_layer("position_embedding").positions, positions)[None]
    # Key j is visible to query i when j <= its position: earlier cache entries and the causal part of the new ones.
    visible = tf.range(rows)[None, :] <= positions[:, None]  # (n, rows)
    bias = tf.where(visible, 0.0, -1e9)[None, None]  # (1, 1, n, rows)
    caches = []
    for block in range(shape.depth):
        p = f"block{block}"
        attention = model.get_layer(f"{p}_attention")
        h = model.get_layer(f"{p}_attention_norm")(x)
        query = attention._query_dense(h) * (1.0 / math.sqrt(shape.head_dim))  # (B, n, heads, head_dim)
        keys = _update(tf, cache[:, block, 0], attention._key_dense(h), cache_update_index)
        values = _update(tf, cache[:, block, 1], attention._value_dense(h), cache_update_index)
        caches.append(tf.stack([keys, values], axis=1))
        scores = tf.einsum("bqhd,bkhd->bhqk", query, keys) + bias
        attended = tf.einsum("bhqk,bkhd->bqhd", tf.nn.softmax(scores, axis=-1), values)
        x = x + attention._output_dense(attended)
        h = model.get_layer(f"{p}_ffn_norm")(x)
        x = x + model.get_layer(f"{p}_ffn_out")(model.get_layer(f"{p}_ffn_in")(h))
    hidden = model.get_layer("final_norm")(x)
    logits = model.get_layer("token_embedding")(hidden, reverse=True)
    return logits, hidden, tf.stack(caches, axis=1)


def _update(tf: Any, cache: Any, update: Any, index: Any) -> Any:
    """CACHE (B, seq_len, heads, head_dim) with UPDATE (B, n, ...) written from position INDEX on."""
    n = tf.shape(update)[1]
    rows = index + tf.range(n)
    scattered = tf.scatter_nd(rows[:, None], tf.transpose(update, [1, 0, 2, 3]), tf.shape(tf.transpose(cache, [1, 0, 2, 3])))
    written = tf.scatter_nd(rows[:, None], tf.ones([n], cache.dtype), [tf.shape(cache)[1]])
    keep = (1.0 - written)[None, :, None, None]
    return cache * keep + tf.transpose(scattered, [1, 0, 2, 3])


# ------------------------------------------------------------------------------------------------- data

def token_windows(tokenizer: BPETokenizer, texts: Iterable[str], seq_len: int) -> np.ndarray:
    """TEXTS as one stream (each as <bos> ids <eos>) cut into windows of SEQ_LEN + 1 ids: inputs are a window's
    first SEQ_LEN ids, targets its last SEQ_LEN (next-token prediction)."""
    stream = [i for text in texts for i in tokenizer.encode(text, bos=True, eos=True)]
    count = (len(stream) - 1) // seq_len
    return np.array([stream[k * seq_len: k * seq_len + seq_len + 1] for k in range(count)], np.int32)


def train_causal_lm(model: Any, train: np.ndarray, val: np.ndarray, epochs: int = 20, learning_rate: float = 1e-3,
                    batch_size: int = 32, patience: int = 2, verbose: int = 0) -> Any:
    """Next-token training with AdamW on windows (token_windows), keeping the epoch of the lowest validation
    loss; returns an inference copy (no optimizer state)."""
    keras = import_tf_keras()
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    stop = keras.callbacks.EarlyStopping("val_loss", patience=patience, restore_best_weights=True)
    shown = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: note(
        f"  epoch {epoch + 1}: loss {logs['loss']:.4f}, val perplexity {math.exp(logs['val_loss']):.1f}"))
    model.fit(train[:, :-1], train[:, 1:], validation_data=(val[:, :-1], val[:, 1:]), epochs=epochs,
              batch_size=batch_size, callbacks=[stop, shown], verbose=verbose, shuffle=True)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def perplexity(model: Any, windows: np.ndarray, batch_size: int = 64) -> float:
    """exp of the mean next-token cross-entropy of MODEL over WINDOWS (every target token counted once)."""
    keras = import_tf_keras()
    losses = []
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        logits = model(chunk[:, :-1], training=False)
        losses.append(keras.losses.sparse_categorical_crossentropy(chunk[:, 1:], logits, from_logits=True).numpy())
    return float(np.exp(np.concatenate([x.reshape(-1) for x in losses]).mean()))


def bigram_perplexity(train: Sequence[np.ndarray], test: np.ndarray, vocab_size: int, k: float = 0.1) -> float:
    """The baseline a model must beat: next-token perplexity over TEST windows of an add-K-smoothed bigram model
    counted on TRAIN windows."""
    counts = np.zeros((vocab_size, vocab_size), np.float64)
    for window in train:
        np.add.at(counts, (window[:-1], window[1:]), 1.0)
    probs = (counts + k) / (counts.sum(axis=1, keepdims=True) + k * vocab_size)
    nll = [-np.log(probs[w[:-1], w[1:]]) for w in test]
    return float(np.exp(np.concatenate(nll).mean()))
