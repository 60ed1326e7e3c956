"""optimize trains with the loss that fits the output and its labels, and takes models with several outputs.

optimize fine-tuned every model with categorical cross-entropy: on word embeddings the loss went to -13.6 while
early stopping watched an 'accuracy' of float vectors (issue 24); a one-sigmoid classifier, per-pixel class
labels and a detector with a box head beside its class head were refused ("fine-tunes single-output classifiers
only", issue 25). Each model here is built and trained by the test on a task it can learn.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

RNG = np.random.default_rng(0)
X = RNG.random((240, 10, 10, 1)).astype(np.float32) * 0.7
X[np.arange(240) % 2 == 0, :, :5] += 0.3  # one half clearly brighter: a task a small net learns in a few epochs
X[np.arange(240) % 2 == 1, :, 5:] += 0.3
LEFT, RIGHT = X[:, :, :5].mean(axis=(1, 2, 3)), X[:, :, 5:].mean(axis=(1, 2, 3))
SIDE = (LEFT > RIGHT).astype(np.int64)  # which half is brighter
MEANS = np.stack([LEFT, RIGHT], axis=1).astype(np.float32)


def _trunk(k):
    x = k.Input((10, 10, 1), name="image")
    h = k.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    return x, k.layers.Dense(32, activation="relu", name="hidden")(k.layers.Flatten()(h))


def _save(model, losses, targets, path):
    model.compile("adam", losses)
    model.fit(X, targets, epochs=20, batch_size=32, verbose=0)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def k():
    from edgecompress.models import import_tf_keras

    k = import_tf_keras()
    k.utils.set_random_seed(0)
    return k


def _optimize(run_cli, model, labels, tmp_path, *extra):
    np.savez(tmp_path / "train.npz", x=X, y=labels)
    code, out, err = run_cli(["optimize", model, "-o", tmp_path / "out.keras", "--train", tmp_path / "train.npz",
                              "--prune", "0.3", "--epochs", "2", "--json", *extra])
    return code, (json.loads(out) if code == 0 else None), err


def test_float_targets_train_with_mean_squared_error(run_cli, k, tmp_path):
    x, h = _trunk(k)
    model = _save(k.Model(x, k.layers.Dense(2, name="means")(h)), "mse", MEANS, tmp_path / "reg.keras")
    code, result, err = _optimize(run_cli, model, MEANS, tmp_path)
    assert code == 0, err
    assert "mean squared error" in err and "val MAE" in err and "val accuracy" not in err
    (stage,) = result["training"]
    assert stage["metric"] == "MAE" and stage["best_val_accuracy"] is None and 0 <= stage["best_val_score"] < 0.05
    assert result["after"]["val_mae"] is None  # no --val: the held-out share is in the stage's score


def test_a_sigmoid_with_0_1_labels_trains_with_binary_cross_entropy(run_cli, k, tmp_path):
    x, h = _trunk(k)
    model = _save(k.Model(x, k.layers.Dense(1, activation="sigmoid", name="brighter_left")(h)),
                  "binary_crossentropy", SIDE, tmp_path / "binary.keras")
    code, result, err = _optimize(run_cli, model, SIDE, tmp_path)
    assert code == 0, err
    assert "binary cross-entropy" in err
    (stage,) = result["training"]
    assert stage["metric"] == "accuracy" and stage["best_val_score"] > 0.8


def test_per_pixel_class_labels_train_with_cross_entropy(run_cli, k, tmp_path):
    """A segmentation head: one class index per pixel."""
    x = k.Input((10, 10, 1))
    h = k.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    masks = (X[..., 0] > 0.5).astype(np.int64)
    model = _save(k.Model(x, k.layers.Conv2D(2, 1, activation="softmax")(h)), "sparse_categorical_crossentropy",
                  masks, tmp_path / "seg.keras")
    code, result, err = _optimize(run_cli, model, masks, tmp_path)
    assert code == 0, err
    assert result["training"][0]["best_val_score"] > 0.75  # half the pixels are each class


@pytest.fixture(scope="module")
def two_heads(k, tmp_path_factory):
    x, h = _trunk(k)
    model = k.Model(x, [k.layers.Dense(2, activation="softmax", name="side")(h), k.layers.Dense(2, name="box")(h)])
    return _save(model, ["sparse_categorical_crossentropy", "mse"], [SIDE, MEANS],
                 tmp_path_factory.mktemp("heads") / "two.keras")


def test_labels_for_one_head_keep_the_other(run_cli, two_heads, tmp_path):
    """Integer labels go to the only class output; the box head is kept by learning back its own outputs, and
    the result is compared with the original output by output."""
    code, result, err = _optimize(run_cli, two_heads, SIDE, tmp_path)
    assert code == 0, err
    assert "cross-entropy on output side; box kept" in err
    rows = {r["output"]: r for r in result["details"]["outputs"]["against the original"]}
    assert rows["side"]["labels"] == "yes" and rows["side"]["agreement"] > 0.8
    assert rows["box"]["labels"] == "kept" and rows["box"]["cosine"] > 0.95


def test_float_labels_name_their_head(run_cli, two_heads, tmp_path):
    code, _, err = _optimize(run_cli, two_heads, MEANS, tmp_path)
    assert code == 2 and "2 outputs (side 2, box 2)" in err and "--model-output" in err
    code, result, err = _optimize(run_cli, two_heads, MEANS, tmp_path, "--model-output", "box")
    assert code == 0, err
    assert result["training"][0]["metric"] == "MAE"
    rows = {r["output"]: r for r in result["details"]["outputs"]["against the original"]}
    assert rows["box"]["labels"] == "yes" and rows["side"]["labels"] == "kept"


def test_labels_that_fit_no_output_are_one_line(run_cli, two_heads, tmp_path):
    code, _, err = _optimize(run_cli, two_heads, np.zeros((len(X), 3, 3), np.float32), tmp_path, "--model-output",
                             "side")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "labels y have shape (3, 3)" in err
