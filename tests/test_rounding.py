"""Weight rounding algorithms (issue 19): GPTQ for convolutions and dense layers, and `--algorithm auto`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgecompress.converters import rounding
from edgecompress.runtime import load_interpreter
from edgecompress.tflite_reader import parse_model


@pytest.fixture(scope="module")
def geometry_tflite(tmp_path_factory):
    """Convolutions of every geometry the patches must follow (stride 2 valid, dilation 2 same, 3x1 same with
    stride 2 on an odd map), then a dense layer, random weights: only the arithmetic matters."""
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    x = keras.Input((11, 9, 3))
    h = keras.layers.Conv2D(6, 3, strides=2, padding="valid", activation="relu")(x)
    h = keras.layers.Conv2D(5, 3, dilation_rate=2, padding="same")(h)
    h = keras.layers.Conv2D(4, (3, 1), strides=2, padding="same", activation="relu")(h)
    y = keras.layers.Dense(7)(keras.layers.Flatten()(h))
    model = keras.Model(x, y)
    fn = tf.function(lambda v: model(v, training=False)).get_concrete_function(tf.TensorSpec([1, 11, 9, 3]))
    path = tmp_path_factory.mktemp("geometry") / "geometry.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert())
    return path


def test_patches_reproduce_every_convolution(geometry_tflite):
    """The rows GPTQ's Hessian is built from are what the weights multiply: patches @ W^T + bias, through the fused
    activation, is the runtime's own output for every CONV_2D and FULLY_CONNECTED."""
    graph = parse_model(geometry_tflite.read_bytes()).main
    interpreter, _ = load_interpreter(geometry_tflite, preserve_all_tensors=True, use_xnnpack=False)
    x = np.random.default_rng(1).normal(size=(1, 11, 9, 3)).astype(np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    checked = 0
    for op in graph.operators:
        if op.name not in rounding.ROUNDED_OPS:
            continue
        weight = graph.tensor(op.inputs[1])
        bias = graph.tensor(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        rows = rounding._patches(interpreter.get_tensor(op.inputs[0]), op, weight.shape)
        pre = rows @ weight.data.reshape(weight.shape[0], -1).T + (bias.data if bias is not None else 0.0)
        out = interpreter.get_tensor(op.outputs[0]).reshape(-1, weight.shape[0])
        assert np.allclose(out, pre, atol=1e-4) or np.allclose(out, np.maximum(pre, 0), atol=1e-4), op
        checked += 1
    assert checked == 4


def test_gptq_loses_less_of_a_layer_output_than_rounding_to_nearest(float_tflite, calib_npz):
    """On the digits CNN's own activations, each layer's output error (W - Q) H (W - Q)^T is smaller with GPTQ
    than with plain rounding at the same scales."""
    graph = parse_model(float_tflite.read_bytes()).main
    interpreter, _ = load_interpreter(float_tflite)
    index = interpreter.get_input_details()[0]["index"]
    x = np.load(calib_npz)["x"][:48]
    targets = [op for op in graph.operators if op.name in rounding.ROUNDED_OPS]
    hessians = rounding._hessians(str(float_tflite), graph, targets, [{index: x[i:i + 1]} for i in range(48)], 0)
    low, high = rounding.int_range(4)
    for op in targets:
        weight = graph.tensor(op.inputs[1]).data
        w = weight.reshape(weight.shape[0], -1).astype(np.float64)
        h = hessians[op.index]
        scale = rounding._clip_scale(w, np.diag(h), low, high)
        nearest = np.clip(np.round(w / scale[:, None]), low, high)
        gptq = rounding.gptq(w, h, scale, low, high)
        assert gptq.min() >= low and gptq.max() <= high and np.all(gptq == np.round(gptq))

        def error(levels):
            d = w - levels * scale[:, None]
            return float(np.einsum("ij,jk,ik->", d, h, d))

        assert error(gptq) < error(nearest), op


def test_gptq_file_holds_exactly_the_rounded_weights_and_beats_minmax(run_cli, float_tflite, calib_npz, tmp_path):
    """The int4 file's integers and scales are the GPTQ rounding (read back by the quantizer's weight recovery,
    not re-rounded), and its outputs are closer to float's than min/max rounding's."""
    made = {}
    for algorithm in ("minmax", "gptq"):
        out = tmp_path / f"{algorithm}.tflite"
        code, text, err = run_cli(["quantize", float_tflite, "-o", out, "--quantize", "int4", "--algorithm", algorithm,
                                   "--calibration", calib_npz, "--json"])
        assert code == 0, err
        made[algorithm] = json.loads(text)
        assert made[algorithm]["algorithm"] == algorithm
    sqnr = {a: made[a]["validation"]["outputs"][0]["sqnr_db"] for a in made}
    assert sqnr["gptq"] > sqnr["minmax"], sqnr



def test_the_file_holds_exactly_the_gptq_rounding(float_tflite, calib_npz):
    """The int4 file's integers times its scales are the GPTQ-rounded weights to float precision: read back by the
    quantizer's weight recovery, not rounded a second time."""
    from edgecompress.converters.litert_quantize import quantize_weights
    from edgecompress.runner import TFLiteRunner

    x = np.load(calib_npz)["x"][:6]  # fewer than 8: all of them fit the Hessians
    made = quantize_weights(float_tflite.read_bytes(), "int4", algorithm="gptq", calibration={"x": x})
    assert made.algorithm == "gptq" and {layer.op for layer in made.rounded} == {"CONV_2D", "FULLY_CONNECTED"}
    index = TFLiteRunner(float_tflite).in_ports[0].index
    rounded, _ = rounding.round_weights(float_tflite.read_bytes(), [{index: x[i:i + 1]} for i in range(6)], 4,
                                        str(float_tflite))
    expected = {t.name: t.data for t in parse_model(rounded).main.tensors if t.is_constant}
    int4 = [t for t in parse_model(made.data).main.tensors if t.dtype == "int4"]
    assert len(int4) == len(made.rounded)
    for t in int4:
        scale = np.asarray(t.quantization.scale).reshape(-1, *[1] * (len(t.shape) - 1))
        restored = t.data.reshape(t.shape) * scale
        assert np.abs(restored - expected[t.name]).max() <= 1e-6 * np.abs(expected[t.name]).max(), t.name


def test_auto_measures_every_algorithm_and_keeps_the_best(run_cli, float_tflite, calib_npz, tmp_path):
    code, text, err = run_cli(["quantize", float_tflite, "-o", tmp_path / "auto.tflite", "--quantize", "int4",
                               "--calibration", calib_npz, "--json"])
    assert code == 0, err
    result = json.loads(text)
    choice = result["algorithm_choice"]
    trials = {t["algorithm"]: t["sqnr_db"] for t in choice["trials"]}
    assert set(trials) == {"minmax", "mse", "octav", "gptq"}
    assert result["algorithm"] == choice["chosen"]
    assert trials[choice["chosen"]] >= max(trials.values()) - 0.1
    assert "algorithm auto chose" in err and "held-out calibration samples" in err


def test_auto_without_samples_says_it_did_not_measure(run_cli, float_tflite, tmp_path):
    code, text, _ = run_cli(["quantize", float_tflite, "-o", tmp_path / "a.tflite", "--quantize", "int4"])
    assert code == 0
    assert "algorithm auto: mse, the default for the mode (no calibration samples" in text


def test_convert_rounds_by_the_algorithm_asked_for_even_in_dynamic(run_cli, digits_model_path, calib_npz, tmp_path):
    """convert's dynamic goes through TFLiteConverter unless an algorithm is asked for; then through the quantizer,
    whose gptq file is still int8 dynamic-range (int8 weights, float I/O)."""
    out = tmp_path / "dynamic-gptq.tflite"
    code, text, err = run_cli(["convert", digits_model_path, "-o", out, "--quantize", "dynamic", "--algorithm", "gptq",
                               "--calibration", calib_npz, "--json"])
    assert code == 0, err
    result = json.loads(text)
    assert result["algorithm"] == "gptq" and result["validation"]["top1_agreement"] >= 0.97
    weights = [t for t in parse_model(out.read_bytes()).main.tensors if t.is_constant and t.dtype == "int8"]
    assert len(weights) >= 3
    code, text, _ = run_cli(["convert", digits_model_path, "-o", tmp_path / "int4.tflite", "--quantize", "int4",
                             "--calibration", calib_npz, "--json"])
    assert code == 0 and len(json.loads(text)["algorithm_choice"]["trials"]) == 4


def test_int4_max_drop_moves_the_measured_culprits_up_and_says_why(run_cli, digits_model, calib_npz, digits,
                                                                   tmp_path, val_npz):
    """The digits CNN with one outlier channel (activations about 1e4 that the float output ignores): int4's hybrid
    kernels quantize each layer's input on the fly, so the layer reading the outlier loses every other channel.
    --max-drop moves layers up by their measured sensitivity until the target holds; each raised layer is listed
    with its measure; the file stays smaller than float32."""
    from edgecompress.examples import with_outlier_channel

    model = tmp_path / "outlier.keras"
    with_outlier_channel(digits_model, layer="conv1").save(model)
    val = val_npz
    code, text, err = run_cli(["convert", model, "-o", tmp_path / "plain.tflite", "--quantize", "int4", "--json"])
    assert code == 0
    plain_agreement = json.loads(text)["validation"]["top1_agreement"]
    code, text, err = run_cli(["convert", model, "-o", tmp_path / "f32.tflite", "--json"])
    float_size = json.loads(text)["size_bytes"]
    code, text, err = run_cli(["convert", model, "-o", tmp_path / "mixed.tflite", "--quantize", "int4", "--calibration",
                               calib_npz, "--eval-data", val, "--max-drop", "1", "--json"])
    assert code == 0, err
    result = json.loads(text)
    steps = result["steps"]
    assert result["target_met"] is True and steps[0]["int8_layers"] == [] and steps[0]["float_layers"] == []
    assert steps[0]["drop"] > 1 and plain_agreement < 0.9  # all int4 fails: the search had work to do
    raised = result["weight_only_layers"] + result["int8_layers"] + result["float_layers"]
    assert raised and set(raised) <= set(result["precision_reasons"])
    assert all("alone at int4" in result["precision_reasons"][layer] for layer in raised)
    assert result["size_bytes"] < float_size / 2
    assert "Why these layers are not plain int4" in run_cli(["convert", model, "-o", tmp_path / "again.tflite", "--quantize",
                                                       "int4", "--calibration", calib_npz, "--eval-data", val,
                                                       "--max-drop", "1"])[1]


def test_diagnose_int4_ranks_every_int4_layer_without_tensorflow(float_tflite, calib_npz):
    """diagnose --quantize int4 on a .tflite: every layer int4 would quantize is measured alone, most sensitive
    first, and nothing imports TensorFlow (the runtime side's promise)."""
    import subprocess
    import sys

    probe = ("import json, sys\nfrom edgecompress.cli.main import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
             "print()\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('tensorflow', 'tf_keras', 'keras'))))\n")
    done = subprocess.run([sys.executable, "-c", probe, "diagnose", str(float_tflite), "--calibration", str(calib_npz),
                           "--quantize", "int4", "--algorithm", "gptq", "--json"],
                          capture_output=True, text=True, timeout=600, cwd="/")
    assert done.returncode == 0, done.stderr
    *out, heavy = done.stdout.rstrip("\n").split("\n")
    assert json.loads(heavy) == []
    result = json.loads("\n".join(out))
    layers = result["layers"]
    assert result["algorithm"] == "gptq" and len(layers) == 4  # two convolutions, two dense layers
    assert {layer["op"] for layer in layers} == {"CONV_2D", "FULLY_CONNECTED"}
    figures = [layer["sqnr_db"] for layer in layers]
    assert figures == sorted(figures) and all(f is not None and f > 0 for f in figures)
    assert result["all_int4_sqnr_db"] <= figures[-1]  # all of them together lose at least what the mildest does


def test_quantize_max_drop_on_a_tflite_and_its_refusals(run_cli, digits_model, calib_npz, digits, tmp_path, val_npz):
    """The same search on a .tflite alone (the runtime side, no Keras source), and bad combinations refused in
    one line before any work."""
    from edgecompress.examples import with_outlier_channel

    model = tmp_path / "outlier.keras"
    with_outlier_channel(digits_model, layer="conv1").save(model)
    assert run_cli(["convert", model, "-o", tmp_path / "f32.tflite"])[0] == 0
    val = val_npz
    source = tmp_path / "f32.tflite"
    code, text, err = run_cli(["quantize", source, "-o", tmp_path / "mixed.tflite", "--quantize", "int4",
                               "--calibration", calib_npz, "--eval-data", val, "--max-drop", "1", "--json"])
    assert code == 0, err
    search = json.loads(text)["search"]
    assert search["target_met"] and search["steps"][0]["drop"] > 1 and search["chosen"] > 0
    assert json.loads(text)["size_bytes"] < source.stat().st_size / 2
    for extra, words in ((["--quantize", "dynamic", "--eval-data", val, "--calibration", calib_npz], "int4"),
                         (["--quantize", "int4", "--calibration", calib_npz], "--eval-data"),
                         (["--quantize", "int4", "--eval-data", val], "--calibration")):
        out = tmp_path / "bad.tflite"
        code, _, err = run_cli(["quantize", source, "-o", out, "--max-drop", "1", *extra])
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
