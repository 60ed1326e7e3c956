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
