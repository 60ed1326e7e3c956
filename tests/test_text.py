"""The text workload: the bundled reviews and their tokenizer, structured pruning of attention heads and
feed-forward units, and a text model built its own way (its own tokenizer, labels, layers and logits) going
through optimize, convert and evaluate with no special casing.

Models here are tiny and trained for a few epochs: the figures that matter (accuracy against a bag of
words, sizes, speed-ups) come from benchmarks/text_workload.py on the full-size encoder.
"""
from __future__ import annotations

import numpy as np
import pytest

from edgecompress.datasets import Split
from edgecompress.errors import UserError
from edgecompress.text.data import SEQ_LEN, load_raw_texts, load_reviews, vocabulary_path
from edgecompress.text.tokenizer import PAD_ID, UNK_ID, Vocabulary, build_vocabulary, load_vocabulary, words


@pytest.fixture(scope="session")
def reviews():
    return load_reviews()


def test_the_bundled_ids_are_what_the_tokenizer_makes_of_the_bundled_text(reviews):
    """What a Pi would compute from the text and the vocabulary file is exactly what the models were fed."""
    raw = [r for r in load_raw_texts() if r.label != "plot" and r.split == "test"]
    assert len(raw) == len(reviews.test.y) > 1000
    assert np.array_equal(reviews.vocabulary.encode([r.text for r in raw], SEQ_LEN), reviews.test.x)
    assert np.array_equal(np.array([r.label == "fresh" for r in raw]), reviews.test.y == 1)
    # held out: no test review is also a training review
    seen = {row.tobytes() for row in reviews.train.x}
    assert not any(row.tobytes() in seen for row in reviews.test.x)


def test_tokenizer_rules_and_vocabulary_file(tmp_path):
    assert words("It's NOT bad -- really!") == ["it's", "not", "bad", "-", "-", "really", "!"]
    vocab = build_vocabulary(["good film", "good plot", "bad film"], max_size=10)
    assert vocab.tokens == ("[PAD]", "[UNK]", "film", "good")  # seen twice or more, most frequent first
    assert vocab.encode(["good unknown film"], 5).tolist() == [[3, UNK_ID, 2, PAD_ID, PAD_ID]]
    assert load_vocabulary(vocab.save(tmp_path / "vocab.txt")) == vocab
    assert len(load_vocabulary(vocabulary_path())) == 8000
    with pytest.raises(UserError, match="must start with"):
        Vocabulary(("film", "good"))


def _tiny_encoder(reviews, heads=4, seed=0):
    from edgecompress.text.models import EncoderShape, build_text_encoder

    shape = EncoderShape(len(reviews.vocabulary), SEQ_LEN, width=32, depth=2, heads=heads, ffn=64)
    return build_text_encoder(shape, seed)


@pytest.fixture(scope="session")
def tiny_encoder(reviews, session_dir):
    from edgecompress.text.models import train_text_classifier

    model = train_text_classifier(_tiny_encoder(reviews), Split(reviews.train.x[:3000], reviews.train.y[:3000]),
                                  Split(reviews.val.x[:500], reviews.val.y[:500]), epochs=2)
    path = session_dir / "tiny_encoder.keras"
    model.save(path)
    return path


def test_shrinking_equals_silencing_what_was_removed(reviews, tiny_encoder):
    """Before fine-tuning, the smaller model computes exactly what the original computes with the removed heads'
    output projections and the removed units' input weights set to zero: nothing else was disturbed."""
    from edgecompress.models import load_model
    from edgecompress.optimize.data import Labeled, Target
    from edgecompress.optimize.structured import plan, shrink

    model = load_model(tiny_encoder).model
    chosen, _ = plan(model, heads=0.5, ffn=0.5, data=Labeled([reviews.train.x[:256]], reviews.train.y[:256],
                                                                   Target(0, "probs", "classes", 1)))
    small = shrink(model, chosen)
    for name, kept in chosen.heads.items():
        assert small.get_layer(name)._num_heads == 2 and len(kept) == 2
        scores = np.array(chosen.details["heads"][name]["loss_rise"])
        assert set(kept) == set(np.argsort(-scores, kind="stable")[:2])  # the two whose loss rises most stay
        out = model.get_layer(name)._output_dense
        kernel = out.kernel.numpy()
        kernel[[h for h in range(4) if h not in kept]] = 0.0
        out.kernel.assign(kernel)
    assert set(chosen.units) == {"block0_ffn_in", "block1_ffn_in"}  # the classifier head feeds no Dense
    for name, kept in chosen.units.items():
        assert small.get_layer(name).units == 32
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        dropped = [u for u in range(64) if u not in kept]
        kernel[:, dropped], bias[dropped] = 0.0, 0.0  # gelu(0) = 0: the unit feeds nothing forward
        layer.set_weights([kernel, bias])
    x = reviews.test.x[:64]
    np.testing.assert_allclose(small(x, training=False).numpy(), model(x, training=False).numpy(), atol=2e-5)
    assert small.count_params() < model.count_params()


def test_structured_pruning_through_optimize_shrinks_macs(reviews, tiny_encoder, tmp_path, run_cli):
    from edgecompress.converters.convert import convert_model
    from edgecompress.inspect import inspect_model
    from edgecompress.optimize import StructuredPrune, TrainSettings, optimize

    reviews.train.save_npz(train := tmp_path / "train.npz")
    Split(reviews.val.x[:300], reviews.val.y[:300]).save_npz(val := tmp_path / "val.npz")
    result = optimize(tiny_encoder, tmp_path / "pruned.keras", train, [StructuredPrune(heads=0.5, ffn=0.5)], val=val,
                      settings=TrainSettings(epochs=1))
    assert result.techniques == ["structured_prune"]
    assert result.details["structured_prune"]["heads"]["block1_attention"]["of"] == 4
    macs = []
    for source in (tiny_encoder, result.output):
        convert_model(source, out := tmp_path / f"{source.stem}.tflite", validation_samples=10)
        macs.append(inspect_model(out).macs_total)
    # attention projections and feed-forward layers are most of the work: half of them go
    assert macs[1] < 0.6 * macs[0]

    code, _, err = run_cli(["optimize", tiny_encoder, "-o", tmp_path / "bad.keras", "--train", train,
                            "--prune-heads", "1.5"])
    assert code == 2 and "--prune-heads 1.5 is outside [0, 1)" in err


def test_structured_pruning_refuses_a_model_without_attention(digits_model_path, tmp_path, run_cli, digits):
    digits.train.save_npz(train := tmp_path / "train.npz")
    code, _, err = run_cli(["optimize", digits_model_path, "-o", tmp_path / "o.keras", "--train", train,
                            "--prune-heads", "0.5"])
    assert code == 2 and "no MultiHeadAttention layer" in err and "Traceback" not in err


# A text model the project was not built around: characters instead of words, review-vs-plot-summary labels,
# a convolution before pre-norm attention, relu, max pooling, logits instead of softmax, its own layer names.
CHARS = 96


def _char_ids(texts: list[str]) -> np.ndarray:
    table = {c: i + 2 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz0123456789 .,;:!?'\"-()")}
    ids = np.zeros((len(texts), CHARS), dtype=np.int32)
    for row, text in enumerate(texts):
        found = [table.get(c, 1) for c in text.lower()[:CHARS]]
        ids[row, : len(found)] = found
    return ids


def _char_split(split: str, limit: int) -> Split:
    raw = [r for r in load_raw_texts() if r.split == split]
    plots = [r for r in raw if r.label == "plot"][: limit // 2]
    texts = plots + [r for r in raw if r.label != "plot"][: limit - len(plots)]
    order = np.random.default_rng(0).permutation(len(texts))
    texts = [texts[i] for i in order]
    return Split(_char_ids([t.text for t in texts]), np.array([t.label == "plot" for t in texts], dtype=np.int64))


def _char_model(width: int, heads: int, seed: int):
    from edgecompress.models import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(seed)
    L = keras.layers
    ids = keras.Input((CHARS,), dtype="int32", name="chars")
    x = L.Embedding(64, width, name="char_table")(ids)
    x = L.Conv1D(width, 5, padding="same", activation="relu", name="local_mix")(x)
    for i in range(2):
        a = L.MultiHeadAttention(heads, 8, name=f"att{i}")(y := L.LayerNormalization(name=f"pre_att{i}")(x), y)
        x = L.Add(name=f"res_a{i}")([x, a])
        h = L.Dense(4 * width, activation="relu", name=f"up{i}")(L.LayerNormalization(name=f"pre_ff{i}")(x))
        x = L.Add(name=f"res_f{i}")([x, L.Dense(width, name=f"down{i}")(L.Dropout(0.1, name=f"drop{i}")(h))])
    logits = L.Dense(2, name="logits")(L.GlobalMaxPooling1D(name="max_pool")(x))
    return keras.Model(ids, logits, name="char_classifier")


def test_an_unseen_text_model_goes_through_optimize_convert_evaluate(tmp_path, run_cli):
    from edgecompress.models import import_tf_keras

    keras = import_tf_keras()
    train, val, test = _char_split("train", 1200), _char_split("val", 200), _char_split("test", 200)
    for split, name in ((train, "train"), (val, "val"), (test, "test")):
        split.save_npz(tmp_path / f"{name}.npz")
    teacher = _char_model(width=32, heads=4, seed=0)
    teacher.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])
    teacher.fit(train.x, train.y, epochs=4, batch_size=32, verbose=0)
    teacher.save(tmp_path / "teacher.keras")
    _char_model(width=16, heads=2, seed=1).save(tmp_path / "student.keras")
    data = ["--train", tmp_path / "train.npz", "--val", tmp_path / "val.npz", "--epochs", "3", "--json"]

    code, _, err = run_cli(["optimize", tmp_path / "teacher.keras", "-o", tmp_path / "heads.keras",
                            "--prune-heads", "0.5", "--prune-ffn", "0.5", *data])
    assert code == 0, err
    code, _, err = run_cli(["optimize", tmp_path / "student.keras", "-o", tmp_path / "distilled.keras",
                            "--distill-from", tmp_path / "teacher.keras", *data])
    assert code == 0, err

    import json

    accuracy = {}
    for model in ("teacher", "heads", "distilled"):
        for mode in ("int8", "int4"):
            out = tmp_path / f"{model}-{mode}.tflite"
            code, _, err = run_cli(["convert", tmp_path / f"{model}.keras", "-o", out, "--quantize", mode,
                                    "--calibration", tmp_path / "train.npz"])
            assert code == 0, err
            code, stdout, err = run_cli(["evaluate", out, "--data", tmp_path / "test.npz", "--json"])
            assert code == 0, err
            accuracy[model, mode] = json.loads(stdout)["accuracy"]
    # plot summaries and reviews are told apart far above chance (half of each) by every variant
    assert min(accuracy.values()) > 0.75, accuracy
    assert abs(accuracy["teacher", "int8"] - accuracy["teacher", "int4"]) < 0.05, accuracy
