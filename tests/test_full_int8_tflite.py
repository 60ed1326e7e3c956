"""quantize --quantize int8: full integer from an existing .tflite, for models that exist only as .tflite (issue 24).

The figure to hold: per-output SQNR within 1 dB of TFLiteConverter's own full int8 of the same Keras model, on
the same calibration samples. ai-edge-quantizer's calibration alone (a moving average of per-sample ranges)
measured 10.4 dB on fer's model where TFLiteConverter gives 26.2: the global ranges are what make the difference.
"""
from __future__ import annotations

import json

import numpy as np
import pytest


def _sqnr(reference: np.ndarray, other: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference ** 2) / np.sum((reference - other) ** 2)))


def _outputs(path, x: np.ndarray) -> np.ndarray:
    from edgecompress.runner import TFLiteRunner

    runner = TFLiteRunner(path)
    return np.concatenate([runner.run({runner.inputs[0].name: s[None]})[0] for s in x])


def test_full_int8_of_a_tflite_holds_as_tflite_converter_does(run_cli, float_tflite, int8_tflite, digits, tmp_path):
    """Calibrated on the 100 samples int8_tflite was calibrated on, scored on 200 others."""
    np.savez(tmp_path / "calib.npz", x=digits.train.x[:100])
    out = tmp_path / "int8.tflite"
    code, stdout, err = run_cli(["quantize", float_tflite, "-o", out, "--quantize", "int8", "--calibration",
                                 tmp_path / "calib.npz", "--json"])
    assert code == 0, err
    result = json.loads(stdout)
    assert result["quantize"] == "int8" and result["validation"]["outputs"][0]["sqnr_db"] > 20
    from edgecompress.tflite_reader import is_integer_model, read_model

    assert is_integer_model(read_model(out))
    x = digits.test.x[:200]
    reference = _outputs(float_tflite, x)
    ours, theirs = _sqnr(reference, _outputs(out, x)), _sqnr(reference, _outputs(int8_tflite, x))
    print(f"full int8 SQNR: quantize {ours:.1f} dB, TFLiteConverter {theirs:.1f} dB")
    assert ours >= theirs - 1.0


@pytest.fixture(scope="module")
def float16_no_signature(digits_model, session_dir):
    """float16 weights and no SignatureDef, as MediaPipe ships its detectors (their calibration needs one)."""
    import tensorflow as tf

    from edgecompress.converters.tflite_edit import read, write

    fn = tf.function(lambda x: digits_model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, 8, 8, 1], tf.float32))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], digits_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    model = read(conv.convert())
    model.signatureDefs = []
    path = session_dir / "digits_fp16_nosig.tflite"
    path.write_bytes(write(model))
    return path


def test_a_float16_file_without_signature_goes_to_int8_io(run_cli, float16_no_signature, digits, tmp_path):
    from edgecompress.runner import TFLiteRunner

    np.savez(tmp_path / "calib.npz", x=digits.train.x[:100])
    out = tmp_path / "int8io.tflite"
    code, _, err = run_cli(["quantize", float16_no_signature, "-o", out, "--quantize", "int8", "--calibration",
                            tmp_path / "calib.npz", "--io-type", "int8"])
    assert code == 0, err
    assert "restored to float32" in err and "calibrated on 100 samples" in err
    runner = TFLiteRunner(out)
    assert runner.in_ports[0].spec.dtype == "int8" and runner.out_ports[0].spec.dtype == "int8"


def test_int8_and_gptq_need_calibration(run_cli, float_tflite, tmp_path):
    """Weight modes once refused calibration samples; since gptq rounds from the activations (and auto measures
    on them) they take them, and gptq without them is refused in one line."""
    code, out, err = run_cli(["quantize", float_tflite, "-o", tmp_path / "a.tflite", "--quantize", "int8"])
    assert code == 2 and out == "" and "--calibration" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["quantize", float_tflite, "-o", tmp_path / "b.tflite", "--quantize", "dynamic",
                            "--algorithm", "gptq"])
    assert code == 2 and "--calibration" in err and "--algorithm gptq" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a.tflite").exists() and not (tmp_path / "b.tflite").exists()


def test_percentile_ranges_clip_the_rare_extremes(run_cli, float_tflite, digits, tmp_path):
    """--calibration-method percentile: every activation range within minmax's, some narrower."""
    from edgecompress.runner import TFLiteRunner
    from edgecompress.tflite_reader import read_model

    np.savez(tmp_path / "calib.npz", x=digits.train.x[:100])
    scales = {}
    for method in ("minmax", "percentile"):
        out = tmp_path / f"{method}.tflite"
        code, _, err = run_cli(["quantize", float_tflite, "-o", out, "--quantize", "int8", "--calibration",
                                tmp_path / "calib.npz", "--calibration-method", method])
        assert code == 0, err
        assert f"({method} ranges)" in err
        scales[method] = {t.name: t.quantization.scale[0] for t in read_model(out).main.tensors
                          if t.dtype == "int8" and not t.is_constant and t.quantization.is_quantized}
    shared = set(scales["minmax"]) & set(scales["percentile"])
    assert shared and all(scales["percentile"][n] <= scales["minmax"][n] * 1.0001 for n in shared)
    assert any(scales["percentile"][n] < scales["minmax"][n] * 0.99 for n in shared)
    assert TFLiteRunner(tmp_path / "percentile.tflite").in_ports[0].spec.dtype == "float32"


@pytest.fixture(scope="module")
def old_two_headed(session_dir):
    """A detector written as MediaPipe's short-range face detector is: operator codes only in the field older
    schemas had (builtin_code left 0, which reads as ADD), no SignatureDef, and two outputs whose names sort
    the other way round (regressors first, classificators second)."""
    import tensorflow as tf

    from edgecompress.converters.tflite_edit import read, write
    from edgecompress.models import import_tf_keras

    k = import_tf_keras()
    k.utils.set_random_seed(0)
    x = k.Input((8, 8, 1), batch_size=1)
    h = k.layers.Flatten()(k.layers.Conv2D(8, 3, activation="relu")(x))
    model = k.Model(x, [k.layers.Dense(4)(h), k.layers.Dense(1, activation="sigmoid")(h)])
    fn = tf.function(lambda v: model(v, training=False)).get_concrete_function(tf.TensorSpec([1, 8, 8, 1], tf.float32))
    flat = read(tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert())
    flat.signatureDefs = []
    for entry in flat.operatorCodes:
        entry.deprecatedBuiltinCode, entry.builtinCode = entry.builtinCode, 0
    graph = flat.subgraphs[0]
    for index, name in zip(graph.outputs, (b"regressors", b"classificators")):
        graph.tensors[index].name = name
    path = session_dir / "old_two_headed.tflite"
    path.write_bytes(write(flat))
    return path


def test_a_file_of_the_old_schema_is_quantized_and_judged_output_by_output(run_cli, old_two_headed, digits, tmp_path):
    """The quantizer read every op of such a file as ADD: weight modes quantized nothing (exit 2), and full int8
    gave convolution weights a zero point the runtime refuses. Its SignatureDef then listed the outputs by name,
    and validation compared classificators with regressors (a traceback)."""
    np.savez(tmp_path / "calib.npz", x=digits.train.x[:64])
    code, _, err = run_cli(["quantize", old_two_headed, "-o", tmp_path / "w.tflite", "--quantize", "int8-weights"])
    assert code == 0, err
    code, stdout, err = run_cli(["quantize", old_two_headed, "-o", tmp_path / "int8.tflite", "--quantize", "int8",
                                 "--calibration", tmp_path / "calib.npz", "--json"])
    assert code == 0, err
    outputs = {o["name"]: o for o in json.loads(stdout)["validation"]["outputs"]}
    assert set(outputs) == {"regressors", "classificators"}
    assert all(o["sqnr_db"] > 20 for o in outputs.values()), outputs


def test_int16_head_widens_only_the_ops_that_output_depends_on(run_cli, old_two_headed, digits, tmp_path):
    """MediaPipe's short-range detector: its scores span hundreds of logits where the decision is at 0, so
    int8 steps flip decisions (90% kept on 104 photographs); 16-bit activations on the score head keep 98%."""
    from edgecompress.tflite_reader import read_model

    np.savez(tmp_path / "calib.npz", x=digits.train.x[:64])
    out = tmp_path / "head16.tflite"
    code, stdout, err = run_cli(["quantize", old_two_headed, "-o", out, "--quantize", "int8", "--calibration",
                                 tmp_path / "calib.npz", "--int16-head", "classificators", "--json"])
    assert code == 0, err
    assert "16-bit activations on" in err and json.loads(stdout)["validation"]["outputs"]
    graph = read_model(out).main
    kinds = {graph.tensors[i].name: graph.tensors[i].dtype for op in graph.operators for i in op.outputs}
    head = [n for n, d in kinds.items() if d == "int16"]
    assert "classificators" in head, kinds
    # the shared convolution and the other head stay int8; the outputs stay float32 (io_type)
    convs = [graph.tensors[op.outputs[0]].name for op in graph.operators if op.name == "CONV_2D"]
    assert convs and all(kinds[c] == "int8" for c in convs) and not any("regressors" in n for n in head)
    assert all(graph.tensors[i].dtype == "float32" for i in graph.outputs)
    code, _, err = run_cli(["quantize", old_two_headed, "-o", tmp_path / "x.tflite", "--quantize", "int8",
                            "--calibration", tmp_path / "calib.npz", "--int16-head", "scores"])
    assert code == 2 and "no such output" in err and "regressors, classificators" in err
    assert not (tmp_path / "x.tflite").exists()


def test_int16x8_of_a_tflite_has_16_bit_activations_and_more_signal(run_cli, float_tflite, digits, tmp_path):
    from edgecompress.tflite_reader import read_model

    np.savez(tmp_path / "calib.npz", x=digits.train.x[:100])
    sqnr = {}
    for mode in ("int8", "int16x8"):
        code, stdout, err = run_cli(["quantize", float_tflite, "-o", tmp_path / f"{mode}.tflite", "--quantize", mode,
                                     "--calibration", tmp_path / "calib.npz", "--json"])
        assert code == 0, err
        sqnr[mode] = json.loads(stdout)["validation"]["outputs"][0]["sqnr_db"]
    activations = {t.dtype for t in read_model(tmp_path / "int16x8.tflite").main.tensors if not t.is_constant}
    assert "int16" in activations and "int8" not in activations
    print(f"full integer SQNR: int8 {sqnr['int8']:.1f} dB, int16x8 {sqnr['int16x8']:.1f} dB")
    assert sqnr["int16x8"] > sqnr["int8"] + 6
    code, _, err = run_cli(["quantize", float_tflite, "-o", tmp_path / "io.tflite", "--quantize", "int16x8",
                            "--calibration", tmp_path / "calib.npz", "--io-type", "int8"])
    assert code == 2 and "int16x8 keeps float32 inputs and outputs" in err


def test_int8_max_drop_on_a_tflite_keeps_the_culprit_float_with_int8_weights(run_cli, digits_model, calib_npz,
                                                                              digits, tmp_path, val_npz):
    """The digits CNN with an outlier channel, as a .tflite alone (no Keras source to smooth): full int8 collapses;
    --max-drop keeps the tensor the runtime-side measure ranks first at float activations, with the ops that make
    and read it, their weights int8 (weight-only), and says why."""
    import json

    from edgecompress.examples import with_outlier_channel
    from edgecompress.tflite_reader import parse_model

    model = tmp_path / "outlier.keras"
    with_outlier_channel(digits_model, layer="conv1").save(model)
    assert run_cli(["convert", model, "-o", tmp_path / "f32.tflite"])[0] == 0
    val = val_npz
    out = tmp_path / "int8.tflite"
    code, text, err = run_cli(["quantize", tmp_path / "f32.tflite", "-o", out, "--quantize", "int8", "--calibration",
                               calib_npz, "--eval-data", val, "--max-drop", "1", "--json"])
    assert code == 0, err
    search = json.loads(text)["search"]
    assert search["steps"][0]["drop"] > 40 and search["target_met"]
    kept = search["steps"][search["chosen"]]
    assert "conv1" in kept["float_layers"] and set(search["reasons"]) == set(kept["float_layers"])
    assert "of its signal at int8" in search["reasons"]["conv1"]
    graph = parse_model(out.read_bytes()).main
    producers = {o: op for op in graph.operators for o in op.outputs}
    float_convs = [op for op in graph.operators if op.name == "CONV_2D" and graph.tensor(op.outputs[0]).dtype == "float32"]
    assert float_convs and all(producers[op.inputs[1]].name == "DEQUANTIZE" for op in float_convs)
    assert out.stat().st_size < (tmp_path / "f32.tflite").stat().st_size / 3


def test_int8_max_drop_keeps_float_what_fails_an_edge_input(run_cli, tmp_path):
    """A model that normalizes its input by its maximum plus an epsilon (basic-pitch's log-magnitude step): its
    full int8 is within the target on labelled data, but its int8 DIV refuses the all-zero input (the epsilon
    rounds to the divisor's zero point). The search finds that on the edge inputs, keeps the DIV's inputs float
    and ends with a file that validation passes: it used to choose the failing file, which validation refused."""
    from edgecompress.converters import convert_model
    from edgecompress.models import import_tf

    tf = import_tf()
    rng = np.random.default_rng(0)

    class Normalized(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(rng.normal(size=(16, 4)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="x")])
        def __call__(self, x):
            norm = x / (tf.reduce_max(x, axis=-1, keepdims=True) + 1e-3)
            return {"scores": tf.nn.softmax(4.0 * (norm @ self.w))}

    module = Normalized()
    tf.saved_model.save(module, str(tmp_path / "norm"), signatures=module.__call__)
    float_path = convert_model(tmp_path / "norm", tmp_path / "f32.tflite").output
    x = rng.random((120, 16), dtype=np.float32) * 0.5 + 0.5
    np.savez(tmp_path / "cal.npz", x=x[:60])
    labels = np.argmax(_outputs(float_path, x[60:]), axis=1)
    np.savez(tmp_path / "eval.npz", x=x[60:], y=labels)
    out = tmp_path / "int8.tflite"
    code, text, err = run_cli(["quantize", float_path, "-o", out, "--quantize", "int8", "--calibration",
                               tmp_path / "cal.npz", "--eval-data", tmp_path / "eval.npz", "--max-drop", "2", "--json"])
    assert code == 0, err
    search = json.loads(text)["search"]
    first, kept = search["steps"][0], search["steps"][search["chosen"]]
    assert first["drop"] <= 2 and "DIV cannot run" in first["edge_fault"] and "'zeros'" in first["edge_fault"]
    assert search["target_met"] and kept["edge_fault"] is None and kept["float_layers"]
    assert any("feeds DIV cannot run" in why for why in search["reasons"].values()), search["reasons"]
    assert out.exists()
