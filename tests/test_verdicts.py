"""Verdicts a user can trust on models that are not single-output classifiers (issue 18): every output judged
by what it is, NaN never passes, JSON never breaks, `quantize` warns like `convert`. Each model is built here
in the shape of the real one that showed the defect (benchmarks/real_models.py runs the real ones)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecompress.compare import compare_output, output_kind
from edgecompress.tables import to_json


def _log_abs(t):
    import tensorflow as tf  # inside: the Lambda is saved as bytecode and runs where the model is loaded

    return tf.math.log(tf.abs(t))


@pytest.fixture(scope="module")
def silence_nan_model(tmp_path_factory):
    """basic-pitch's failure in small: log(|x| + 1e-10), whose epsilon float16 rounds to 0, so an all-zero input
    (silence) gives -inf in float16 and a finite value in float32. Typical samples never find it."""
    from edgecompress.models import import_tf_keras

    k = import_tf_keras()
    folder = tmp_path_factory.mktemp("silence")
    inp = k.Input((16,), name="audio")
    gain = k.layers.Dense(16, name="gain", kernel_initializer="identity",
                          bias_initializer=k.initializers.Constant(1e-10))(inp)
    log = k.layers.Lambda(_log_abs, name="log")(gain)
    model = k.Model(inp, k.layers.Dense(2, name="level")(log))
    model.save(folder / "silence.h5")
    np.savez(folder / "clips.npz", x=np.random.default_rng(0).uniform(0.1, 1, (50, 16)).astype("float32"))
    return folder / "silence.h5", folder / "clips.npz"


def test_a_float16_export_that_gives_nan_on_silence_fails(run_cli, silence_nan_model, tmp_path):
    model, clips = silence_nan_model
    out = tmp_path / "f16.tflite"
    code, stdout, err = run_cli(["convert", model, "-o", out, "--quantize", "float16", "--calibration", clips,
                                 "--unsafe", "--json"])
    assert code == 1 and stdout == ""
    assert "output 'level' on 1 of 53 samples" in err and "edge inputs (zeros, min, max)" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing half-written, so a rerun is clean
    code, _, err = run_cli(["convert", model, "-o", out, "--quantize", "float16", "--calibration", clips,
                            "--unsafe", "--keep-failed"])
    assert code == 1 and out.exists() and f"kept as {out}" in err


def test_the_same_model_in_float32_passes_with_the_edge_inputs_said(run_cli, silence_nan_model, tmp_path):
    model, clips = silence_nan_model
    code, stdout, _ = run_cli(["convert", model, "-o", tmp_path / "f32.tflite", "--calibration", clips,
                               "--unsafe", "--json"])
    v = json.loads(stdout)["validation"]
    assert code == 0 and v["samples"] == 50 and v["edge_inputs"] == ["zeros", "min", "max"]
    (level,) = v["outputs"]
    assert level["name"] == "level" and level["kind"] == "values" and level["nonfinite"] == 0
    assert level["sqnr_db"] is None or level["sqnr_db"] > 60  # exact (inf, null in JSON) or float rounding


def test_json_never_breaks_on_non_finite_numbers():
    doc = json.loads(to_json({"sqnr": float("inf"), "errors": [float("nan"), 1.5], "v": np.float32("nan")}))
    assert doc == {"sqnr": None, "errors": [None, 1.5], "v": None}


def test_each_output_is_judged_by_what_it_is():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(100, 5))
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    boxes = rng.uniform(0, 100, size=(100, 4))
    assert output_kind(scores) == "classes"
    assert output_kind(boxes) == "values"
    assert output_kind(rng.uniform(0, 1, size=(100, 1))) == "binary"
    assert output_kind(rng.uniform(0, 1, size=(100, 172, 88))) == "values"  # per-frame activations, not classes
    # Box coordinates that move by a pixel change their "argmax" but not what they say: no agreement for values.
    moved = compare_output("box", boxes, boxes + rng.normal(0, 1, size=boxes.shape))
    assert moved.kind == "values" and moved.agreement is None and 30 < moved.sqnr_db < 40
    flipped = compare_output("classes", scores, scores[::-1])
    assert flipped.kind == "classes" and flipped.agreement < 0.5


@pytest.fixture(scope="module")
def face_model(tmp_path_factory):
    """A three-headed face model (class scores, box, landmarks), trained a little on real faces-like data:
    the class head's agreement must be judged alone."""
    from edgecompress.models import import_tf_keras

    k = import_tf_keras()
    k.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("face")
    inp = k.Input((12, 12, 3), name="crop")
    x = k.layers.Conv2D(8, 3, activation="relu")(inp)
    x = k.layers.Flatten()(k.layers.MaxPooling2D()(x))
    heads = [k.layers.Dense(2, activation="softmax", name="face")(x), k.layers.Dense(4, name="box")(x),
             k.layers.Dense(10, name="landmarks")(x)]
    model = k.Model(inp, heads)
    model.save(folder / "face.keras")
    rng = np.random.default_rng(1)
    np.savez(folder / "crops.npz", crop=rng.uniform(0, 1, (60, 12, 12, 3)).astype("float32"))
    return folder / "face.keras", folder / "crops.npz"


def test_a_multi_output_model_is_validated_output_by_output(run_cli, face_model, tmp_path):
    model, crops = face_model
    code, stdout, _ = run_cli(["convert", model, "-o", tmp_path / "int8.tflite", "--quantize", "int8",
                               "--calibration", crops, "--json"])
    assert code == 0
    v = json.loads(stdout)["validation"]
    by_name = {o["name"]: o for o in v["outputs"]}
    assert set(by_name) == {"face", "box", "landmarks"}
    assert by_name["face"]["kind"] == "classes" and by_name["face"]["shape"] == [2]
    assert by_name["box"]["kind"] == "values" and by_name["box"]["agreement"] is None
    assert by_name["landmarks"]["shape"] == [10] and by_name["landmarks"]["sqnr_db"] > 15
    # The summary's top-1 is the class head's, over samples (not outputs).
    assert v["top1_agreement"] == by_name["face"]["agreement"]
    assert v["samples"] == 60 and all(o["nonfinite"] == 0 for o in v["outputs"])


def test_the_readable_report_has_a_row_per_output(run_cli, face_model, tmp_path):
    model, crops = face_model
    code, stdout, _ = run_cli(["convert", model, "-o", tmp_path / "f16.tflite", "--quantize", "float16",
                               "--calibration", crops])
    assert code == 0
    rows = {line.split()[0]: line for line in stdout.splitlines() if line.split()[:1] in (["face"], ["box"],
                                                                                        ["landmarks"])}
    assert set(rows) == {"face", "box", "landmarks"}
    assert " classes " in rows["face"] and " values " in rows["box"] and "x" not in rows["box"].split()[1]
    assert "SQNR (dB)" in stdout and "edge inputs (zeros, min, max)" in stdout


@pytest.fixture(scope="module")
def outlier_tflite(tmp_path_factory, plain_convert):
    """A regression .tflite whose weights int4 cannot hold: one huge weight per output channel on an input that
    is always zero sets the 16-level scale, and the weights that carry the signal round to zero."""
    from edgecompress.models import import_tf, import_tf_keras

    tf, k = import_tf(), import_tf_keras()
    folder = tmp_path_factory.mktemp("outlier")
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 0.1, size=(64, 8)).astype("float32")
    kernel[0] = 3.0
    inp = k.Input((64,), name="features")
    model = k.Model(inp, k.layers.Dense(8, name="pitch", kernel_initializer=k.initializers.Constant(kernel))(inp))
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec([1, 64], tf.float32))
    path = folder / "outlier.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert())
    x = rng.normal(size=(40, 64)).astype("float32")
    x[:, 0] = 0
    np.savez(folder / "features.npz", x=x)
    return path, folder / "features.npz"


def test_quantize_warns_per_output_like_convert(run_cli, outlier_tflite, tmp_path):
    model, features = outlier_tflite
    code, stdout, err = run_cli(["quantize", model, "-o", tmp_path / "int4.tflite", "--quantize", "int4",
                                 "--inputs", features, "--json"])
    assert code == 0
    result = json.loads(stdout)
    (pitch,) = result["validation"]["outputs"]
    assert pitch["sqnr_db"] < 12
    assert len(result["warnings"]) == 1 and "SQNR" in result["warnings"][0] and "warning: output" in err
    code, stdout, _ = run_cli(["quantize", model, "-o", tmp_path / "int8w.tflite", "--quantize", "int8-weights",
                               "--inputs", features, "--json"])
    assert code == 0 and json.loads(stdout)["warnings"] == []  # the same model holds in int8 weights


def test_evaluate_scores_the_output_the_labels_are_for(run_cli, face_model, tmp_path):
    """Three heads: integer labels go to the one class output by default; float labels need --model-output,
    and without it the error lists the outputs (it said '45408 values per sample for 15136 targets' before)."""
    model, crops = face_model
    x = np.load(crops)["crop"]
    np.savez(tmp_path / "faces.npz", x=x, y=(np.arange(len(x)) % 2).astype("int64"))
    code, out, err = run_cli(["evaluate", model, "--data", tmp_path / "faces.npz", "--json"])
    assert code == 0, err
    assert json.loads(out)["output"] == "face" and json.loads(out)["accuracy"] is not None
    np.savez(tmp_path / "boxes.npz", x=x, y=np.random.default_rng(0).uniform(0, 1, (len(x), 4)).astype("float32"))
    code, _, err = run_cli(["evaluate", model, "--data", tmp_path / "boxes.npz"])
    assert code == 2 and "face 2, box 4, landmarks 10" in err and "--model-output" in err
    code, out, _ = run_cli(["evaluate", model, "--data", tmp_path / "boxes.npz", "--model-output", "box", "--json"])
    assert code == 0 and json.loads(out)["output"] == "box" and json.loads(out)["mae"] > 0
    tflite = tmp_path / "face.tflite"
    assert run_cli(["convert", model, "-o", tflite, "--calibration", crops])[0] == 0
    code, out, _ = run_cli(["evaluate", tflite, "--data", tmp_path / "boxes.npz", "--model-output", "1", "--json"])
    assert code == 0 and json.loads(out)["mae"] > 0  # the .tflite keeps the Keras outputs' order


def test_a_recipe_scores_the_output_it_names(face_model, tmp_path):
    """eval_output in a recipe: the source and every variant are scored on that head (here the box head, by MAE)."""
    from edgecompress.pipeline.run import run_recipe

    model, crops = face_model
    x = np.load(crops)["crop"]
    np.savez(tmp_path / "boxes.npz", x=x, y=np.random.default_rng(0).uniform(0, 1, (len(x), 4)).astype("float32"))
    recipe = tmp_path / "boxes.toml"
    recipe.write_text(f'model = "{model}"\ndevices = []\n\n[data]\ntest = "boxes.npz"\ncalibration = "{crops}"\n'
                      'eval_output = "box"\n\n[benchmark]\nruns = 5\nmin_secs = 0.05\n\n[grid]\nquantize = ["dynamic"]\n')
    result = run_recipe(recipe, tmp_path / "run", jobs=1, progress=False)
    (variant,) = result.records
    assert variant.ok, variant.error
    assert result.baseline["output"] == "box" and result.baseline["mae"] > 0
    assert variant.mae == pytest.approx(result.baseline["mae"], rel=0.2) and variant.accuracy is None


def test_diagnose_names_the_layers_as_the_model_does(run_cli, tmp_path):
    """A Keras 3 model traces under suffixed names (functional_1/conv_1/...): diagnose says 'conv', as the model
    does, not 'conv_1' (issue 18)."""
    import keras

    inp = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Flatten(name="flat")(keras.layers.Conv2D(4, 3, name="conv")(inp))
    keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="head")(x)).save(tmp_path / "k3.keras")
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(0).random((40, 8, 8, 1)).astype("float32"))
    code, out, err = run_cli(["diagnose", tmp_path / "k3.keras", "--calibration", tmp_path / "cal.npz", "--json"])
    assert code == 0, err
    assert {layer["name"] for layer in json.loads(out)["layers"]} == {"conv", "flat", "head"}


def test_a_one_sigmoid_classifier_is_scored_by_its_decisions(run_cli, tmp_path):
    """0/1 labels for one sigmoid: accuracy, precision and recall at 0.5 (evaluate refused them: 'not class
    scores'), and validation judges the decision, not a top-1 of one value (issue 24)."""
    from edgecompress.models import import_tf_keras

    k = import_tf_keras()
    k.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64")
    inp = k.Input((6,), name="features")
    model = k.Model(inp, k.layers.Dense(1, activation="sigmoid")(k.layers.Dense(8, activation="relu")(inp)))
    model.compile(k.optimizers.Adam(0.01), "binary_crossentropy")
    model.fit(x, y, epochs=40, batch_size=16, verbose=0)
    model.save(tmp_path / "binary.keras")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    code, out, err = run_cli(["evaluate", tmp_path / "binary.keras", "--data", tmp_path / "data.npz", "--json"])
    result = json.loads(out)
    assert code == 0, err
    assert result["accuracy"] > 0.8 and 0 < result["precision"] <= 1 and 0 < result["recall"] <= 1
    code, out, _ = run_cli(["convert", tmp_path / "binary.keras", "-o", tmp_path / "int8.tflite", "--quantize", "int8",
                            "--calibration", tmp_path / "data.npz", "--json"])
    (decision,) = json.loads(out)["validation"]["outputs"]
    assert code == 0 and decision["kind"] == "binary" and decision["agreement"] > 0.9
    assert json.loads(out)["validation"]["top1_agreement"] is None  # no top-1 of a single value


def test_a_runtime_crash_during_validation_is_one_line_and_leaves_nothing(run_cli, face_model, tmp_path, monkeypatch):
    """Validation runs the export in a child process: a file that crashes the runtime (TF 2.21's full-int8
    stacked LSTMs aborted the process with 'free(): invalid next size', exit 134, nothing said) is one line naming
    the file and the signal, exit 1, and no file is left (issue 25). The crash is a real signal in the child."""
    from edgecompress.isolation import TEST_SIGNAL_ENV

    model, crops = face_model
    monkeypatch.setenv(TEST_SIGNAL_ENV, "doomed.tflite:SIGABRT")
    code, stdout, err = run_cli(["convert", model, "-o", tmp_path / "doomed.tflite", "--quantize", "int8",
                                 "--calibration", crops, "--json"])
    assert code == 1 and stdout == ""
    line = err.strip().splitlines()[-1]
    assert "doomed.tflite" in line and "(SIGABRT)" in line and "try another quantize mode" in line
    assert list(tmp_path.iterdir()) == []


def test_a_runtime_crash_during_diagnose_is_one_line(run_cli, face_model, monkeypatch):
    """diagnose ran TensorFlow's debugger in the tool's own process: the int8 file of stacked LSTMs aborted it
    (issue 25). It runs in a child now; the crash, a real signal at the point where the int8 file runs, is one
    line naming the stage, the signal and the modes that keep float activations."""
    from edgecompress.isolation import TEST_SIGNAL_ENV

    model, crops = face_model
    monkeypatch.setenv(TEST_SIGNAL_ENV, f"{Path(model).name}:SIGABRT")
    code, stdout, err = run_cli(["diagnose", model, "--calibration", crops, "--num-samples", "4", "--json"])
    assert code == 1 and stdout == "" and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "layer-by-layer int8 run" in line and "(SIGABRT)" in line and "--quantize dynamic" in line
