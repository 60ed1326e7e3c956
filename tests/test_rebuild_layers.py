"""Every layer class Keras 3 and tf-keras share, rebuilt from Keras 3 into tf-keras (issue 25).

optimize refused a Keras 3 model with a stock Resizing layer (every upsampling segmentation model) with a raw
Python tuple: "('Keyword argument not understood:', 'data_format')". Here each shared class is built in a small
Keras 3 model with weights moved away from their initial values, rebuilt, and must compute the same outputs,
or be refused in one line of ours that names it. A class missing from the table below fails the first test,
so a new Keras release's layers are not skipped silently.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from edgecompress.errors import UserError

IMG, SEQ, VOL = (8, 8, 3), (6, 4), (4, 4, 4, 2)
TWO_IMG, TWO_SEQ = "two images", "two sequences"
POOL = {"pool_size": 2}
# class name -> (constructor arguments, or a wrapper's name; input shape without the batch, or (shape, dtype, ids))
LAYERS = {
    "Activation": ({"activation": "relu"}, IMG), "ActivityRegularization": ({}, IMG),
    "AdditiveAttention": ({}, TWO_SEQ), "Attention": ({}, TWO_SEQ), "AlphaDropout": ({"rate": 0.2}, IMG),
    "Add": ({}, TWO_IMG), "Average": ({}, TWO_IMG), "Maximum": ({}, TWO_IMG), "Minimum": ({}, TWO_IMG),
    "Multiply": ({}, TWO_IMG), "Subtract": ({}, TWO_IMG), "Concatenate": ({}, TWO_IMG), "Dot": ({"axes": -1}, TWO_SEQ),
    "AveragePooling1D": (POOL, SEQ), "AveragePooling2D": (POOL, IMG), "AveragePooling3D": (POOL, VOL),
    "MaxPooling1D": (POOL, SEQ), "MaxPooling2D": (POOL, IMG), "MaxPooling3D": (POOL, VOL),
    "GlobalAveragePooling1D": ({}, SEQ), "GlobalAveragePooling2D": ({}, IMG), "GlobalAveragePooling3D": ({}, VOL),
    "GlobalMaxPooling1D": ({}, SEQ), "GlobalMaxPooling2D": ({}, IMG), "GlobalMaxPooling3D": ({}, VOL),
    "BatchNormalization": ({}, IMG), "GroupNormalization": ({"groups": 3}, IMG), "LayerNormalization": ({}, SEQ),
    "UnitNormalization": ({}, SEQ), "Normalization": ({"mean": 0.5, "variance": 0.25}, IMG),
    "Bidirectional": ("Bidirectional", SEQ), "TimeDistributed": ("TimeDistributed", SEQ), "RNN": ("RNN", SEQ),
    "SpectralNormalization": ("SpectralNormalization", IMG), "MultiHeadAttention": ("MultiHeadAttention", SEQ),
    "CategoryEncoding": ({"num_tokens": 5, "output_mode": "multi_hot"}, ((3,), "int32", 5)),
    "Embedding": ({"input_dim": 10, "output_dim": 4}, ((5,), "int32", 10)),
    "Hashing": ({"num_bins": 4}, ((3,), "int32", 100)),
    "IntegerLookup": ({"vocabulary": [1, 2, 3]}, ((3,), "int32", 5)),
    "Discretization": ({"bin_boundaries": [0.25, 0.5, 0.75]}, SEQ),
    "CenterCrop": ({"height": 4, "width": 6}, IMG), "Resizing": ({"height": 16, "width": 12}, IMG),
    "Rescaling": ({"scale": 0.5, "offset": 0.1}, IMG),
    "Conv1D": ({"filters": 3, "kernel_size": 3}, SEQ), "Conv2D": ({"filters": 3, "kernel_size": 3}, IMG),
    "Conv3D": ({"filters": 3, "kernel_size": 2}, VOL),
    "Conv1DTranspose": ({"filters": 3, "kernel_size": 3, "strides": 2}, SEQ),
    "Conv2DTranspose": ({"filters": 3, "kernel_size": 3, "strides": 2}, IMG),
    "Conv3DTranspose": ({"filters": 3, "kernel_size": 2, "strides": 2}, VOL),
    "DepthwiseConv1D": ({"kernel_size": 3}, SEQ), "DepthwiseConv2D": ({"kernel_size": 3}, IMG),
    "SeparableConv1D": ({"filters": 3, "kernel_size": 3}, SEQ), "SeparableConv2D": ({"filters": 3, "kernel_size": 3}, IMG),
    "ConvLSTM1D": ({"filters": 2, "kernel_size": 3}, (3, 6, 2)),
    "ConvLSTM2D": ({"filters": 2, "kernel_size": 3}, (3, 6, 6, 2)),
    "ConvLSTM3D": ({"filters": 2, "kernel_size": 2}, (2, 4, 4, 4, 1)),
    "Cropping1D": ({"cropping": 1}, SEQ), "Cropping2D": ({"cropping": 1}, IMG), "Cropping3D": ({"cropping": 1}, VOL),
    "ZeroPadding1D": ({}, SEQ), "ZeroPadding2D": ({}, IMG), "ZeroPadding3D": ({}, VOL),
    "UpSampling1D": ({}, SEQ), "UpSampling2D": ({}, IMG), "UpSampling3D": ({}, VOL),
    "Dense": ({"units": 5}, SEQ), "EinsumDense": ({"equation": "abc,cd->abd", "output_shape": (None, 5)}, SEQ),
    "GRU": ({"units": 3}, SEQ), "LSTM": ({"units": 3}, SEQ), "SimpleRNN": ({"units": 3}, SEQ),
    "Dropout": ({"rate": 0.3}, IMG), "GaussianDropout": ({"rate": 0.2}, IMG), "GaussianNoise": ({"stddev": 0.1}, IMG),
    "SpatialDropout1D": ({"rate": 0.2}, SEQ), "SpatialDropout2D": ({"rate": 0.2}, IMG),
    "SpatialDropout3D": ({"rate": 0.2}, VOL),
    "RandomBrightness": ({"factor": 0.2}, IMG), "RandomContrast": ({"factor": 0.2}, IMG),
    "RandomCrop": ({"height": 4, "width": 4}, IMG), "RandomFlip": ({}, IMG),
    "RandomRotation": ({"factor": 0.1}, IMG), "RandomTranslation": ({"height_factor": 0.1, "width_factor": 0.1}, IMG),
    "RandomZoom": ({"height_factor": 0.1}, IMG),
    "ELU": ({}, IMG), "LeakyReLU": ({"negative_slope": 0.1}, IMG), "PReLU": ({}, IMG), "ReLU": ({}, IMG),
    "Softmax": ({}, IMG), "Identity": ({}, IMG), "Flatten": ({}, IMG), "Masking": ({}, SEQ),
    "Permute": ({"dims": (2, 1)}, SEQ), "RepeatVector": ({"n": 3}, (4,)), "Reshape": ({"target_shape": (24, 8)}, IMG),
}
# Not layers a model holds by themselves: bases, RNN cells (built inside RNN above), string-only preprocessing
# (no TFLite kernel takes strings), and Lambda (refused in safe mode before any rebuild).
NOT_STANDALONE = {"Layer", "Wrapper", "InputLayer", "GRUCell", "LSTMCell", "SimpleRNNCell", "StackedRNNCells",
                  "StringLookup", "TextVectorization", "HashedCrossing", "Lambda"}
# Layers the two libraries compute differently, refused in one line: Keras 3's RandomCrop passes images through
# at inference where tf-keras's crops them; the SpectralNormalization wrappers keep their power-iteration vector
# in different weights (and tf-keras's checks its layer's InputSpec against Keras 3's class when tf.keras is 3).
REFUSED = {"RandomCrop": "gives outputs of shape", "SpectralNormalization": r"\(SpectralNormalization\)"}


def _shared_classes() -> list[str]:
    import keras
    import tf_keras

    names = {getattr(keras.layers, n).__name__ for n in dir(keras.layers)
             if n in dir(tf_keras.layers) and inspect.isclass(getattr(keras.layers, n))
             and issubclass(getattr(keras.layers, n), keras.layers.Layer)}
    return sorted(names - NOT_STANDALONE)


@pytest.fixture(scope="module")
def keras3():
    from edgecompress.models import import_tf

    import_tf()
    import keras

    keras.utils.set_random_seed(3)
    return keras


def test_the_table_covers_every_shared_class(keras3):
    missing = [n for n in _shared_classes() if n not in LAYERS]
    assert not missing, f"add these layer classes to LAYERS: {missing}"


def _layer(keras3, name: str, spec):
    layers = keras3.layers
    wrapped = {"Bidirectional": lambda: layers.Bidirectional(layers.LSTM(3), merge_mode="concat"),
               "TimeDistributed": lambda: layers.TimeDistributed(layers.Dense(3)),
               "RNN": lambda: layers.RNN(layers.GRUCell(3)),
               "SpectralNormalization": lambda: layers.SpectralNormalization(layers.Conv2D(3, 3)),
               "MultiHeadAttention": lambda: layers.MultiHeadAttention(num_heads=2, key_dim=3)}
    return wrapped[spec]() if isinstance(spec, str) else getattr(layers, name)(**spec)


def _model_and_feed(keras3, name: str):
    spec, shape = LAYERS[name]
    layer = _layer(keras3, name, spec)
    rng = np.random.default_rng(0)
    if shape in (TWO_IMG, TWO_SEQ):
        one = IMG if shape == TWO_IMG else SEQ
        a, b = keras3.Input(one), keras3.Input(one)
        return keras3.Model([a, b], layer([a, b])), [rng.random((2, *one)).astype(np.float32) for _ in range(2)]
    if isinstance(shape[0], tuple):  # integer ids
        ids_shape, dtype, top = shape
        x = keras3.Input(ids_shape, dtype=dtype)
        return keras3.Model(x, layer(x)), rng.integers(0, top, (2, *ids_shape)).astype(dtype)
    x = keras3.Input(shape)
    out = layer(x, x) if name == "MultiHeadAttention" else layer(x)
    return keras3.Model(x, out), rng.random((2, *shape)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_each_shared_layer_rebuilds_with_the_same_outputs(keras3, name):
    from edgecompress.optimize.rebuild import as_tf_keras

    model, feed = _model_and_feed(keras3, name)
    for weight in model.weights:  # away from initial zeros and ones, so that every weight is carried over
        if np.issubdtype(np.dtype(weight.dtype), np.floating):
            positive = "variance" in weight.path or "gamma" in weight.path
            values = np.random.default_rng(len(weight.path)).normal(0, 0.5, weight.shape)
            weight.assign((np.abs(values) + 0.5 if positive else values).astype(np.float32))
    if name in REFUSED:
        with pytest.raises(UserError, match=REFUSED[name]) as refused:
            as_tf_keras(model)
        assert "\n" not in str(refused.value)
        return
    rebuilt = as_tf_keras(model).model
    want, got = model(feed, training=False), rebuilt(feed, training=False)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)


def test_a_keras3_only_setting_that_changes_the_result_is_refused_in_one_line(keras3):
    """Resizing with pad_to_aspect_ratio (Keras 3 only) computes something tf-keras's Resizing cannot."""
    from edgecompress.optimize.rebuild import as_tf_keras

    x = keras3.Input(IMG)
    model = keras3.Model(x, keras3.layers.Resizing(16, 8, pad_to_aspect_ratio=True, name="letterbox")(x))
    with pytest.raises(UserError, match="letterbox .*pad_to_aspect_ratio=True, which tf-keras's Resizing lacks"):
        as_tf_keras(model)
