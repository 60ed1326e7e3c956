"""int4 and weight-only int8 through ai-edge-quantizer: `convert --quantize int4/int8-weights` from Keras,
`quantize` on an existing float .tflite, what inspect shows of the result, and every bad input (exit 2, one
line, nothing written)."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error


@pytest.fixture(scope="module")
def exported(digits_model_path, tmp_path_factory, test_npz):
    """The digits CNN converted as float32, int4 and int8-weights: {mode: (result as JSON, accuracy, path)}."""
    from edgecompress.converters import convert_model
    from edgecompress.evaluate import evaluate
    from edgecompress.tables import to_json

    folder = tmp_path_factory.mktemp("weights")
    results = {}
    for mode in ("none", "int4", "int8-weights"):
        result = convert_model(digits_model_path, folder / f"{mode}.tflite", quantize=mode)
        results[mode] = (json.loads(to_json(result)), evaluate(result.output, test_npz).accuracy, Path(result.output))
    return results


def test_int4_is_over_6x_smaller_than_float32_at_float_accuracy(exported):
    (f32, f32_acc, _), (int4, int4_acc, _) = exported["none"], exported["int4"]
    assert f32["size_bytes"] / int4["size_bytes"] >= 6.0
    assert int4_acc >= f32_acc - 0.005  # held-out accuracy within half a point
    v = int4["validation"]  # validated against the Keras original, like every mode
    assert v["samples"] == 100 and 0 < v["mean_abs_error"] < 0.05 and v["runtime"].startswith("ai-edge-litert")


def test_int8_weights_is_about_4x_smaller_and_closest_to_float(exported):
    (f32, f32_acc, _), (int8w, acc, _), (int4, _, _) = exported["none"], exported["int8-weights"], exported["int4"]
    assert 3.5 <= f32["size_bytes"] / int8w["size_bytes"] < 4.0
    assert acc >= f32_acc - 0.005
    assert int8w["validation"]["mean_abs_error"] < int4["validation"]["mean_abs_error"] / 4


def test_inspect_shows_packed_int4_weights(exported, run_cli):
    code, out, _ = run_cli(["inspect", exported["int4"][2], "--json"])
    assert code == 0
    report = json.loads(out)
    int4 = [w for w in report["weights"] if w["dtype"] == "int4"]
    assert {w["name"].split("/")[1] for w in int4} == {"conv1", "conv2", "dense", "probs"}
    for w in int4:
        assert w["stored_bytes"] == (w["elements"] + 1) // 2 and w["quantized"] == "per-channel"
        assert w["distinct_values"] <= 16
    assert report["weight_bytes"] < report["parameter_count"] * 0.6  # 4 bits a weight, plus float biases
    assert report["integer_model"] is False


def test_quantize_cli_blockwise_int4_and_what_inspect_shows(float_tflite, test_npz, tmp_path, run_cli):
    out = tmp_path / "b32.tflite"
    code, stdout, err = run_cli(["quantize", float_tflite, "-o", out, "--quantize", "int4", "--block-size", "32",
                                 "--inputs", test_npz, "--json"])
    assert code == 0, err
    result = json.loads(stdout)
    assert result["block_size"] == 32 and result["ratio"] > 4.5
    v = result["validation"]
    assert v["data"] == "given" and v["samples"] == 100 and v["top1_agreement"] >= 0.97
    code, stdout, _ = run_cli(["inspect", out, "--json"])
    weights = {w["name"]: w for w in json.loads(stdout)["weights"]}
    dense = weights["digits_cnn/dense/MatMul"]
    assert (dense["dtype"], dense["quantized"], dense["block_size"], dense["stored_bytes"]) == (
        "int4", "blockwise", 32, 128 * 512 // 2)
    assert weights["digits_cnn/conv2/Conv2D"]["quantized"] == "per-channel"  # convolutions stay per channel
    code, table, _ = run_cli(["inspect", out])
    assert "blockwise (32)" in table


def bad(run_cli, args, *words) -> None:
    one_line_error(run_cli(args), *words, alone=True)


@pytest.fixture(scope="module")
def int4_tflite(float_tflite, tmp_path_factory) -> Path:
    from edgecompress.converters.quantize_file import quantize_tflite

    return Path(quantize_tflite(float_tflite, tmp_path_factory.mktemp("int4") / "int4.tflite", "int4").output)


BAD = [
    # (input fixture or file, extra arguments, words the message must hold)
    ("int8_tflite", ["--quantize", "int4"], ["already quantized", "int8", "float32 .tflite"]),
    ("int4_tflite", ["--quantize", "int8-weights"], ["already quantized", "int4"]),
    ("float_tflite", ["--quantize", "int4", "--block-size", "48"], ["48", "not supported", "32, 64, 128, 256"]),
    ("float_tflite", ["--quantize", "int8-weights", "--block-size", "32"], ["--block-size", "int4", "int8-weights"]),
    ("digits_model_path", ["--quantize", "int4"], ["Keras model", "convert --quantize int4"]),
    ("test_npz", ["--quantize", "int4"], ["not a TFLite flatbuffer"]),
]


@pytest.mark.parametrize("source,extra,words", BAD, ids=[f"{b[0]}-{'-'.join(b[1][1:])}" for b in BAD])
def test_bad_quantize_input(source, extra, words, request, tmp_path, run_cli, capsys):
    model = request.getfixturevalue(source)
    capsys.readouterr()  # what building the fixture printed
    out = tmp_path / "out.tflite"
    bad(run_cli, ["quantize", model, "-o", out, *extra], *words)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(float_tflite, tmp_path, run_cli):
    out = tmp_path / "out.tflite"
    out.write_bytes(b"keep me")
    bad(run_cli, ["quantize", float_tflite, "-o", out, "--quantize", "dynamic"], "already exists", "--force")
    assert out.read_bytes() == b"keep me"
    code, _, err = run_cli(["quantize", float_tflite, "-o", out, "--quantize", "dynamic", "--force"])
    assert code == 0, err
    assert out.read_bytes()[4:8] == b"TFL3"


def test_blocks_go_where_they_divide_and_the_rest_stay_per_channel(run_cli, float_tflite, tmp_path):
    """A real model's dense layers need not share a width (BirdNET's mel filterbanks take 1,025 and 513 inputs,
    its classifier 1,024): blocks go where they divide, the others stay per channel and are named."""
    from edgecompress.tflite_reader import parse_model

    out = tmp_path / "b256.tflite"
    code, _, err = run_cli(["quantize", float_tflite, "-o", out, "--quantize", "int4", "--block-size", "256"])
    assert code == 0, err
    assert "does not divide the input channels of 1 FULLY_CONNECTED weight" in err and "(128)" in err
    blocks = [t.quantization.block_size for t in parse_model(out.read_bytes()).main.tensors if t.dtype == "int4"]
    assert 256 in blocks and 0 in blocks


def test_convert_block_size_needs_int4(digits_model_path, tmp_path, run_cli):
    bad(run_cli, ["convert", digits_model_path, "-o", tmp_path / "m.tflite", "--quantize", "dynamic",
                  "--block-size", "32"], "--block-size", "int4")
    assert list(tmp_path.iterdir()) == []


def without_quantizer(*args) -> subprocess.CompletedProcess:
    """The CLI with the quantizer hidden from imports (both names), as if the [quantize] extra were not installed."""
    hide = ("import sys; sys.modules['litert_quantizer'] = sys.modules['ai_edge_quantizer'] = None\n"
            "from edgecompress.cli.main import main; main(sys.argv[1:])")
    return subprocess.run([sys.executable, "-c", hide, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_missing_quantizer_names_the_extra(float_tflite, tmp_path):
    out = tmp_path / "out.tflite"
    done = without_quantizer("quantize", float_tflite, "-o", out, "--quantize", "int4")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "pip install 'edgecompress[quantize]'" in done.stderr
    assert not out.exists()


def test_damaged_files_are_refused_in_one_line(float_tflite, tmp_path, run_cli):
    """Seeded byte mutations of a good file: each is quantized or refused (exit 2, one line, nothing written),
    never an internal error. ai-edge-quantizer reads more of the file than the checks before it."""
    rng = np.random.default_rng(0)
    good = float_tflite.read_bytes()
    codes = []
    for i in range(60):
        data = np.frombuffer(good, dtype=np.uint8).copy()
        at = rng.integers(0, 4000 if i % 2 else len(data), size=int(rng.choice([1, 4, 16, 64])))
        data[at] = rng.integers(0, 256, size=len(at))
        damaged = tmp_path / f"damaged{i}.tflite"
        damaged.write_bytes(data.tobytes()[: None if i % 5 else int(rng.integers(8, len(data)))])
        out = tmp_path / "out.tflite"
        code, _, err = run_cli(["quantize", damaged, "-o", out, "--quantize", "int4", "--validation-samples", "2",
                                "--force"])
        assert code in (0, 2) and "Traceback" not in err, err
        if code == 2:  # progress lines may come first
            assert err.count("error:") == 1 and err.rstrip("\n").splitlines()[-1].startswith("error:"), err
            assert not out.exists()
        out.unlink(missing_ok=True)
        codes.append(code)
    assert codes.count(2) >= 20  # most damage is caught


def test_convert_int4_without_the_quantizer_fails_before_converting(digits_model_path, tmp_path):
    out = tmp_path / "m.tflite"
    done = without_quantizer("convert", digits_model_path, "-o", out, "--quantize", "int4")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr  # no "converting" line first
    assert "pip install 'edgecompress[quantize]'" in done.stderr and not out.exists()


@pytest.fixture(scope="module")
def float16_tflite(digits_model, session_dir):
    """float16 weights as TFLiteConverter (and MediaPipe, and most hubs) store them: constants + DEQUANTIZE."""
    import tensorflow as tf

    fn = tf.function(lambda x: digits_model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, 8, 8, 1], tf.float32))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], digits_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    path = session_dir / "digits_float16.tflite"
    path.write_bytes(conv.convert())
    return path


def test_float16_weights_are_restored_exactly(float16_tflite, digits):
    from edgecompress.converters.float16_weights import restore_float32
    from edgecompress.runner import TFLiteRunner
    from edgecompress.tflite_reader import parse_model

    data = float16_tflite.read_bytes()
    restored, folded, densified = restore_float32(data)
    assert densified == 0
    model = parse_model(restored)
    assert folded >= 4 and "DEQUANTIZE" not in {op.name for op in model.operators}
    assert not any(t.is_constant and t.dtype == "float16" for t in model.main.tensors)
    path = float16_tflite.with_name("restored.tflite")
    path.write_bytes(restored)
    before, after = TFLiteRunner(float16_tflite), TFLiteRunner(path)
    for x in digits.test.x[:20]:
        (a,), (b,) = before.run({before.inputs[0].name: x[None]}), after.run({after.inputs[0].name: x[None]})
        assert np.array_equal(a, b)


def _sparse_as_float16(data: bytes) -> bytes:
    """A sparse float32 file in MediaPipe's form: each sparse constant stored as float16, DENSIFY giving float16,
    then a DEQUANTIZE to the float32 tensor the graph reads (the converter makes sparse or float16, not both)."""
    from edgecompress.converters.tflite_edit import add_tensor, flatbuffers, op_code, operator, read, write

    model, schema = read(data), flatbuffers().schema_fb
    sg = model.subgraphs[0]
    for op in [o for o in sg.operators if op_code(model, o) == schema.BuiltinOperator.DENSIFY]:
        source, dense = sg.tensors[op.inputs[0]], sg.tensors[op.outputs[0]]
        values = np.frombuffer(np.asarray(model.buffers[source.buffer].data, np.uint8).tobytes(), "<f4")
        model.buffers[source.buffer].data = np.frombuffer(values.astype("<f2").tobytes(), np.uint8)
        source.type = dense.type = schema.TensorType.FLOAT16
        restored = add_tensor(sg, dense, list(dense.shape), b"_dequantized", dtype=schema.TensorType.FLOAT32)
        for consumer in sg.operators:
            consumer.inputs = [restored if i == op.outputs[0] else i for i in consumer.inputs]
        sg.operators.insert(sg.operators.index(op) + 1,
                            operator(model, schema.BuiltinOperator.DEQUANTIZE, [op.outputs[0]], [restored]))
    return write(model)


def test_block_sparse_float16_weights_are_densified_by_the_runtime_then_restored(run_cli, tmp_path):
    """MediaPipe's full-range face detector stores float16 weights block-sparse (DENSIFY, then DEQUANTIZE):
    quantize called it 'already quantized' (issue 24). The runtime's own DENSIFY gives the dense values, so the
    restored file computes bit for bit what the sparse one does, and every weight mode takes it."""
    import tensorflow as tf

    from edgecompress.converters.float16_weights import restore_float32
    from edgecompress.models import import_tf_keras
    from edgecompress.runner import TFLiteRunner
    from edgecompress.tflite_reader import parse_model

    k = import_tf_keras()
    inp = k.Input((64,))
    dense, head = k.layers.Dense(256, activation="relu"), k.layers.Dense(10)
    model = k.Model(inp, head(dense(inp)))
    kernel, bias = head.get_weights()  # sparse: stored sparse and densified by a DENSIFY op
    head.set_weights([kernel * (np.random.default_rng(1).random(kernel.shape) < 0.2), bias])
    fn = tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec([1, 64], tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    sparse = tmp_path / "sparse16.tflite"
    sparse.write_bytes(_sparse_as_float16(converter.convert()))
    stored = parse_model(sparse.read_bytes())
    assert {"DENSIFY", "DEQUANTIZE"} <= {op.name for op in stored.operators}
    restored, folded, densified = restore_float32(sparse.read_bytes())
    assert densified == 1 and folded == 1
    assert not ({"DENSIFY", "DEQUANTIZE"} & {op.name for op in parse_model(restored).operators})
    (tmp_path / "restored.tflite").write_bytes(restored)
    before, after = TFLiteRunner(sparse), TFLiteRunner(tmp_path / "restored.tflite")
    for x in np.random.default_rng(3).normal(size=(10, 1, 64)).astype(np.float32):
        (a,), (b,) = before.run({before.inputs[0].name: x}), after.run({after.inputs[0].name: x})
        assert np.array_equal(a, b)
    code, _, err = run_cli(["quantize", sparse, "-o", tmp_path / "q.tflite", "--quantize", "int8-weights"])
    assert code == 0, err
    assert "stored sparse" in err


def test_quantize_takes_a_float16_weight_file(run_cli, float16_tflite, tmp_path):
    """It said 'already quantized' and advised `convert --quantize none`, which refuses a .tflite (issue 24)."""
    code, out, err = run_cli(["quantize", float16_tflite, "-o", tmp_path / "int8w.tflite", "--quantize",
                              "int8-weights", "--json"])
    assert code == 0, err
    assert "float16 weights" in err and "restored to float32" in err
    result = json.loads(out)
    assert result["validation"]["top1_agreement"] >= 0.97 and result["warnings"] == []
    code, out, _ = run_cli(["inspect", float16_tflite, "--json"])
    assert code == 0 and json.loads(out)["float16_weights"] >= 4


@pytest.fixture(scope="module")
def lstm_tflite(session_dir):
    """Two Keras LSTM layers and nothing else, converted at batch 1 (the fused UNIDIRECTIONAL_SEQUENCE_LSTM)."""
    import tensorflow as tf

    from edgecompress.models import import_tf_keras

    k = import_tf_keras()
    k.utils.set_random_seed(0)
    inp = k.Input((12, 8), batch_size=1, name="frames")
    model = k.Model(inp, k.layers.LSTM(16)(k.layers.LSTM(16, return_sequences=True)(inp)))
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec([1, 12, 8], tf.float32))
    path = session_dir / "lstm.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert())
    return path


def test_a_quantization_that_quantizes_nothing_is_refused(run_cli, lstm_tflite, tmp_path):
    """int4 has no LSTM kernel: the quantizer left every weight float and the file was reported '1.08x smaller'
    (issue 24). Now: exit 2, the ops left float named, no file."""
    out = tmp_path / "int4.tflite"
    code, _, err = run_cli(["quantize", lstm_tflite, "-o", out, "--quantize", "int4"])
    assert code == 2 and "int4 quantized nothing" in err and "LSTM" in err and err.count("\n") == 1
    assert not out.exists()


def test_what_stays_float_is_reported(run_cli, float_tflite, tmp_path):
    code, out, _ = run_cli(["quantize", float_tflite, "-o", tmp_path / "int4.tflite", "--quantize", "int4", "--json"])
    result = json.loads(out)
    assert code == 0 and result["float_share"] == 0.0
    assert {c["op"] for c in result["coverage"]} >= {"CONV_2D", "FULLY_CONNECTED"}
    assert all(c["float"] == 0 for c in result["coverage"])


def test_a_model_that_keeps_state_is_validated_sample_by_sample(run_cli, lstm_tflite, tmp_path):
    """A converted Keras LSTM keeps its state in variable tensors between invocations: run through one interpreter,
    every sample after the first saw the previous ones, and even float32 'agreed' on 13.5% (issue 24). Reset
    before each sample (the Keras original is stateless), a file compared with itself is exact; --stream keeps
    the order and the state, and says so."""
    code, out, _ = run_cli(["inspect", lstm_tflite, "--json"])
    assert code == 0 and json.loads(out)["state_variables"] == 4
    x = np.random.default_rng(0).random((20, 12, 8)).astype("float32")
    np.savez(tmp_path / "frames.npz", x=x)
    np.savez(tmp_path / "labelled.npz", x=x, y=np.zeros((20, 16), "float32"))
    from edgecompress.converters.validate import validate_tflite
    from edgecompress.runner import TFLiteRunner

    reference = TFLiteRunner(lstm_tflite)
    feeds = {reference.inputs[0].name: x}
    reset = validate_tflite(lstm_tflite, reference, feeds, "given")
    assert reset.state == "reset" and reset.max_abs_error == 0.0
    streamed = validate_tflite(lstm_tflite, TFLiteRunner(lstm_tflite), feeds, "given", stream=True)
    assert streamed.state == "streamed" and streamed.max_abs_error == 0.0  # both carry the same state in order
    assert streamed.state_drift > 0.01 and reset.state_drift is None  # the probe: the same input twice moves it
    from edgecompress.converters.validate import validation_warnings
    from edgecompress.compare import OutputCheck

    broken = dataclasses.replace(streamed, outputs=[OutputCheck("h", (16,), "values", 1.0, 0.5, 3.0, 0.5, None, 0, 0)])
    (warning,) = validation_warnings(broken, "int8-weights")
    assert "keeps state between invocations" in warning and "without --stream" in warning
    once, twice = TFLiteRunner(lstm_tflite), TFLiteRunner(lstm_tflite)
    first = once.run({once.inputs[0].name: x[:1]})[0]
    assert not np.array_equal(once.run({once.inputs[0].name: x[:1]})[0], first)  # state carried over
    assert np.array_equal(twice.run({twice.inputs[0].name: x[:1]}, reset=True)[0], first)
    code, out, _ = run_cli(["evaluate", lstm_tflite, "--data", tmp_path / "labelled.npz", "--json"])
    code_stream, out_stream, _ = run_cli(["evaluate", lstm_tflite, "--data", tmp_path / "labelled.npz", "--stream",
                                          "--json"])
    assert code == code_stream == 0 and "state reset" in json.loads(out)["runtime"]
    assert json.loads(out)["mae"] != json.loads(out_stream)["mae"]


def test_a_converted_lstm_agrees_with_its_keras_original(tmp_path):
    """The defect as users met it: float32 of a stateless Keras LSTM 'disagreed' with the original, since the
    .tflite carried state from sample to sample; reset before each, it matches to float rounding."""
    from edgecompress.converters import convert_model
    from edgecompress.models import import_tf_keras, keras_model

    k = import_tf_keras()
    k.utils.set_random_seed(0)
    inp = k.Input((12, 8), batch_size=1, name="frames")
    model = k.Model(inp, k.layers.Dense(3)(k.layers.LSTM(16)(k.layers.LSTM(16, return_sequences=True)(inp))))
    np.savez(tmp_path / "frames.npz", frames=np.random.default_rng(0).random((30, 12, 8)).astype("float32"))
    result = convert_model(keras_model(model), tmp_path / "lstm.tflite", calibration=tmp_path / "frames.npz")
    (out,) = result.validation.outputs
    assert result.validation.state == "reset" and out.sqnr_db > 60 and result.warnings == []


def test_convert_takes_a_tflite_for_the_modes_that_need_only_the_file(run_cli, float16_tflite, calib_npz, tmp_path):
    """A model that exists only as a .tflite (MediaPipe's, a hub's): convert's weight modes work on it, validated on
    --calibration; the modes that need TFLiteConverter say so in one line (convert called it 'not a Keras model')."""
    code, out, err = run_cli(["convert", float16_tflite, "-o", tmp_path / "int4.tflite", "--quantize", "int4",
                              "--calibration", calib_npz, "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["validation"]["data"] == "given" and result["validation"]["top1_agreement"] >= 0.9
    assert result["ratio_base"] == "file"
    code, _, err = run_cli(["convert", float16_tflite, "-o", tmp_path / "int8.tflite", "--quantize", "int8",
                            "--calibration", calib_npz])
    assert code == 2 and "needs the Keras model it came from" in err and "dynamic, int4, int8-weights" in err


def test_int4_weights_keeps_4_bit_weights_for_float_kernels(float_tflite, digits_model_path, test_npz, tmp_path,
                                                            run_cli):
    """int4-weights (one declaration in converters/modes.py): int4 constants read through DEQUANTIZE, so every
    convolution and dense layer computes in float; from a .tflite and from Keras."""
    from edgecompress.evaluate import evaluate
    from edgecompress.tflite_reader import parse_model

    out = tmp_path / "w4.tflite"
    code, stdout, err = run_cli(["quantize", float_tflite, "-o", out, "--quantize", "int4-weights", "--json"])
    assert code == 0, err
    assert json.loads(stdout)["ratio"] > 5
    graph = parse_model(out.read_bytes()).main
    producers = {o: op for op in graph.operators for o in op.outputs}
    compute = [op for op in graph.operators if op.name in ("CONV_2D", "FULLY_CONNECTED")]
    assert compute and all(graph.tensor(op.inputs[0]).dtype == "float32" for op in compute)
    assert all(producers[op.inputs[1]].name == "DEQUANTIZE" and graph.tensor(producers[op.inputs[1]].inputs[0]).dtype
               == "int4" for op in compute)
    assert evaluate(out, test_npz).accuracy >= evaluate(float_tflite, test_npz).accuracy - 0.01

    code, stdout, err = run_cli(["convert", digits_model_path, "-o", tmp_path / "k4.tflite", "--quantize",
                                 "int4-weights", "--json"])
    assert code == 0 and json.loads(stdout)["quantize"] == "int4-weights", err
