"""The decoder-only language model (edgecompress/text/lm.py): its KV-cache step computes what the full model
computes, it saves and loads in safe mode, and training on the bundled text lowers its perplexity."""
from __future__ import annotations

import numpy as np
import pytest

from edgecompress.text.bpe import train_bpe
from edgecompress.text.data import load_raw_texts
from edgecompress.text.lm import (LMShape, bigram_perplexity, build_causal_lm, call_with_cache, empty_cache,
                                  lm_shape_of, perplexity, token_windows, train_causal_lm)

SHAPE = dict(seq_len=32, width=32, depth=2, heads=2, ffn=64)


@pytest.fixture(scope="module")
def corpus():
    raw = load_raw_texts()
    tokenizer = train_bpe([r.text for r in raw if r.split == "train"], 512)
    train = token_windows(tokenizer, [r.text for r in raw if r.split == "train"][:3000], SHAPE["seq_len"])
    val = token_windows(tokenizer, [r.text for r in raw if r.split == "val"][:400], SHAPE["seq_len"])
    return tokenizer, train, val


def test_prefill_then_one_token_at_a_time_computes_the_full_models_logits(corpus):
    tokenizer, _, val = corpus
    shape = LMShape(tokenizer.size, **SHAPE)
    model = build_causal_lm(shape, seed=1)
    ids = val[:3, :24]
    full = model(ids).numpy()
    logits, _, cache = call_with_cache(model, ids[:, :10], empty_cache(shape, 3), 0)
    assert np.abs(logits.numpy() - full[:, :10]).max() < 1e-4
    for t in range(10, 24):
        logits, hidden, cache = call_with_cache(model, ids[:, t:t + 1], cache, t)
        assert np.abs(logits.numpy()[:, 0] - full[:, t]).max() < 1e-4, t
    assert hidden.shape == (3, 1, shape.width) and cache.shape == empty_cache(shape, 3).shape
    assert np.count_nonzero(cache.numpy()[:, :, :, 24:]) == 0  # nothing written past the last position


def test_a_saved_model_loads_in_safe_mode_with_its_shape(corpus, tmp_path):
    from edgecompress.models import load_model

    tokenizer, _, val = corpus
    shape = LMShape(tokenizer.size, **SHAPE)
    model = build_causal_lm(shape)
    model.save(tmp_path / "lm.keras")
    loaded = load_model(tmp_path / "lm.keras").model
    assert lm_shape_of(loaded) == shape
    assert np.array_equal(loaded(val[:2, :16]).numpy(), model(val[:2, :16]).numpy())
    # The head is the embedding table itself: one weight, not two.
    assert sum(w.shape == (tokenizer.size, shape.width) for w in loaded.weights) == 1


def test_training_on_the_bundled_text_lowers_held_out_perplexity(corpus):
    """A 2-block width-32 model trained 4 epochs on 3,000 texts: about 55 against 512 untrained (a bigram gets
    about 44 there; the benchmark's teacher is the one that must beat it)."""
    tokenizer, train, val = corpus
    model = build_causal_lm(LMShape(tokenizer.size, **SHAPE))
    untrained = perplexity(model, val)
    trained = train_causal_lm(model, train, val, epochs=4, learning_rate=3e-3)
    after = perplexity(trained, val)
    bigram = bigram_perplexity(train, val, tokenizer.size)
    assert untrained > 0.8 * tokenizer.size  # random logits: about uniform over the vocabulary
    assert after < untrained / 4 and after < 2 * bigram


def test_a_text_encoder_with_the_same_layer_names_is_not_taken_for_a_causal_lm():
    from edgecompress.text.lm import as_causal_lm
    from edgecompress.text.models import EncoderShape, build_text_encoder

    encoder = build_text_encoder(EncoderShape(vocab_size=64, seq_len=8, width=16, depth=1, heads=2, ffn=32))
    with pytest.raises(ValueError, match="tied"):
        as_causal_lm(encoder)
