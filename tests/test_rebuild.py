"""Keras 3 models rebuilt as tf-keras models for TF-MOT: same outputs, clear refusals naming the layer."""
from __future__ import annotations

import numpy as np
import pytest

from edgecompress.errors import UserError


@pytest.fixture(scope="module")
def keras3():
    from edgecompress.models import import_tf

    import_tf()
    import keras

    assert keras.__version__.startswith("3")
    keras.utils.set_random_seed(1)
    return keras


def test_keras3_functional_model_rebuilds_with_identical_outputs(keras3, tmp_path):
    from edgecompress.models import load_model
    from edgecompress.optimize.rebuild import as_tf_keras

    layers = keras3.layers
    inp = keras3.Input((8, 8), name="rows")
    x = layers.Dense(16, activation="relu", name="proj")(inp)
    att = layers.MultiHeadAttention(2, 8, name="mha")(x, x)
    x = layers.Add(name="residual")([x, att])
    x = layers.LayerNormalization(name="ln")(x)
    x = layers.Conv1D(8, 3, padding="same", name="conv")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    out = layers.Dense(10, activation="softmax", name="probs")(x)
    model = keras3.Model(inp, out)
    path = tmp_path / "k3.keras"
    model.save(path)

    loaded = load_model(path)
    assert loaded.flavour == "keras3"
    rebuilt = as_tf_keras(loaded.model).model
    assert type(rebuilt).__module__.startswith("tf_keras")
    assert [layer.name for layer in rebuilt.layers[1:]] == [layer.name for layer in model.layers[1:]]
    x = np.random.default_rng(0).random((5, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(rebuilt(x).numpy(), np.asarray(model(x)), rtol=1e-4, atol=1e-5)


def test_keras3_sequential_cnn_rebuilds(keras3, digits):
    from edgecompress.optimize.rebuild import as_tf_keras

    layers = keras3.layers
    model = keras3.Sequential(
        [keras3.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu"), layers.Flatten(), layers.Dense(10)]
    )
    rebuilt = as_tf_keras(model).model
    np.testing.assert_allclose(
        rebuilt(digits.val.x[:8]).numpy(), np.asarray(model(digits.val.x[:8])), rtol=1e-4, atol=1e-5
    )


def test_keras3_edge_layers_rebuild_with_their_weights(keras3):
    """Every layer and activation keras.applications' edge models use, in one model: the rebuild computes
    the same function (max abs error printed)."""
    from edgecompress.optimize.rebuild import as_tf_keras

    layers = keras3.layers
    inp = keras3.Input((16, 16, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = layers.Normalization(mean=[0.1, 0.2, 0.3], variance=[0.5, 1.0, 2.0])(x)
    x = layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = layers.Conv2D(8, 3, strides=2, activation="hard_silu")(x)
    a = layers.DepthwiseConv2D(3, padding="same", activation="gelu")(x)
    b = layers.SeparableConv2D(8, 3, padding="same", activation="hard_swish")(x)
    x = layers.Add()([a, b])
    se = layers.GlobalAveragePooling2D(keepdims=True)(x)
    se = layers.Conv2D(8, 1, activation="hard_sigmoid")(se)
    x = layers.Multiply()([x, se])
    x = layers.Concatenate()([x, layers.Activation("swish")(x)])
    x = layers.Dropout(0.2)(layers.GlobalAveragePooling2D()(x))
    model = keras3.Model(inp, layers.Dense(10, activation="softmax")(x))
    for weight in model.weights:  # away from initial zeros and ones, so that every weight is checked
        weight.assign(np.random.default_rng(len(weight.path)).normal(0, 0.5, weight.shape).astype(np.float32)
                      if "variance" not in weight.path else np.full(weight.shape, 2.0, np.float32))

    rebuilt = as_tf_keras(model)
    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    error = float(np.abs(rebuilt.model(x).numpy() - np.asarray(model(x))).max())
    print(f"rebuild max abs error {error:.2e} (reported {rebuilt.max_abs_error:.2e})")
    assert error < 1e-5 and rebuilt.max_abs_error < 1e-5


def test_keras3_custom_layer_is_refused_by_name(keras3):
    from edgecompress.optimize.rebuild import as_tf_keras

    class Doubler(keras3.layers.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras3.Input((4,))
    out = keras3.layers.Dense(2)(Doubler(name="my_doubler")(inp))
    with pytest.raises(UserError, match="my_doubler"):
        as_tf_keras(keras3.Model(inp, out))


def test_keras3_ops_in_graph_are_refused_by_name(keras3):
    from edgecompress.optimize.rebuild import as_tf_keras

    inp = keras3.Input((4,))
    hidden = keras3.layers.Dense(4, name="hidden")(inp)
    out = keras3.layers.Dense(2)(keras3.ops.sin(hidden))
    with pytest.raises(UserError, match="Keras 3 operation .*sin"):
        as_tf_keras(keras3.Model(inp, out))
