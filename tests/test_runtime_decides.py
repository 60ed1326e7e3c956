"""The runtime decides what it can run, and free dimensions are sized by the user (issue 25).

benchmark and check refused a model with MediaPipe's custom op Convolution2DTransposeBias ("operators the
runtime lacks") from a hard-coded list, while ai-edge-litert's XNNPACK delegate runs it; a file with free
spatial dimensions could only be benchmarked at 1x1. The models are built here: a transposed convolution
rewritten as that custom op (MediaPipe's form: input, weights, bias; padding and strides as raw options), and
a fully convolutional network with free height and width.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

PI = "raspberry-pi-4"
CUSTOM = "Convolution2DTransposeBias"


@pytest.fixture(scope="module")
def deconv_pair(session_dir) -> tuple[Path, Path]:
    """(the custom-op file, the same computation with the builtin TRANSPOSE_CONV)."""
    import tensorflow as tf

    from edgecompress.converters.tflite_edit import flatbuffers, op_code, read, write

    rng = np.random.default_rng(0)
    kernel = tf.constant(rng.normal(size=(2, 2, 1, 4)).astype(np.float32))
    bias = tf.constant(rng.normal(size=(1,)).astype(np.float32))
    fn = tf.function(lambda x: tf.nn.sigmoid(
        tf.nn.conv2d_transpose(x, kernel, [1, 16, 16, 1], strides=2, padding="SAME") + bias)
    ).get_concrete_function(tf.TensorSpec([1, 8, 8, 4], tf.float32))
    builtin = tf.lite.TFLiteConverter.from_concrete_functions([fn]).convert()
    model, schema = read(builtin), flatbuffers().schema_fb
    (op,) = [o for o in model.subgraphs[0].operators if op_code(model, o) == schema.BuiltinOperator.TRANSPOSE_CONV]
    entry = schema.OperatorCodeT()
    entry.builtinCode = entry.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    entry.customCode, entry.version = CUSTOM.encode(), 1
    model.operatorCodes.append(entry)
    op.opcodeIndex = len(model.operatorCodes) - 1
    op.inputs = [op.inputs[2], op.inputs[1], op.inputs[3]]  # TRANSPOSE_CONV's output shape goes
    op.builtinOptionsType, op.builtinOptions = 0, None
    op.customOptions = list(struct.pack("<iii", 1, 2, 2))  # TfLiteTransposeConvParams: SAME, stride 2x2
    custom, reference = session_dir / "deconv_custom.tflite", session_dir / "deconv_builtin.tflite"
    custom.write_bytes(write(model))
    reference.write_bytes(builtin)
    return custom, reference


def test_the_custom_op_is_what_the_runtime_says(deconv_pair):
    """The file really holds the custom op, and the runtime computes with it what the builtin computes."""
    from edgecompress.runner import TFLiteRunner
    from edgecompress.tflite_reader import read_model, unsupported_ops

    custom, reference = deconv_pair
    assert unsupported_ops(read_model(custom)) == [CUSTOM]
    x = np.random.default_rng(1).random((1, 8, 8, 4)).astype(np.float32)
    got, want = (TFLiteRunner(p).run({"x": x})[0] for p in (custom, reference))
    assert got.shape == (1, 16, 16, 1) and np.abs(got - want).max() < 1e-6 and want.std() > 0.05


def test_benchmark_runs_a_custom_op_the_runtime_has(run_cli, deconv_pair):
    custom, _ = deconv_pair
    code, out, err = run_cli(["benchmark", custom, "--runs", "3", "--min-secs", "0", "--json"])
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["error"] is None and row["latency_ms"]["p50"] > 0


def test_without_xnnpack_the_runtime_refusal_is_one_line(run_cli, deconv_pair):
    """Only XNNPACK provides this op in ai-edge-litert: without it, the runtime's own words and the way out."""
    custom, _ = deconv_pair
    code, out, err = run_cli(["benchmark", custom, "--no-xnnpack"])
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"unresolved custom op: {CUSTOM}" in err and "run with XNNPACK" in err and len(err.strip().splitlines()) == 1


def test_inspect_lists_the_custom_op(run_cli, deconv_pair):
    custom, _ = deconv_pair
    code, out, _ = run_cli(["inspect", custom, "--json"])
    assert code == 0 and json.loads(out)["unsupported_ops"] == [CUSTOM]


def test_check_runs_it_on_the_device_userland(run_cli, emulation_tools, deconv_pair):
    """No list decides: the emulated Pi's ai-edge-litert runs it, and its outputs agree with this host's."""
    custom, _ = deconv_pair
    code, out, err = run_cli(["check", custom, "--device", PI, "--json"])
    assert code == 0, err
    (verdict,) = json.loads(out)["verdicts"]
    assert verdict["runs"] is True and verdict["emulated"] is True


def test_an_android_profile_says_only_the_device_can_tell(run_cli, deconv_pair):
    custom, _ = deconv_pair
    code, out, err = run_cli(["check", custom, "--device", "pixel-3a", "--json"])
    (verdict,) = json.loads(out)["verdicts"]
    assert code == 0, err
    assert verdict["runs"] is None and CUSTOM in verdict["advice"] and "benchmark --on" in verdict["advice"]


@pytest.fixture(scope="module")
def free_dims_tflite(session_dir) -> Path:
    """A fully convolutional network whose height and width are free in the file ([1, -1, -1, 3])."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    k1 = tf.constant(rng.normal(size=(3, 3, 3, 8)).astype(np.float32))
    k2 = tf.constant(rng.normal(size=(1, 1, 8, 2)).astype(np.float32))
    fn = tf.function(lambda image: tf.nn.softmax(tf.nn.conv2d(tf.nn.relu(tf.nn.conv2d(image, k1, 1, "SAME")), k2, 1, "SAME"))
                     ).get_concrete_function(tf.TensorSpec([1, None, None, 3], tf.float32, name="image"))
    path = session_dir / "pnet_free.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([fn]).convert())
    return path


def test_inspect_sizes_free_dimensions_at_the_shape_given(run_cli, free_dims_tflite):
    """MACs follow the image's area: 12x16 and 24x32 differ by 4x, and the report says at what shape."""
    macs = {}
    for shape in ("1x12x16x3", "1x24x32x3"):
        code, out, err = run_cli(["inspect", free_dims_tflite, "--input-shape", f"image={shape}", "--json"])
        assert code == 0, err
        report = json.loads(out)
        assert report["resolved_tensors"] > 0 and report["resolved_at"] == {"image": [int(d) for d in shape.split("x")]}
        macs[shape] = report["macs_total"]
        if shape == "1x12x16x3":
            (conv,) = [o for o in report["operators"] if o["name"] == "CONV_2D"]
            assert conv["macs"] == 12 * 16 * (3 * 3 * 3 * 8 + 8 * 2)
    assert macs["1x24x32x3"] == 4 * macs["1x12x16x3"]
    code, out, _ = run_cli(["inspect", free_dims_tflite, "--input-shape", "image=1x24x32x3"])
    assert "sized by the runtime at image=1x24x32x3" in out
    code, _, err = run_cli(["inspect", free_dims_tflite, "--input-shape", "1x24x32x4"])
    assert code == 2 and "does not fit input image" in err and "--input-shape" in err


def test_benchmark_needs_and_uses_the_shape(run_cli, free_dims_tflite):
    """Free height and width: refused without a shape (it would run at 1x1), run at the shape given."""
    code, out, err = run_cli(["benchmark", free_dims_tflite])
    assert code == 2 and out == "" and "--input-shape image=1x" in err
    code, out, err = run_cli(["benchmark", free_dims_tflite, "--input-shape", "image=1x48x64x3", "--runs", "3",
                              "--min-secs", "0", "--json"])
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["inputs"][0]["shape"] == [1, 48, 64, 3] and row["error"] is None
