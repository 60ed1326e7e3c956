"""Low-rank factorization on real tf-keras models: ranks, parameter savings, fidelity, fine-tuning."""
from __future__ import annotations

import numpy as np
import pytest

from edgecompress.errors import UserError
from edgecompress.examples import accuracy, compile_classifier
from edgecompress.models import import_tf_keras, load_model
from edgecompress.optimize.base import Context
from edgecompress.optimize.lowrank import LowRank, choose_rank, factorize


def _energy_rank(kernel: np.ndarray, energy: float) -> int:
    """The rank from the definition, independently of choose_rank: first prefix reaching ENERGY."""
    s = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)
    share = np.cumsum(s**2) / np.sum(s**2)
    return next(r for r in range(1, len(s) + 1) if share[r - 1] >= energy)


def _planted(rank: int, shape: tuple[int, int], rng) -> np.ndarray:
    """A rank-RANK matrix plus noise holding about 1e-6 of its energy."""
    low = rng.normal(size=(shape[0], rank)) @ rng.normal(size=(rank, shape[1]))
    low /= np.linalg.norm(low)
    return (low + rng.normal(scale=1e-3 / np.sqrt(low.size), size=shape)).astype(np.float32)


def _branchy_model(keras):
    """A Functional graph: a 1x1 conv, two Dense branches joined, a shared layer, a softmax head."""
    layers = keras.layers
    inp = keras.Input((4, 4, 24), name="features")
    x = layers.Conv2D(40, 1, activation="relu", name="mix")(inp)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    a = layers.Dense(64, activation="relu", name="left")(x)
    b = layers.Dense(64, activation="relu", name="right")(x)
    shared = layers.Dense(64, activation="tanh", name="shared")
    x = layers.Add(name="join")([shared(a), shared(b)])
    out = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="branchy")


def test_outputs_close_at_high_energy_on_a_functional_graph():
    keras = import_tf_keras()
    keras.utils.set_random_seed(1)
    model = _branchy_model(keras)
    rng = np.random.default_rng(0)
    planted = {"mix": ((24, 40), 4), "left": ((40, 64), 6), "right": ((40, 64), 5), "shared": ((64, 64), 8)}
    for name, (shape, rank) in planted.items():
        layer = model.get_layer(name)
        kernel = _planted(rank, shape, rng).reshape(layer.kernel.shape)
        layer.set_weights([kernel, rng.normal(scale=0.1, size=shape[1]).astype(np.float32)])
    before = [w.copy() for w in model.get_weights()]
    x = rng.uniform(size=(64, 4, 4, 24)).astype(np.float32)

    result = factorize(model, 0.999)

    assert {f.layer: f.rank for f in result.layers} == {name: rank for name, (_, rank) in planted.items()}
    mix = next(f for f in result.layers if f.layer == "mix")
    assert (mix.full_rank, mix.params_before, mix.params_after) == (24, 24 * 40 + 40, 4 * (24 + 40) + 40)
    # The random 64 -> 10 head is full rank: factorising it would cost parameters, so it is kept.
    assert [(s.layer, s.technique) for s in result.skipped] == [("probs", "low_rank")]
    assert "saves no parameters" in result.skipped[0].reason
    new = result.model
    assert [layer.name for layer in new.layers if "lowrank" in layer.name] == [
        "mix_lowrank", "left_lowrank", "right_lowrank", "shared_lowrank"
    ]
    assert new.get_layer("shared_lowrank").kernel.shape == (64, 8)
    assert new.output_names == model.output_names
    np.testing.assert_allclose(new.predict(x, verbose=0), model.predict(x, verbose=0), atol=2e-3)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.count_params() > new.count_params()


def test_digits_cnn_factorised_halved_and_fine_tuned(digits, digits_model, digits_model_path, tmp_path):
    keras = import_tf_keras()
    source = load_model(digits_model_path).model
    before = [w.copy() for w in source.get_weights()]
    base = accuracy(source, digits.test.x, digits.test.y)

    result = factorize(source, 0.65)

    ranks = {f.layer: f.rank for f in result.layers}
    assert ranks == {name: _energy_rank(source.get_layer(name).kernel.numpy(), 0.65) for name in ("dense", "probs")}
    assert ranks["dense"] < 128 // 2
    assert result.params_after <= result.params_before / 2
    assert {s.layer: s.reason for s in result.skipped} == {
        "conv1": "3x3 convolution: only 1x1 convolutions are factorised",
        "conv2": "3x3 convolution: only 1x1 convolutions are factorised",
    }
    keras.utils.set_random_seed(0)
    model = compile_classifier(result.model)
    model.fit(digits.train.x, digits.train.y, epochs=6, batch_size=32, verbose=0)
    tuned = accuracy(model, digits.test.x, digits.test.y)
    assert tuned >= base - 0.01, f"low-rank drop {base - tuned:.3f} (from {base:.3f})"
    assert all(np.array_equal(a, b) for a, b in zip(before, source.get_weights()))
    # The factorised model saves and loads in safe mode like any tf-keras model.
    model.save(tmp_path / "lowrank.keras")
    reloaded = load_model(tmp_path / "lowrank.keras").model
    np.testing.assert_allclose(reloaded.predict(digits.test.x, verbose=0), model.predict(digits.test.x, verbose=0),
                               atol=1e-6)


def test_technique_refuses_a_model_with_nothing_to_gain(digits_model):
    ctx = Context(techniques=frozenset({"low_rank"}), steps_per_epoch=1, epochs=1)
    with pytest.raises(UserError, match="no Dense or 1x1 Conv2D layer saves parameters at low-rank energy 0.999"):
        LowRank(0.999).apply(digits_model, ctx)
    applied = LowRank(0.5).apply(digits_model, ctx)
    assert [r["layer"] for r in applied.details["ranks"]] == ["dense", "probs"]


@pytest.mark.parametrize("energy", [0.0, -0.1, 1.5])
def test_energy_outside_range_is_refused(digits_model, energy):
    with pytest.raises(UserError, match=r"outside \(0, 1\]"):
        factorize(digits_model, energy)
    with pytest.raises(UserError, match=r"outside \(0, 1\]"):
        LowRank(energy).validate()


def test_choose_rank_edges():
    s = np.array([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1, 0 of 14
    assert [choose_rank(s, e) for e in (0.5, 9 / 14, 0.9, 13 / 14, 1.0)] == [1, 1, 2, 2, 3]
