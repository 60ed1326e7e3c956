"""`edgecompress inspect` and the .tflite reader on real converted models, checked against the interpreter,
against figures worked out by hand for the example CNN, and against weights edited on purpose."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecompress.errors import UserError
from edgecompress.inspect import inspect_model
from edgecompress.runtime import load_interpreter
from edgecompress.tflite_reader import is_integer_model, read_model, unsupported_ops

# The example CNN (edgecompress.examples.build_digits_cnn): 8x8x1 -> conv1 3x3x16 -> conv2 3x3x32 -> maxpool 2
# -> flatten 512 -> dense 128 -> dense 10 -> softmax. MACs by hand, batch 1:
CONV1_MACS = 8 * 8 * 16 * (3 * 3 * 1)
CONV2_MACS = 8 * 8 * 32 * (3 * 3 * 16)
DENSE_MACS = 512 * 128 + 128 * 10
POOL_AND_SOFTMAX = 4 * 4 * 32 + 10  # one per output element (the documented floor for other ops)
BIASES = 16 + 32 + 128 + 10


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgecompress", "inspect", *args], capture_output=True, text=True, timeout=120
    )


def _weight(report, shape: list[int]):
    (match,) = [w for w in report.weights if w.shape == shape]
    return match


@pytest.mark.parametrize("which", ["float_tflite", "int8_tflite"])
def test_io_specs_match_the_interpreter(which, request):
    path = request.getfixturevalue(which)
    report = inspect_model(path)
    interpreter, _ = load_interpreter(path)
    for specs, details in (
        (report.inputs, interpreter.get_input_details()),
        (report.outputs, interpreter.get_output_details()),
    ):
        assert len(specs) == len(details)
        for spec, d in zip(specs, details):
            assert spec.name == d["name"]
            assert spec.shape == d["shape"].tolist()
            assert spec.dtype == np.dtype(d["dtype"]).name
            assert spec.scale == pytest.approx(d["quantization_parameters"]["scales"].tolist(), rel=1e-7)
            assert spec.zero_point == d["quantization_parameters"]["zero_points"].tolist()
    expected = "int8" if which == "int8_tflite" else "float32"
    assert [s.dtype for s in report.inputs + report.outputs] == [expected, expected]
    if which == "int8_tflite":
        assert report.inputs[0].scale[0] > 0 and report.outputs[0].scale[0] > 0


@pytest.mark.parametrize("which", ["float_tflite", "int8_tflite"])
def test_operators_macs_and_parameters_of_the_example_cnn(which, request, digits_model):
    path = request.getfixturevalue(which)
    report = inspect_model(path)
    ops = {o.name: o for o in report.operators}
    assert {n: o.count for n, o in ops.items()} == {
        "CONV_2D": 2, "MAX_POOL_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 2, "SOFTMAX": 1
    }
    # The reader's op list is the interpreter's, in order (without XNNPACK, which adds a DELEGATE node).
    interpreter, _ = load_interpreter(path, use_xnnpack=False)
    assert [op.name for op in read_model(path).operators] == [d["op_name"] for d in interpreter._get_ops_details()]
    assert all(o.kind == "builtin" and o.versions for o in report.operators)
    assert report.unsupported_ops == [] and report.warnings == []

    assert ops["CONV_2D"].macs == CONV1_MACS + CONV2_MACS
    assert ops["FULLY_CONNECTED"].macs == DENSE_MACS
    assert ops["RESHAPE"].macs == 0
    assert report.macs_total == CONV1_MACS + CONV2_MACS + DENSE_MACS + POOL_AND_SOFTMAX

    # TFLite stores every Keras weight and bias (transposed, maybe quantized), plus an int32 reshape shape
    # that is not a parameter.
    assert report.parameter_count == digits_model.count_params()
    size = Path(path).stat().st_size
    assert report.size_bytes == size and report.weight_bytes + report.other_bytes == size
    assert 0 < report.gzip_bytes < size
    kernels = report.parameter_count - BIASES
    if which == "float_tflite":
        assert report.weight_bytes == 4 * report.parameter_count
        assert not report.integer_model
    else:  # int8 kernels, int32 biases
        assert report.weight_bytes == kernels + 4 * BIASES
        assert report.integer_model
        assert {w.quantized for w in report.weights} == {"per-channel"}
    by_dtype = {d.dtype: d for d in report.dtypes}
    assert by_dtype["int32"].constant_bytes >= 8  # the reshape shape at least
    assert sum(d.constant_bytes for d in report.dtypes) >= report.weight_bytes


@pytest.fixture(scope="module")
def edited_models(digits_model, digits, plain_convert, tmp_path_factory):
    """The example model with its 512->128 kernel 80% pruned (smallest magnitudes) and its 128->10 kernel
    clustered to 16 values, as float and int8 .tflite files."""
    from edgecompress.models import import_tf_keras

    keras = import_tf_keras()
    clone = keras.models.clone_model(digits_model)
    clone.set_weights(digits_model.get_weights())
    dense, probs = clone.get_layer("dense"), clone.get_layer("probs")

    kernel, bias = dense.get_weights()
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.8)] = 0.0
    dense.set_weights([kernel, bias])

    kernel, bias = probs.get_weights()
    centroids = np.linspace(kernel.min(), kernel.max(), 16, dtype=np.float32)
    kernel = centroids[np.argmin(np.abs(kernel[..., None] - centroids), axis=-1)]
    probs.set_weights([kernel, bias])

    folder = tmp_path_factory.mktemp("edited")
    paths = {}
    for name, int8_from in (("float", None), ("int8", digits.train.x[:100])):
        paths[name] = folder / f"edited_{name}.tflite"
        paths[name].write_bytes(plain_convert(clone, int8_from=int8_from))
    return {
        "paths": paths,
        "dense_sparsity": float(np.mean(dense.get_weights()[0] == 0)),
        "probs_distinct": int(np.unique(probs.get_weights()[0]).size),
    }


def test_sparsity_shows_pruning(edited_models, float_tflite):
    assert edited_models["dense_sparsity"] == pytest.approx(0.8, abs=0.001)
    before = _weight(inspect_model(float_tflite), [128, 512])
    assert before.sparsity < 0.01
    pruned = _weight(inspect_model(edited_models["paths"]["float"]), [128, 512])
    assert pruned.sparsity == pytest.approx(edited_models["dense_sparsity"], abs=1e-9)
    # After int8 quantization a real zero is stored as the zero point; the smallest kept weights may round
    # to it too, so the share can only grow, and only a little.
    quantized = _weight(inspect_model(edited_models["paths"]["int8"]), [128, 512])
    assert quantized.dtype == "int8"
    assert edited_models["dense_sparsity"] <= quantized.sparsity < 0.85


def test_distinct_values_show_clustering(edited_models, float_tflite):
    assert edited_models["probs_distinct"] == 16
    assert _weight(inspect_model(float_tflite), [10, 128]).distinct_values > 1000
    clustered = _weight(inspect_model(edited_models["paths"]["float"]), [10, 128])
    assert clustered.distinct_values == 16
    # The CLI shows the same figures.
    result = _cli(str(edited_models["paths"]["float"]), "--json")
    assert result.returncode == 0, result.stderr
    weights = {tuple(w["shape"]): w for w in json.loads(result.stdout)["weights"]}
    assert weights[(10, 128)]["distinct_values"] == 16
    assert weights[(128, 512)]["sparsity"] == pytest.approx(0.8, abs=0.001)


def test_dynamic_range_model_is_not_integer(digits_model, tmp_path):
    """Dynamic-range quantization stores int8 weights but computes in float: devices must treat it as float."""
    import tensorflow as tf

    fn = tf.function(lambda x: digits_model(x, training=False))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function(tf.TensorSpec([1, 8, 8, 1], tf.float32))], digits_model
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    path = tmp_path / "dynamic.tflite"
    path.write_bytes(converter.convert())
    model = read_model(path)
    assert {t.dtype for t in model.main.tensors if t.is_constant and t.shape == (128, 512)} == {"int8"}
    assert not is_integer_model(model)


@pytest.fixture(scope="module")
def flex_and_custom(tmp_path_factory):
    """Two tiny graphs that the builtin op set cannot express: matrix inverse through SELECT_TF_OPS (Flex),
    and erfinv as an unresolved custom op."""
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("flex")
    spec = tf.TensorSpec([3, 3], tf.float32)
    paths = {}
    for name, fn in (("flex", tf.linalg.inv), ("custom", tf.math.erfinv)):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([tf.function(fn).get_concrete_function(spec)])
        if name == "flex":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        else:
            converter.allow_custom_ops = True
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(converter.convert())
    return paths


def test_flex_and_custom_ops_are_flagged(flex_and_custom):
    flex = inspect_model(flex_and_custom["flex"])
    assert flex.unsupported_ops == ["FlexMatrixInverse"]
    assert [(o.name, o.kind) for o in flex.operators] == [("FlexMatrixInverse", "flex")]
    assert any("SELECT_TF_OPS" in w for w in flex.warnings)
    custom = read_model(flex_and_custom["custom"])
    assert unsupported_ops(custom) == ["Erfinv"] and custom.operators[0].kind == "custom"
    # The flag is right: the stock runtime refuses the Flex model.
    with pytest.raises(UserError, match="FlexMatrixInverse|Select TensorFlow"):
        load_interpreter(flex_and_custom["flex"])
    result = _cli(str(flex_and_custom["flex"]))
    assert result.returncode == 0, result.stderr
    assert "FlexMatrixInverse" in result.stdout and "SELECT_TF_OPS" in result.stdout


def test_cli_table_and_json(int8_tflite):
    table = _cli(str(int8_tflite))
    assert table.returncode == 0, table.stderr
    for heading in ("Inputs", "Outputs", "Operators", "Tensors by dtype", "Weight tensors", "estimated MACs"):
        assert heading in table.stdout
    as_json = _cli(str(int8_tflite), "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)  # stdout holds only the JSON
    report = inspect_model(int8_tflite)
    assert data["macs_total"] == report.macs_total and data["parameter_count"] == report.parameter_count
    assert data["inputs"][0]["zero_point"] == report.inputs[0].zero_point
    assert data["integer_model"] is True and data["unsupported_ops"] == []


def _bad_files(folder: Path, good: bytes) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    contents = {
        "empty": b"",
        "random": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        # Random bytes behind a valid identifier get past the header check and into the parser.
        "random_with_header": b"\x1c\x00\x00\x00TFL3" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated_head": good[:200],
        "truncated_half": good[: len(good) // 2],
        "truncated_last_byte": good[:-1],
    }
    paths = {"missing": folder / "missing.tflite", "folder": folder}
    for name, data in contents.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(data)
    return paths


def test_bad_files_give_one_line_and_exit_2(float_tflite, tmp_path):
    for name, path in _bad_files(tmp_path, float_tflite.read_bytes()).items():
        result = _cli(str(path))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (name, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
        assert str(path) in lines[0] and "Traceback" not in result.stderr, name
        assert ":" in lines[0][len("error: "):], name  # the message says what to do after the colon
        assert result.stdout == "", name


def test_truncation_anywhere_is_a_user_error(int8_tflite):
    """Every cut of a real model is refused cleanly by the Python API too (no struct/index errors escape)."""
    from edgecompress.tflite_reader import parse_model

    good = int8_tflite.read_bytes()
    cuts = sorted(set(np.random.default_rng(1).integers(8, len(good), 150).tolist()) | {8, 9, 16, 64})
    for cut in cuts:
        with pytest.raises(UserError, match="damaged or truncated|missing|does not exist|no subgraph"):
            parse_model(good[:cut], f"cut{cut}.tflite")


def test_shapes_resolved_at_run_time_count_their_macs(tmp_path, run_cli):
    """A free batch reshaped into frames: the file stores placeholder shapes (a 40x1 map where the runtime makes
    40x100), so MACs read from it alone came out 86x low; the runtime's shapes count the convolution right
    (issue 18: a real audio classifier read 26.5M MACs for about 404M)."""
    import tensorflow as tf

    from edgecompress.models import import_tf_keras

    k = import_tf_keras()
    conv, dense = k.layers.Conv2D(16, 3, activation="relu"), k.layers.Dense(10)
    conv.build((None, 40, 100, 1))
    dense.build((None, 16))

    @tf.function(input_signature=[tf.TensorSpec([None, 4000], tf.float32)])
    def frames(audio):
        x = tf.reshape(audio, tf.stack([tf.shape(audio)[0], 40, -1, 1]))
        return dense(tf.reduce_mean(conv(x), axis=[1, 2]))

    owner = tf.Module()
    owner.layers = [conv, dense]
    path = tmp_path / "frames.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([frames.get_concrete_function()], owner).convert())
    code, out, _ = run_cli(["inspect", path, "--json"])
    report = json.loads(out)
    conv_macs = next(o["macs"] for o in report["operators"] if o["name"] == "CONV_2D")
    assert code == 0 and conv_macs == 38 * 98 * 16 * 9 and report["resolved_tensors"] >= 2
    code, out, _ = run_cli(["inspect", path])
    assert "tensors sized by the runtime at batch 1" in out


def test_block_sparse_weights_are_read_as_stored(tmp_path, run_cli):
    """TFLite's sparse format (sparsity parameters + DENSIFY): inspect read the stored values as the whole tensor
    (sparsity 0 for a tensor stored at 30% of its size) and charged DENSIFY of a constant per inference."""
    import tensorflow as tf

    from edgecompress.models import import_tf_keras

    k = import_tf_keras()
    k.utils.set_random_seed(0)
    inp = k.Input((64,))
    dense, head = k.layers.Dense(256, activation="relu"), k.layers.Dense(10)
    model = k.Model(inp, head(dense(inp)))
    kernel, bias = dense.get_weights()
    keep = np.random.default_rng(0).random((16, 256)) < 0.3  # 30% of the 1x4 blocks along the input axis
    dense.set_weights([kernel * np.repeat(keep, 4, axis=0), bias])
    kernel, bias = head.get_weights()  # element-wise sparse: stored as such, densified by a DENSIFY op
    head.set_weights([kernel * (np.random.default_rng(1).random(kernel.shape) < 0.2), bias])
    fn = tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec([1, 64], tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    path = tmp_path / "sparse.tflite"
    path.write_bytes(converter.convert())
    code, out, _ = run_cli(["inspect", path, "--json"])
    report = json.loads(out)
    sparse = next(w for w in report["weights"] if w["shape"] == [256, 64])
    assert code == 0 and sparse["storage"] == "block-sparse 1x4"
    assert sparse["dense_bytes"] == 256 * 64 * 4 and sparse["stored_bytes"] < 0.4 * sparse["dense_bytes"]
    assert sparse["sparsity"] == pytest.approx(1 - keep.mean(), abs=0.01)
    assert next(w for w in report["weights"] if w["shape"] == [10, 256])["storage"] == "sparse"
    assert next(o["macs"] for o in report["operators"] if o["name"] == "DENSIFY") == 0  # once, as it loads
