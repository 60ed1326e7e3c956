"""Real conversions of real models in every mode, validated and evaluated on the bundled digits."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgecompress.cli.main import main
from edgecompress.converters import convert_model
from edgecompress.runner import TFLiteRunner
from edgecompress.evaluate import evaluate
from edgecompress.models import import_tf, import_tf_keras, load_model

MODES = [("none", "float32"), ("dynamic", "float32"), ("float16", "float32"), ("int8", "float32"),
         ("int8", "int8"), ("int8", "uint8"), ("int16x8", "float32")]


@pytest.fixture(scope="module")
def loaded_digits(digits_model_path):
    return load_model(digits_model_path)


@pytest.fixture(scope="module")
def conversions(loaded_digits, calib_npz, tmp_path_factory):
    """The trained digits model in every mode (model loaded once, as a pipeline would)."""
    out = tmp_path_factory.mktemp("modes")
    return {
        (q, io): convert_model(loaded_digits, out / f"{q}_{io}.tflite", q, calibration=calib_npz, io_type=io)
        for q, io in MODES
    }


@pytest.fixture(scope="module")
def keras_accuracy(digits_model_path, test_npz):
    return evaluate(digits_model_path, test_npz).accuracy


def test_sizes_follow_the_precision(conversions):
    size = {k: r.size_bytes for k, r in conversions.items()}
    float_size = size[("none", "float32")]
    assert 280_000 < float_size < 300_000  # 72K float32 parameters
    assert 0.45 < size[("float16", "float32")] / float_size < 0.55
    for key in [("dynamic", "float32"), ("int8", "float32"), ("int8", "int8"), ("int16x8", "float32")]:
        assert 0.22 < size[key] / float_size < 0.32, key
    for result in conversions.values():
        assert result.gzip_bytes < result.size_bytes
        assert result.source_size_bytes > result.size_bytes
    # Ratios are against the source's weights (the .keras file adds optimizer state and format): float32 is
    # about the same size, int8 about a quarter.
    assert 0.95 < conversions[("none", "float32")].ratio < 1.05
    assert 3.2 < conversions[("int8", "int8")].ratio < 4.5


@pytest.mark.parametrize("mode, max_error", [
    (("none", "float32"), 1e-5), (("float16", "float32"), 5e-3), (("dynamic", "float32"), 0.05),
    (("int8", "float32"), 0.08), (("int8", "int8"), 0.08), (("int8", "uint8"), 0.08), (("int16x8", "float32"), 0.05),
])
def test_validation_against_the_original(conversions, mode, max_error):
    v = conversions[mode].validation
    assert v.samples == 100 and v.data == "calibration"
    assert v.max_abs_error < max_error
    assert v.mean_abs_error < max_error / 10
    assert v.top1_agreement >= 0.98
    assert conversions[mode].warnings == []  # a sound export says nothing alarming
    assert [s.name for s in conversions[mode].calibration] == ["image"]
    assert conversions[mode].calibration[0].count == 200


@pytest.mark.parametrize("mode", MODES)
def test_accuracy_on_held_out_digits(conversions, keras_accuracy, test_npz, mode):
    result = evaluate(conversions[mode].output, test_npz)
    assert result.samples == 300
    assert keras_accuracy > 0.95
    assert abs(result.accuracy - keras_accuracy) <= 0.02


@pytest.mark.parametrize("io_type, dtype", [("float32", np.float32), ("int8", np.int8), ("uint8", np.uint8)])
def test_io_type_and_fixed_batch(conversions, io_type, dtype):
    runner = TFLiteRunner(conversions[("int8", io_type)].output)
    (inp,), (out,) = runner.interpreter.get_input_details(), runner.interpreter.get_output_details()
    assert inp["dtype"] == dtype and out["dtype"] == dtype
    assert list(inp["shape"]) == [1, 8, 8, 1] and list(out["shape"]) == [1, 10]
    assert [s.name for s in runner.inputs] == ["image"]


def test_cli_json_contract(digits_model_path, calib_npz, tmp_path, capsys):
    out = tmp_path / "cli.tflite"
    main(["convert", str(digits_model_path), "-o", str(out), "--quantize", "dynamic",
          "--calibration", str(calib_npz), "--num-samples", "50", "--json"])
    data = json.loads(capsys.readouterr().out)  # stdout holds only the JSON object
    assert data["output"] == str(out) and data["quantize"] == "dynamic"
    assert data["size_bytes"] == out.stat().st_size and data["gzip_bytes"] < data["size_bytes"]
    assert data["source_size_bytes"] == digits_model_path.stat().st_size
    assert data["calibration"][0]["count"] == 50
    assert set(data["validation"]) >= {"max_abs_error", "mean_abs_error", "top1_agreement"}
    assert data["validation"]["top1_agreement"] >= 0.98


def test_cli_readable_report(digits_model_path, calib_npz, tmp_path, capsys):
    main(["convert", str(digits_model_path), "-o", str(tmp_path / "r.tflite"), "--quantize", "float16",
          "--calibration", str(calib_npz)])
    text = capsys.readouterr().out
    for words in ("Calibration data", "gzip", "size ratio", "max abs error", "mean abs error", "SQNR (dB)", "agreement"):
        assert words in text


def test_multi_input_tf_keras_to_int8(tmp_path):
    """Two inputs on very different scales: swapping them in calibration or at run time would show."""
    keras = import_tf_keras()
    keras.utils.set_random_seed(1)
    a, b = keras.Input((4,), name="small"), keras.Input((3,), name="large")
    x = keras.layers.Concatenate()([a, keras.layers.Rescaling(0.01)(b)])
    x = keras.layers.Dense(16, activation="relu")(x)
    model = keras.Model([a, b], keras.layers.Dense(5, activation="softmax", name="probs")(x))
    path = tmp_path / "two.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    data = tmp_path / "two.npz"
    np.savez(data, small=rng.random((120, 4), dtype=np.float32),
             large=(100 * rng.random((120, 3))).astype(np.float32))
    result = convert_model(path, tmp_path / "two.tflite", "int8", calibration=data, io_type="int8")
    assert sorted(s.name for s in TFLiteRunner(result.output).inputs) == ["large", "small"]
    assert result.validation.max_abs_error < 0.05
    assert result.validation.top1_agreement >= 0.95


def _quantized_input_ranges(path) -> dict[str, float]:
    """The real range each int8 input covers (its scale times 255), by signature name."""
    return {p.spec.name: p.scale * 255 for p in TFLiteRunner(path).in_ports}


@pytest.mark.parametrize("names", [("image", "features"), ("image", "features", "extra"), ("zeta", "mid", "alpha")])
def test_multi_input_calibration_follows_signature_names(tmp_path, names):
    """Inputs on very different scales: calibration must feed each one its own samples. The converted model's
    input order is not Keras's (image/features and image/features/extra come out reordered; zeta/mid/alpha
    happens to keep Keras order), so only feeding by name is right for all three."""
    keras = import_tf_keras()
    keras.utils.set_random_seed(2)
    image = keras.Input((32, 32, 1), name=names[0])
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(image))
    vectors = [keras.Input((5,), name=n) for n in names[1:]]
    x = keras.layers.Concatenate()([x, *[keras.layers.Rescaling(0.001 * 10 ** i)(v) for i, v in enumerate(vectors)]])
    model = keras.Model([image, *vectors], keras.layers.Dense(3, activation="softmax")(x))
    path = tmp_path / "multi.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    scales = {names[0]: 1.0, **{n: 1000.0 * 10 ** i for i, n in enumerate(names[1:])}}
    feeds = {n: (scales[n] * rng.random((60, *model.get_layer(n).output.shape[1:]))).astype(np.float32)
             for n in names}
    data = tmp_path / "multi.npz"
    np.savez(data, **feeds)
    result = convert_model(path, tmp_path / "multi.tflite", "int8", calibration=data, io_type="int8")
    ranges = _quantized_input_ranges(result.output)
    for name in names:  # each input's int8 range was calibrated on its own data
        assert 0.9 * scales[name] < ranges[name] < 1.1 * scales[name], ranges
    assert result.validation.top1_agreement >= 0.95


def test_keras3_model(tmp_path):
    import keras  # Keras 3, beside tf-keras

    model = keras.Sequential([keras.Input((6,), name="features"), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    path = tmp_path / "k3.keras"
    model.save(path)
    assert load_model(path).flavour == "keras3"
    result = convert_model(path, tmp_path / "k3.tflite", "dynamic")
    assert result.validation.data == "generated"
    assert result.validation.max_abs_error < 1e-3 and result.validation.top1_agreement == 1.0


def test_savedmodel_folder(digits_model, calib_npz, tmp_path):
    tf = import_tf()
    folder = tmp_path / "saved"
    tf.saved_model.save(digits_model, str(folder))
    result = convert_model(folder, tmp_path / "sm.tflite", "float16", calibration=calib_npz)
    assert 140_000 < result.size_bytes < 160_000
    assert result.validation.max_abs_error < 5e-3 and result.validation.top1_agreement == 1.0


def test_a_savedmodel_keeps_its_output_names(tmp_path):
    """A user scores the .tflite by the SavedModel's output names (evaluate --model-output note): they used to
    come out as output_0, output_1."""
    tf = import_tf()

    class TwoHeads(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.random.default_rng(0).random((4, 3), dtype=np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def __call__(self, x):
            return {"score": tf.nn.softmax(x @ self.w), "box": x[:, :2] * 2.0}

    module = TwoHeads()
    tf.saved_model.save(module, str(tmp_path / "heads"), signatures=module.__call__)
    result = convert_model(tmp_path / "heads", tmp_path / "heads.tflite")
    assert sorted(o.name for o in TFLiteRunner(result.output).outputs) == ["box", "score"]
    assert result.validation.max_abs_error < 1e-5


def test_lstm_tf_keras_to_full_int8(tmp_path):
    keras = import_tf_keras()
    keras.utils.set_random_seed(2)
    seq = keras.Input((12, 4), name="sequence")
    model = keras.Model(seq, keras.layers.Dense(3, activation="softmax")(keras.layers.LSTM(16)(seq)))
    path = tmp_path / "lstm.h5"
    model.save(path)
    data = tmp_path / "seq.npy"
    np.save(data, np.random.default_rng(0).random((60, 12, 4), dtype=np.float32))
    result = convert_model(path, tmp_path / "lstm.tflite", "int8", calibration=data, io_type="int8",
                           num_samples=40, validation_samples=20)
    runner = TFLiteRunner(result.output)
    assert runner.inputs[0].dtype == "int8" and runner.inputs[0].shape == (1, 12, 4)
    assert result.validation.max_abs_error < 0.05
    assert result.calibration[0].count == 40 and result.validation.samples == 20


def test_flex_ops_are_refused_unless_allowed(tmp_path):
    tf = import_tf()

    class Determinant(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3, 3], tf.float32, name="m")])
        def __call__(self, m):
            return {"det": tf.linalg.det(m + tf.eye(3))}

    module = Determinant()
    tf.saved_model.save(module, str(tmp_path / "det"), signatures=module.__call__)
    from edgecompress.errors import UserError

    with pytest.raises(UserError, match=r"MatrixDeterminant.*set allow_flex"):
        convert_model(tmp_path / "det", tmp_path / "det.tflite")
    assert not (tmp_path / "det.tflite").exists()
    result = convert_model(tmp_path / "det", tmp_path / "det.tflite", allow_flex=True)
    assert result.flex_ops == ["MatrixDeterminant"] and result.validation is None
