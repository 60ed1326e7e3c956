"""QAT starts each activation quantizer at the range its tensor has in the float model (optimize.qat_ranges),
not TF-MOT's fixed [-6, 6]: on a tensor whose values are far smaller than 6 the fixed start rounded the whole
signal to zero during fine-tuning (EfficientNet's Rescaling(1/255) fed [0, 1] images)."""
from __future__ import annotations

import pytest

from edgecompress.datasets import Split


@pytest.fixture(scope="module")
def small_signal_model(digits, tmp_path_factory):
    """A digits CNN whose first layer scales its [0, 1] inputs down to [0, 1/16]: on TF-MOT's [-6, 6] start
    that range is one or two int8 levels."""
    from edgecompress.models import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((8, 8, 1)), layers.Rescaling(1 / 16), layers.Conv2D(16, 3, activation="relu"),
        layers.Flatten(), layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(digits.train.x, digits.train.y, epochs=20, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("ranges") / "small_signal.keras"
    model.save(path)
    return path


def _qat_int8_accuracy(model, digits, tmp_path, name):
    from edgecompress.converters.convert import convert_model
    from edgecompress.evaluate import evaluate
    from edgecompress.optimize import QAT, TrainSettings, optimize

    train = digits.train.save_npz(tmp_path / "train.npz")
    test = digits.test.save_npz(tmp_path / "test.npz")
    result = optimize(model, tmp_path / f"{name}.keras", train, [QAT()], settings=TrainSettings(epochs=1),
                      force=True)
    tflite = tmp_path / f"{name}.tflite"
    calib = Split(digits.train.x[:200], digits.train.y[:200]).save_npz(tmp_path / "calib.npz")
    convert_model(result.output, tflite, quantize="int8", calibration=calib, force=True)
    return result, evaluate(tflite, test).accuracy


def test_qat_ranges_start_from_the_float_model(small_signal_model, digits, tmp_path, monkeypatch):
    from edgecompress.converters.convert import convert_model
    from edgecompress.evaluate import evaluate
    from edgecompress.optimize import qat

    convert_model(small_signal_model, tmp_path / "float.tflite")
    float_accuracy = evaluate(tmp_path / "float.tflite", digits.test.save_npz(tmp_path / "t.npz")).accuracy
    result, calibrated = _qat_int8_accuracy(small_signal_model, digits, tmp_path, "calibrated")
    assert result.details["qat"]["ranges_from_float_model"] >= 2  # the input and the Rescaling's output
    assert float_accuracy > 0.9 and calibrated >= float_accuracy - 0.02, (calibrated, float_accuracy)

    monkeypatch.setattr(qat, "calibrate_ranges", lambda *args: 0)  # TF-MOT's fixed start, as before
    _, fixed_start = _qat_int8_accuracy(small_signal_model, digits, tmp_path, "fixed")
    assert fixed_start < calibrated - 0.03, (fixed_start, calibrated)


def test_parameter_counts_include_the_layers_qat_wraps():
    """A QAT model rebuilt from its config (as QAT's strip does) names the wrapped layers' variables after the
    wrappers (quant_conv2d/kernel): every one of them is still a parameter (issue 18: fer went 58,423 -> 35,880)."""
    import json

    from edgecompress.models import import_tf_keras
    from edgecompress.optimize.layers import import_tfmot
    from edgecompress.optimize.report import model_weights

    keras, tfmot = import_tf_keras(), import_tfmot()
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3)(keras.layers.Conv2D(4, 1, strides=2)(inp))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    quantized = tfmot.quantization.keras.quantize_model(model)
    with tfmot.quantization.keras.quantize_scope():
        rebuilt = keras.models.model_from_json(json.dumps(json.loads(quantized.to_json())))
    for qat_model in (quantized, rebuilt):
        assert sum(w.size for w in model_weights(qat_model)) == model.count_params()
