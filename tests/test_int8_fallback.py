"""Accuracy-driven int8 on a model built to break it: the bundled digits CNN with one outlier channel whose
activations (about 1e4) leave the float output unchanged but make full int8 round every other channel to zero.
`diagnose` must name the layer at fault first, `convert --max-drop 1` must bring int8 back within a point of the
original while staying at least twice smaller than float32, and a plain int8 export must warn loudly."""
from __future__ import annotations

import json

import pytest

from edgecompress.examples import with_outlier_channel


@pytest.fixture(scope="module")
def broken_path(digits_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("broken") / "outlier.keras"
    with_outlier_channel(digits_model, layer="conv1").save(path)
    return path


def run_json(run_cli, args) -> tuple[int, dict, str]:
    code, out, err = run_cli([*args, "--json"])
    return code, json.loads(out), err


def test_diagnose_names_the_outlier_layer_first(run_cli, broken_path, calib_npz, val_npz):
    code, report, _ = run_json(run_cli, ["diagnose", broken_path, "--calibration", calib_npz, "--data", val_npz,
                                         "--num-samples", "100"])
    assert code == 0
    layers = report["layers"]
    assert layers[0]["name"] == "conv1" and layers[0]["op"] == "CONV_2D"
    assert layers[0]["signal_lost"] > 0.5 and all(l["signal_lost"] < 0.1 for l in layers[1:])
    assert layers[0]["range"] > 1000 * layers[1]["range"]  # the outlier's scale is what destroys the rest
    assert {"rmse", "rmse_over_scale", "tensor"} <= set(layers[0])
    accuracy = report["accuracy"]
    assert accuracy["float"] > 0.9 and accuracy["int8"] < 0.5 and accuracy["drop"] > 40


def test_max_drop_scales_the_outlier_channel_away_and_stays_full_int8(run_cli, broken_path, calib_npz, val_npz,
                                                                        test_npz, tmp_path):
    """The outlier channel is moved into the next layer's (zero) weights: the same function in float, and full
    int8 then holds with no layer in float. Before smoothing, conv1 and conv2 stayed float (94,712 bytes)."""
    from edgecompress.evaluate import evaluate

    code, plain, _ = run_json(run_cli, ["convert", broken_path, "-o", tmp_path / "float.tflite"])
    assert code == 0
    out = tmp_path / "fallback.tflite"
    code, result, err = run_json(run_cli, ["convert", broken_path, "-o", out, "--quantize", "int8",
                                           "--calibration", calib_npz, "--eval-data", val_npz, "--max-drop", "1"])
    assert code == 0, err
    steps = result["steps"]
    assert steps[0]["float_layers"] == [] and steps[0]["drop"] > 40 and not steps[0]["smoothed"]  # full int8 collapses
    assert steps[1]["smoothed"] and steps[1]["float_layers"] == [] and result["chosen_step"] == 1
    assert len(result["smoothed"]) == 1 and result["smoothed"][0].startswith("conv1 -> conv2: 1 channel(s)")
    assert result["target_met"] is True and result["float_layers"] == []
    assert result["source_accuracy"] - result["accuracy"] <= 0.01
    assert 3.5 * result["size_bytes"] <= plain["size_bytes"]
    assert result["validation"]["top1_agreement"] >= 0.95 and result["warnings"] == []
    # The readable report: one form per column (it mixed 2.45 and 0.4902, and said "original accuracy 1").
    from edgecompress.cli.convert_cmd import render_conversion
    from edgecompress.converters.convert import ConversionResult
    from edgecompress.converters.precision_steps import FallbackStep

    steps_ = [FallbackStep(**s) for s in steps]
    text = render_conversion(ConversionResult(**{**result, "validation": None, "calibration": [], "steps": steps_}))
    assert f"original accuracy: {result['source_accuracy']:.2%}; drop in points" in text
    assert f"{steps[0]['accuracy']:.2%}" in text and f"{steps[0]['drop']:.2f}" in text
    assert "outliers scaled" in text and "conv1 -> conv2" in text
    held_out = evaluate(out, test_npz)  # runs in ai-edge-litert, on data the search never saw
    assert held_out.runtime.startswith("ai-edge-litert")
    assert held_out.accuracy >= evaluate(broken_path, test_npz).accuracy - 0.02


def test_without_smoothing_the_layers_in_float_keep_int8_weights(broken_path, calib_npz, val_npz, test_npz,
                                                                   tmp_path):
    """The layers the fallback keeps in float give up int8 activations only: their weights are stored int8
    (weight-only), so the file is about int8's size, not float32's."""
    from edgecompress.calibration import load_samples
    from edgecompress.converters.fallback import accuracy_driven_int8
    from edgecompress.evaluate import evaluate, evaluate_keras
    from edgecompress.models import load_model
    from edgecompress.tflite_reader import parse_model

    loaded = load_model(broken_path)
    reference = evaluate_keras(loaded, val_npz)
    samples = load_samples(calib_npz, loaded.inputs, 100)
    data, search = accuracy_driven_int8(loaded, samples, val_npz, 1.0, reference, smooth=False)
    assert search.target_met and "conv1" in search.kept.float_layers
    assert set(search.reasons) == set(search.kept.float_layers)  # each listed with why
    assert "of its signal at int8" in search.reasons["conv1"]
    graph = parse_model(data).main
    float_convs = [op for op in graph.operators if op.name == "CONV_2D" and graph.tensor(op.outputs[0]).dtype == "float32"]
    producers = {out: op for op in graph.operators for out in op.outputs}
    for op in float_convs:  # weight-only: an int8 constant, dequantized right before the op
        dequantize = producers[op.inputs[1]]
        assert dequantize.name == "DEQUANTIZE" and graph.tensor(dequantize.inputs[0]).dtype == "int8"
        assert graph.tensor(dequantize.inputs[0]).is_constant
    assert float_convs
    assert search.kept.size_bytes < 85_000  # 94,712 with float weights
    (tmp_path / "m.tflite").write_bytes(data)
    assert evaluate(tmp_path / "m.tflite", test_npz).accuracy >= evaluate(broken_path, test_npz).accuracy - 0.02


def test_broken_int8_export_warns(run_cli, broken_path, calib_npz, tmp_path):
    out = tmp_path / "int8.tflite"
    code, result, err = run_json(run_cli, ["convert", broken_path, "-o", out, "--quantize", "int8",
                                           "--calibration", calib_npz, "--num-samples", "100"])
    assert code == 0 and out.exists()  # the file is written: the user may still want to look at it
    assert result["validation"]["top1_agreement"] < 0.5
    assert len(result["warnings"]) == 1 and "diagnose" in result["warnings"][0] and "--max-drop" in result["warnings"][0]
    assert "warning:" in err and "edgecompress diagnose" in err


def test_max_drop_stops_at_full_int8_when_it_is_good_enough(run_cli, digits_model_path, calib_npz, val_npz,
                                                           tmp_path):
    code, result, err = run_json(run_cli, ["convert", digits_model_path, "-o", tmp_path / "ok.tflite", "--quantize",
                                           "int8", "--calibration", calib_npz, "--num-samples", "100",
                                           "--eval-data", val_npz, "--max-drop", "1"])
    assert code == 0, err
    assert len(result["steps"]) == 1 and result["float_layers"] == [] and result["target_met"] is True
    assert result["drop"] <= 1 and result["warnings"] == [] and "warning" not in err


def test_max_drop_on_a_regression_model(run_cli, digits, tmp_path):
    """Float labels: the drop is the MAE increase in % of the original's MAE."""
    import numpy as np

    from edgecompress.models import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1), name="image"), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mae")
    targets = digits.train.y.astype(np.float32)
    model.fit(digits.train.x, targets, epochs=5, verbose=0)
    model.save(tmp_path / "reg.keras")
    np.savez(tmp_path / "reg.npz", x=digits.val.x, y=digits.val.y.astype(np.float32)[:, None])
    code, result, err = run_json(run_cli, ["convert", tmp_path / "reg.keras", "-o", tmp_path / "reg.tflite",
                                           "--quantize", "int8", "--calibration", tmp_path / "reg.npz",
                                           "--eval-data", tmp_path / "reg.npz", "--max-drop", "5"])
    assert code == 0, err
    first = result["steps"][0]
    assert result["source_accuracy"] > 0 and first["drop"] == pytest.approx(
        100 * (first["accuracy"] - result["source_accuracy"]) / result["source_accuracy"])
    assert result["target_met"] is True and result["drop"] <= 5


def test_max_drop_on_token_ids(run_cli, tmp_path):
    """A text classifier over int32 token ids (real reviews) with the same kind of outlier unit: the fallback
    search feeds the ids in their own dtype (it fed them as floats, which the runtime refused)."""
    import numpy as np

    from edgecompress.models import import_tf_keras
    from edgecompress.text.data import load_reviews

    keras = import_tf_keras()
    keras.utils.set_random_seed(0)
    data = load_reviews()

    def classifier(units: int):
        layers = keras.layers
        ids = keras.Input(data.train.x.shape[1:], dtype="int32", name="ids")
        x = layers.GlobalAveragePooling1D()(layers.Embedding(len(data.vocabulary), 16, name="table")(ids))
        x = layers.Dense(units, activation="relu", name="hidden")(x)
        return keras.Model(ids, layers.Dense(2, activation="softmax", name="probs")(x))

    model = classifier(8)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(data.train.x, data.train.y, epochs=3, batch_size=64, verbose=0)
    broken = classifier(9)  # one more hidden unit, always about 1e4, that the output reads with zero weights
    table, (kernel, bias), (out_kernel, out_bias) = (
        model.get_layer(n).get_weights() for n in ("table", "hidden", "probs"))
    broken.get_layer("table").set_weights(table)
    broken.get_layer("hidden").set_weights([np.concatenate([kernel, np.zeros((16, 1), np.float32)], 1),
                                            np.append(bias, np.float32(1e4))])
    broken.get_layer("probs").set_weights([np.concatenate([out_kernel, np.zeros((1, 2), np.float32)]), out_bias])
    broken.save(tmp_path / "text.keras")
    data.train.save_npz(tmp_path / "cal.npz")
    data.val.save_npz(tmp_path / "val.npz")
    code, result, err = run_json(run_cli, ["convert", tmp_path / "text.keras", "-o", tmp_path / "text.tflite",
                                           "--quantize", "int8", "--calibration", tmp_path / "cal.npz",
                                           "--num-samples", "100", "--eval-data", tmp_path / "val.npz",
                                           "--max-drop", "1"])
    assert code == 0, err
    assert result["steps"][0]["drop"] > 5 and len(result["steps"]) > 1  # full int8 fails, so the search runs
    # the outlier unit is scaled into the output layer's (zero) weights: full int8 holds, nothing stays float
    # (before: hidden and probs in float)
    assert result["smoothed"] and result["smoothed"][0].startswith("hidden -> probs")
    assert result["float_layers"] == [] and result["target_met"] is True
    code, plain, _ = run_json(run_cli, ["convert", tmp_path / "text.keras", "-o", tmp_path / "float.tflite"])
    assert result["size_bytes"] <= 0.35 * plain["size_bytes"]
