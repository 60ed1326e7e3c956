"""int16x8 on a model with LayerNormalization (converters.int16x8): its SQUARED_DIFFERENCE, which LiteRT cannot
run in int16, is kept in float, and its offset of zeros, which the quantizer gave scale 0 (the runtime aborted
the process on it), gets a scale; an op left without a kernel fails the conversion with one line instead of
an internal error."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def layer_norm_model(digits, tmp_path_factory):
    """A small digits classifier with a LayerNormalization between its Dense layers, trained briefly."""
    from edgecompress.models import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((8, 8, 1)), layers.Flatten(), layers.Dense(32, activation="relu"),
        layers.LayerNormalization(), layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(digits.train.x, digits.train.y, epochs=5, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("int16") / "layer_norm.keras"
    model.save(path)
    return path


def test_int16x8_runs_with_squared_difference_in_float(layer_norm_model, calib_npz, test_npz, tmp_path):
    from edgecompress.converters import convert_model
    from edgecompress.evaluate import evaluate
    from edgecompress.tflite_reader import read_model

    result = convert_model(layer_norm_model, tmp_path / "i16.tflite", quantize="int16x8", calibration=calib_npz)
    assert result.validation.top1_agreement >= 0.97
    (graph,) = read_model(result.output).subgraphs
    ops = [op for op in graph.operators if op.name == "SQUARED_DIFFERENCE"]
    assert ops and all(graph.tensor(i).dtype == "float32" for op in ops for i in [*op.inputs, *op.outputs])
    assert any(op.name == "FULLY_CONNECTED" and graph.tensor(op.inputs[0]).dtype == "int16"
               for op in graph.operators)  # the rest stays int16x8
    none = convert_model(layer_norm_model, tmp_path / "f32.tflite")
    assert evaluate(result.output, test_npz).accuracy >= evaluate(none.output, test_npz).accuracy - 0.01


def test_an_op_without_kernel_fails_the_conversion_in_one_line(layer_norm_model, calib_npz, tmp_path, run_cli,
                                                               monkeypatch):
    from edgecompress.converters import int16x8

    monkeypatch.setattr(int16x8, "NO_INT16_KERNEL", ())  # as before the float islands
    out = tmp_path / "i16.tflite"
    code, stdout, err = run_cli(["convert", layer_norm_model, "-o", out, "--quantize", "int16x8",
                                 "--calibration", calib_npz])
    assert code == 2 and stdout == ""
    (line,) = err.strip().splitlines()[-1:]
    assert line.startswith("error:") and "SQUARED_DIFFERENCE" in line and "quantize int8" in line
    assert "Traceback" not in err and not out.exists()


def test_a_model_the_runtime_cannot_run_is_refused_by_evaluate_in_one_line(layer_norm_model, calib_npz, test_npz,
                                                                           tmp_path, run_cli, monkeypatch):
    """Such a file made elsewhere (here: by the converter without the float islands) gets the same kind of
    one-line error from evaluate, not an internal error."""
    from edgecompress.converters import int16x8
    from edgecompress.converters.convert import to_tflite
    from edgecompress.calibration import load_samples
    from edgecompress.models import load_model

    monkeypatch.setattr(int16x8, "NO_INT16_KERNEL", ())
    loaded = load_model(layer_norm_model)
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(to_tflite(loaded, "int16x8", samples=load_samples(calib_npz, loaded.inputs, 50)))
    code, stdout, err = run_cli(["evaluate", broken, "--data", test_npz])
    assert code == 2 and stdout == "" and "Traceback" not in err, err
    assert [line for line in err.strip().splitlines() if "error" in line] == [err.strip().splitlines()[-1]], err
    assert "cannot run it" in err and "SQUARED_DIFFERENCE" in err


def test_a_fused_relu6_on_an_almost_silent_tensor_loads_in_int16x8(calib_npz, tmp_path, monkeypatch):
    """6 / scale of a near-zero int16 output overflows int32 and LiteRT refused the model; the clamp it can
    never reach is dropped instead (a freshly initialised MobileNetV2 has such tensors)."""
    from edgecompress.converters import convert_model, int16x8
    from edgecompress.errors import UserError
    from edgecompress.models import import_tf_keras
    from edgecompress.tflite_reader import read_model

    keras = import_tf_keras()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((8, 8, 1)), layers.Conv2D(4, 3, use_bias=False), layers.ReLU(6.0),
        layers.Flatten(), layers.Dense(10, activation="softmax"),
    ])
    conv = model.layers[0]
    conv.set_weights([w * 1e-6 for w in conv.get_weights()])  # outputs around 1e-6: int16 scale ~1e-10
    source = tmp_path / "silent.keras"
    model.save(source)
    result = convert_model(source, tmp_path / "i16.tflite", quantize="int16x8", calibration=calib_npz)
    assert result.validation.max_abs_error < 1e-4  # the softmax of near-zero logits, as in the original
    (graph,) = read_model(result.output).subgraphs
    assert [op.name for op in graph.operators][:2] == ["QUANTIZE", "CONV_2D"]
    with monkeypatch.context() as m:
        m.setattr(int16x8, "_unreachable_clamps", lambda model: 0)
        with pytest.raises(UserError, match="no_integer_overflow"):
            convert_model(source, tmp_path / "i16.tflite", quantize="int16x8", calibration=calib_npz, force=True)
