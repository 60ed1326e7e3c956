"""Every bad input to `convert`: exit 2, one line naming the problem and the fix, no traceback,
no output file left behind, and an existing output never touched."""
from __future__ import annotations

import numpy as np
import pytest

from edgecompress.models import import_tf_keras
from helpers import one_line_error


def bad(run_cli, args, *words) -> str:
    return one_line_error(run_cli(args), *words)


def no_leftovers(folder) -> None:
    assert [p.name for p in folder.iterdir() if p.suffix == ".tflite"] == []


@pytest.fixture()
def out_dir(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def convert(model, out, *extra) -> list[str]:
    return ["convert", str(model), "-o", str(out), *extra]


def test_missing_model(tmp_path, out_dir, run_cli):
    bad(run_cli, convert(tmp_path / "nope.keras", out_dir / "m.tflite"), "does not exist")
    no_leftovers(out_dir)


@pytest.mark.parametrize("name, content", [("notes.txt", b"hello"), ("broken.keras", b"PK\x03\x04 not a zip"),
                                           ("weights.h5", b"")])
def test_not_a_keras_model(tmp_path, out_dir, run_cli, name, content):
    (tmp_path / name).write_bytes(content)
    bad(run_cli, convert(tmp_path / name, out_dir / "m.tflite"), name)
    no_leftovers(out_dir)


def test_int8_without_calibration(digits_model_path, out_dir, run_cli):
    for mode in ("int8", "int16x8"):
        bad(run_cli, convert(digits_model_path, out_dir / "m.tflite", "--quantize", mode), "--calibration")
    no_leftovers(out_dir)


@pytest.mark.parametrize("extra", [["--io-type", "int8"], ["--quantize", "dynamic", "--io-type", "uint8"],
                                   ["--quantize", "int16x8", "--io-type", "int8"]])
def test_io_type_needs_full_integer(digits_model_path, calib_npz, out_dir, run_cli, extra):
    bad(run_cli, convert(digits_model_path, out_dir / "m.tflite", "--calibration", str(calib_npz), *extra),
        "--io-type")
    no_leftovers(out_dir)


def _calibration(tmp_path, name, x):
    path = tmp_path / name
    np.savez(path, x=x)
    return path


@pytest.mark.parametrize("case, words", [
    ("shape", ["'image'", "(8, 8, 1)", "(64,)"]),
    ("nan", ["'image'", "NaN"]),
    ("empty", ["'image'", "no samples"]),
    ("dtype", ["'image'", "float32", "int64"]),
    ("key", ["'image'", "found keys: pixels"]),
])
def test_bad_calibration_data(digits_model_path, digits, tmp_path, out_dir, run_cli, case, words):
    x = digits.train.x[:50].copy()
    if case == "shape":
        path = _calibration(tmp_path, "c.npz", x.reshape(50, 64))
    elif case == "nan":
        x[5, 0, 0, 0] = np.nan
        path = _calibration(tmp_path, "c.npz", x)
    elif case == "empty":
        path = _calibration(tmp_path, "c.npz", x[:0])
    elif case == "dtype":
        path = _calibration(tmp_path, "c.npz", (x * 16).astype(np.int64))
    else:
        path = tmp_path / "c.npz"
        np.savez(path, pixels=x)
    bad(run_cli, convert(digits_model_path, out_dir / "m.tflite", "--quantize", "int8", "--calibration", str(path)),
        *words)
    no_leftovers(out_dir)


def test_existing_output_is_kept_without_force_and_replaced_with_it(digits_model_path, out_dir, run_cli):
    target = out_dir / "m.tflite"
    target.write_bytes(b"precious")
    bad(run_cli, convert(digits_model_path, target), "already exists", "--force")
    assert target.read_bytes() == b"precious"
    code, _, _ = run_cli(convert(digits_model_path, target, "--force"))
    assert code == 0 and target.read_bytes()[4:8] == b"TFL3"


def test_failure_never_damages_an_existing_output(digits_model_path, digits, tmp_path, out_dir, run_cli):
    target = out_dir / "m.tflite"
    target.write_bytes(b"precious")
    x = digits.train.x[:20].copy()
    x[3] = np.inf
    path = _calibration(tmp_path, "inf.npz", x)
    bad(run_cli, convert(digits_model_path, target, "--quantize", "int8", "--calibration", str(path), "--force"),
        "NaN or infinite")
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in out_dir.iterdir()) == ["m.tflite"]  # no temporary file left either


def test_missing_output_folder(digits_model_path, tmp_path, run_cli):
    bad(run_cli, convert(digits_model_path, tmp_path / "no" / "m.tflite"), "does not exist", "create it")


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory):
    keras = import_tf_keras()
    inp = keras.Input((4,), name="x")
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Lambda(lambda t: t * 2.0, name="double")(inp)))
    path = tmp_path_factory.mktemp("lambda") / "lambda.keras"
    model.save(path)
    return path


def test_lambda_layer_refused_in_safe_mode(lambda_model, out_dir, run_cli):
    bad(run_cli, convert(lambda_model, out_dir / "m.tflite"), "Lambda", "double", "--unsafe")
    no_leftovers(out_dir)


def test_lambda_layer_converts_with_unsafe(lambda_model, out_dir, run_cli):
    code, _, err = run_cli(convert(lambda_model, out_dir / "m.tflite", "--unsafe"))
    assert code == 0, err
    assert (out_dir / "m.tflite").read_bytes()[4:8] == b"TFL3"


@pytest.fixture()
def inverse_model(tmp_path):
    """A SavedModel whose only op (MatrixInverse) has no TFLite built-in kernel."""
    from edgecompress.models import import_tf

    tf = import_tf()

    class Inverse(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2, 2], tf.float32, name="m")])
        def __call__(self, m):
            return {"inv": tf.linalg.inv(m + 2 * tf.eye(2))}

    module = Inverse()
    tf.saved_model.save(module, str(tmp_path / "inv"), signatures=module.__call__)
    return tmp_path / "inv"


def test_flex_op_is_reported_with_the_option(inverse_model, out_dir, run_cli):
    bad(run_cli, convert(inverse_model, out_dir / "m.tflite"), "MatrixInverse", "--allow-flex")
    no_leftovers(out_dir)


def test_bad_num_samples(digits_model_path, calib_npz, out_dir, run_cli):
    code, _, err = run_cli(convert(digits_model_path, out_dir / "m.tflite", "--quantize", "int8", "--calibration",
                               str(calib_npz), "--num-samples", "0"))
    assert code == 2 and "Traceback" not in err and "--num-samples" in err
    no_leftovers(out_dir)


@pytest.fixture()
def unlabelled_npz(digits, tmp_path):
    path = tmp_path / "unlabelled.npz"
    np.savez(path, x=digits.val.x[:20])
    return path


@pytest.mark.parametrize("extra, words", [
    (["--max-drop", "1"], ("--max-drop needs labelled data", "--eval-data")),
    (["--eval-data", "EVAL"], ("--max-drop",)),
    (["--max-drop", "1", "--eval-data", "EVAL", "--quantize", "dynamic"], ("--max-drop", "int8", "dynamic")),
    (["--max-drop", "1", "--eval-data", "EVAL", "--quantize", "int8", "--io-type", "int8"], ("float32",)),
    (["--max-drop", "-1", "--eval-data", "EVAL", "--quantize", "int8"], ("--max-drop must be", ">= 0")),
    (["--max-drop", "1", "--eval-data", "EVAL", "--quantize", "int8", "--allow-flex"], ("--allow-flex",)),
])
def test_max_drop_options(digits_model_path, calib_npz, test_npz, out_dir, run_cli, extra, words):
    extra = [str(test_npz) if e == "EVAL" else e for e in extra]
    args = convert(digits_model_path, out_dir / "m.tflite", "--calibration", str(calib_npz), *extra)
    if "--quantize" not in extra:
        args += ["--quantize", "int8"]
    bad(run_cli, args, *words)
    no_leftovers(out_dir)


def test_max_drop_needs_labels(digits_model_path, calib_npz, unlabelled_npz, out_dir, run_cli):
    bad(run_cli, convert(digits_model_path, out_dir / "m.tflite", "--quantize", "int8", "--calibration",
                         str(calib_npz), "--eval-data", str(unlabelled_npz), "--max-drop", "1"), "no labels", "'y'")
    no_leftovers(out_dir)


def test_diagnose_needs_labels_and_calibration(digits_model_path, calib_npz, unlabelled_npz, run_cli):
    bad(run_cli, ["diagnose", str(digits_model_path), "--calibration", str(calib_npz), "--data",
                  str(unlabelled_npz)], "no labels", "'y'")
    bad(run_cli, ["diagnose", str(digits_model_path)], "--calibration")


def test_diagnose_of_a_model_int8_cannot_take(inverse_model, tmp_path, run_cli):
    """An op with no TFLite kernel: diagnose says so in one line (and does not suggest a flag it lacks)."""
    np.savez(tmp_path / "m.npz", m=np.random.default_rng(0).random((20, 2, 2), dtype=np.float32))
    line = bad(run_cli, ["diagnose", str(inverse_model), "--calibration", str(tmp_path / "m.npz")], "MatrixInverse")
    assert "--allow-flex" not in line


def test_an_op_the_int16x8_quantizer_refuses_is_one_line(calib_npz, tmp_path, out_dir, run_cli):
    """TFLite's 16x8 quantizer refuses HARD_SWISH (MobileNetV3's activation): bad input, not an internal error."""
    from edgecompress.models import import_tf

    import_tf()
    import keras

    layers = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="hard_silu"),
                              layers.Flatten(), layers.Dense(10, activation="softmax")])
    model.save(tmp_path / "hswish.keras")
    bad(run_cli, convert(tmp_path / "hswish.keras", out_dir / "m.tflite", "--quantize", "int16x8",
                         "--calibration", str(calib_npz)), "HARD_SWISH", "--quantize int8")
    no_leftovers(out_dir)


def test_a_fully_convolutional_model_exports_at_the_shapes_given(run_cli, tmp_path):
    """Free spatial dimensions (a detector stage run at several scales) could not be converted at all: 're-save
    the model with a fixed input shape', with no way to give it (issue 25). --input-shape fixes them per export."""
    from edgecompress.models import import_tf_keras
    from edgecompress.runner import TFLiteRunner

    k = import_tf_keras()
    inp = k.Input((None, None, 3), name="image")
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    k.Model(inp, k.layers.Conv2D(2, 1, activation="softmax", name="face_map")(x)).save(tmp_path / "pnet.keras")
    code, _, err = run_cli(["convert", tmp_path / "pnet.keras", "-o", tmp_path / "any.tflite"])
    assert code == 2 and "--input-shape" in err and "image=1x" in err
    for height, width in ((12, 16), (24, 32)):
        out = tmp_path / f"pnet_{height}.tflite"
        code, _, err = run_cli(["convert", tmp_path / "pnet.keras", "-o", out, "--input-shape",
                                f"image=1x{height}x{width}x3"])
        assert code == 0, err
        runner = TFLiteRunner(out)
        assert runner.inputs[0].shape == (1, height, width, 3) and runner.outputs[0].shape == (1, height, width, 2)
    code, _, err = run_cli(["convert", tmp_path / "pnet.keras", "-o", tmp_path / "bad.tflite", "--input-shape",
                            "1x12x16x4"])
    assert code == 2 and "does not fit input image" in err
