"""evaluate on .tflite and Keras models, classification and regression, and bad model files."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgecompress.evaluate import evaluate
from edgecompress.examples import accuracy


def test_tflite_and_keras_agree_with_keras_itself(digits_model, digits, digits_model_path, float_tflite,
                                                 int8_tflite, test_npz):
    reference = accuracy(digits_model, digits.test.x, digits.test.y)
    keras = evaluate(digits_model_path, test_npz)
    assert keras.samples == 300 and keras.task == "classification"
    assert keras.accuracy == pytest.approx(reference)
    assert evaluate(float_tflite, test_npz).accuracy == pytest.approx(reference, abs=1 / 300)
    quantized = evaluate(int8_tflite, test_npz)  # int8 I/O: the data is quantized with the input's scale
    assert quantized.runtime.startswith("ai-edge-litert")
    assert abs(quantized.accuracy - reference) <= 0.02


def test_cli_json(float_tflite, test_npz, run_cli):
    code, out, _ = run_cli(["evaluate", str(float_tflite), "--data", str(test_npz), "--json"])
    data = json.loads(out)
    assert code == 0 and data["samples"] == 300 and 0.95 < data["accuracy"] <= 1.0 and "mae" not in data


def test_regression_mae(tmp_path):
    """A linear model with known weights: the MAE is computable by hand."""
    from edgecompress.converters import convert_model
    from edgecompress.models import import_tf_keras

    keras = import_tf_keras()
    inp = keras.Input((3,), name="features")
    dense = keras.layers.Dense(1, name="target")
    model = keras.Model(inp, dense(inp))
    dense.set_weights([np.array([[1.0], [2.0], [3.0]], np.float32), np.array([0.5], np.float32)])
    model.save(tmp_path / "linear.keras")
    x = np.random.default_rng(0).random((40, 3), dtype=np.float32)
    y = (x @ np.array([1.0, 2.0, 3.0]) + 0.5 + 0.25).astype(np.float32)  # every target off by 0.25
    np.savez(tmp_path / "reg.npz", x=x, y=y)
    convert_model(tmp_path / "linear.keras", tmp_path / "linear.tflite")
    for path in (tmp_path / "linear.tflite", tmp_path / "linear.keras"):
        result = evaluate(path, tmp_path / "reg.npz")
        assert result.task == "regression" and result.samples == 40 and result.accuracy is None
        assert result.mae == pytest.approx(0.25, abs=1e-4)


def test_zero_one_labels_for_many_scores_are_judged_by_f1_and_one_hot_labels_by_top1(tmp_path, run_cli):
    """A note transcriber or tagger (a sigmoid per value) with 0/1 labels: MAE against 0/1 targets hides a
    model that misses every rare positive, F1 of the decisions at 0.5 does not. One-hot labels mean classes."""
    from edgecompress.models import import_tf_keras

    keras = import_tf_keras()
    inp = keras.Input((4,), name="features")
    tags = keras.layers.Dense(6, activation="sigmoid", name="tags")
    tags.build((None, 4))
    tags.set_weights([np.eye(4, 6, dtype=np.float32) * 8, np.full(6, -4, np.float32)])
    keras.Model(inp, tags(inp)).save(tmp_path / "tags.keras")
    x = np.random.default_rng(0).random((50, 4), dtype=np.float32)
    decided = (x @ np.eye(4, 6) * 8 - 4) >= 0
    truth = decided.copy()
    truth[:10, 5] = True  # ten positives the model never finds
    np.savez(tmp_path / "tags.npz", x=x, y=truth.astype(np.int64))
    result = evaluate(tmp_path / "tags.keras", tmp_path / "tags.npz")
    hits = np.sum(decided & truth)
    precision, recall = hits / decided.sum(), hits / truth.sum()
    assert result.task == "multilabel" and result.metric == "f1"
    assert result.f1 == pytest.approx(2 * precision * recall / (precision + recall)) and result.precision == 1.0
    code, out, _ = run_cli(["evaluate", str(tmp_path / "tags.keras"), "--data", str(tmp_path / "tags.npz"), "--json"])
    assert code == 0 and json.loads(out)["f1"] == pytest.approx(result.f1)
    code, out, _ = run_cli(["evaluate", str(tmp_path / "tags.keras"), "--data", str(tmp_path / "tags.npz")])
    assert code == 0 and f"{result.f1:.3f}" in out and "precision" in out

    softmax = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    softmax.save(tmp_path / "classes.keras")
    classes = np.argmax(softmax.predict(x, verbose=0), axis=1)
    np.savez(tmp_path / "onehot.npz", x=x, y=np.eye(3, dtype=np.int64)[classes])
    one_hot = evaluate(tmp_path / "classes.keras", tmp_path / "onehot.npz")
    assert one_hot.task == "classification" and one_hot.accuracy == 1.0


def test_tflite_path_does_not_import_tensorflow(float_tflite, test_npz):
    code = (
        "import sys\n"
        "from edgecompress.evaluate import evaluate\n"
        f"r = evaluate({str(float_tflite)!r}, {str(test_npz)!r})\n"
        "assert r.samples == 300, r\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("kind, words", [("empty", "is empty"), ("random", "not a TFLite"),
                                         ("truncated", "cannot load"), ("missing", "does not exist")])
def test_bad_tflite_files(float_tflite, test_npz, tmp_path, run_cli, kind, words):
    path = tmp_path / "bad.tflite"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "truncated":
        path.write_bytes(float_tflite.read_bytes()[:4000])
    code, out, err = run_cli(["evaluate", str(path), "--data", str(test_npz)])
    assert code == 2 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and words in err


def test_data_without_labels_or_with_the_wrong_shape(float_tflite, digits, tmp_path, run_cli):
    np.savez(tmp_path / "nolabels.npz", x=digits.test.x)
    code, _, err = run_cli(["evaluate", str(float_tflite), "--data", str(tmp_path / "nolabels.npz")])
    assert code == 2 and "no labels" in err and "'y'" in err
    np.savez(tmp_path / "flat.npz", x=digits.test.x.reshape(-1, 64), y=digits.test.y)
    code, _, err = run_cli(["evaluate", str(float_tflite), "--data", str(tmp_path / "flat.npz")])
    assert code == 2 and "(8, 8, 1)" in err and "Traceback" not in err


def test_an_integer_input_model_takes_integer_samples_as_they_are(int8_tflite, test_npz, tmp_path, run_cli):
    """One rule for input types: int8 samples for an int8 input are its stored values, float samples are real
    values quantized with its scale (evaluate refused int8 samples: 'input expects float32 samples', while
    inspect said the input is int8 and benchmark --inputs took the same array; issue 24)."""
    from edgecompress.runner import TFLiteRunner

    port = TFLiteRunner(int8_tflite).in_ports[0]
    data = np.load(test_npz)
    stored = np.clip(np.round(data["x"] / port.scale) + port.zero_point, -128, 127).astype(np.int8)
    np.savez(tmp_path / "int8.npz", x=stored, y=data["y"])
    code, out, err = run_cli(["evaluate", int8_tflite, "--data", tmp_path / "int8.npz", "--json"])
    assert code == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(evaluate(int8_tflite, test_npz).accuracy, abs=1 / 300)


def test_a_file_that_crashes_the_runtime_is_one_line(int8_tflite, test_npz, run_cli, monkeypatch, tmp_path):
    """evaluate runs the .tflite in a child process: a runtime crash is one line, exit 1 (issue 25)."""
    import shutil

    from edgecompress.isolation import TEST_SIGNAL_ENV

    doomed = shutil.copy(int8_tflite, tmp_path / "doomed.tflite")
    monkeypatch.setenv(TEST_SIGNAL_ENV, "doomed.tflite:SIGSEGV")
    code, out, err = run_cli(["evaluate", doomed, "--data", test_npz])
    assert code == 1 and out == "" and "(SIGSEGV)" in err and "doomed.tflite" in err and "Traceback" not in err


def test_a_reset_restarts_resource_variables_as_a_fresh_load(run_cli, tmp_path):
    """reset_all_variables() leaves resource variables (VAR_HANDLE, a streaming model's state) untouched: a
    state initialised to 5 still held the last input after a 'reset', so evaluate's reset-per-sample ran the
    stream in order (seen on pymicro-wakeword's okay_nabu: --stream and reset gave the same scores). Each
    sample now sees the state a fresh load gives."""
    import tensorflow as tf

    from edgecompress.runner import TFLiteRunner

    class Echo(tf.Module):  # out = x + the previous input; the state starts at 5
        def __init__(self) -> None:
            self.previous = tf.Variable(tf.fill([1, 4], 5.0))

        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
        def __call__(self, x):
            out = x + self.previous
            self.previous.assign(x)
            return out

    echo = Echo()
    path = tmp_path / "echo.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([echo.__call__.get_concrete_function()], echo)
                     .convert())
    runner = TFLiteRunner(path)
    name = runner.inputs[0].name
    twos, zeros = np.full((1, 4), 2.0, np.float32), np.zeros((1, 4), np.float32)
    assert runner.state_variables >= 1
    assert np.array_equal(runner.run({name: twos})[0], np.full((1, 4), 7.0))
    assert np.array_equal(runner.run({name: zeros})[0], twos)  # carried over
    assert np.array_equal(runner.run({name: zeros}, reset=True)[0], np.full((1, 4), 5.0))  # as a fresh load
    x = np.stack([twos[0], zeros[0], zeros[0]])
    np.savez(tmp_path / "d.npz", x=x, y=np.full((3, 4), 5.0, np.float32) + x)  # what each gives from a fresh start
    code, out, err = run_cli(["evaluate", path, "--data", tmp_path / "d.npz", "--json"])
    assert code == 0, err
    assert json.loads(out)["mae"] == 0.0
    code, out, _ = run_cli(["evaluate", path, "--data", tmp_path / "d.npz", "--stream", "--json"])
    assert json.loads(out)["mae"] > 0


def test_a_recipe_refuses_labels_it_cannot_rank_by(tmp_path):
    """Recipes rank variants by accuracy or MAE: held-out labels judged by F1 are refused in one line at the
    baseline, not left as variants nothing can rank."""
    from edgecompress.errors import UserError
    from edgecompress.models import import_tf_keras
    from edgecompress.pipeline.stages import BaselineTask, baseline

    keras = import_tf_keras()
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="sigmoid")]).save(tmp_path / "tags.keras")
    np.savez(tmp_path / "tags.npz", x=np.random.default_rng(0).random((20, 4), dtype=np.float32),
             y=np.random.default_rng(1).integers(0, 2, (20, 6)))
    task = BaselineTask(tmp_path / "tags.keras", tmp_path / "tags.npz", "k", tmp_path / "baseline.json")
    with pytest.raises(UserError, match="judged by f1, and recipes rank variants by accuracy or MAE"):
        baseline(task, lambda _: None)
    assert not (tmp_path / "baseline.json").exists()
