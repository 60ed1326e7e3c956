"""The models users ship (Keras applications, Conv+BatchNorm CNNs) through QAT and the Keras 3 rebuild.

QAT must go through TF-MOT's whole-model transforms: a Conv -> BatchNormalization (-> ReLU) block becomes one
int8 CONV_2D, with no MUL/ADD by a constant left over from the BatchNormalization. A fast subset of
benchmarks/zoo.py keeps each family working (tiny inputs, one epoch on a few random samples).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgecompress.datasets import Split

ZOO_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo.py"


@pytest.fixture(scope="module")
def zoo():
    spec = importlib.util.spec_from_file_location("zoo", ZOO_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["zoo"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _op_counts(path):
    from edgecompress.inspect import inspect_model

    return {o.name: o.count for o in inspect_model(path).operators}


def test_qat_folds_batchnorm_and_saves_a_keras_file_that_converts(zoo, digits, calib_npz, run_cli, tmp_path):
    """The CLI as users type it: prune + cluster + QAT into .keras, then int8 from that file."""
    from edgecompress.examples import build_digits_cnn

    train = Split(digits.train.x[:256], digits.train.y[:256]).save_npz(tmp_path / "train.npz")
    source = tmp_path / "bn.keras"
    build_digits_cnn(batch_norm=True).save(source)
    out = tmp_path / "pcqat.keras"
    code, stdout, err = run_cli(["optimize", source, "-o", out, "--train", train, "--prune", "0.8",
                                 "--cluster", "16", "--qat", "--epochs", "1", "--json"])
    assert code == 0, err
    skipped = [s for s in json.loads(stdout)["skipped_layers"] if s["technique"] == "qat"]
    assert not skipped, skipped  # every BatchNormalization quantized (folded), none left float

    tflite = tmp_path / "pcqat.tflite"
    code, _, err = run_cli(["convert", out, "-o", tflite, "--quantize", "int8", "--calibration", calib_npz])
    assert code == 0, err
    ops = _op_counts(tflite)
    assert ops["CONV_2D"] == 2 and "MUL" not in ops and "ADD" not in ops, ops
    g = zoo.graph(tflite)
    assert g.constant_affine == 0 and g.float_ops == 0
    assert g.sparsity >= 0.75 and g.distinct <= 16, g  # pruning and clustering survive QAT and int8


# One case per family of benchmarks/zoo.py (tiny inputs, one epoch on 8 random samples), each flavour and
# technique at least once; the zoo runs them all.
FAMILIES = [
    ("mobilenet_v1_0.25", "tf-keras", "prune 0.5"),
    ("mobilenet_v2_0.35", "keras3", "qat"),  # 52 BatchNormalizations, residual Adds
    ("mobilenet_v3_small", "keras3", "pcqat"),  # hard_silu, squeeze-excite Multiply, Rescaling
    ("efficientnet_b0", "keras3", "qat"),  # its NaN loss used to crash TensorFlow in the int8 conversion
    ("efficientnet_v2_b0", "tf-keras", "cluster 16"),
    ("resnet50_v2", "keras3", "2:4"),
    ("nasnet_mobile", "tf-keras", "prune 0.5"),  # QAT int8 makes LiteRT 2.3.0's XNNPACK abort (README)
]


@pytest.mark.parametrize("name, flavour, technique", FAMILIES)
def test_each_keras_application_family_goes_through_optimize_and_int8(tmp_path, name, flavour, technique):
    # As the zoo runs it, in a process of its own: TensorFlow keeps a big model's memory for the rest of a
    # process (ResNet50V2 with every technique wrapped reached 12 GB).
    saved = tmp_path / "rows.json"
    subprocess.run([sys.executable, str(ZOO_PATH), "--models", name, "--flavours", flavour, "--techniques",
                    technique, "--modes", "int8", "--technique-modes", "int8", "--side", "32", "--work-dir",
                    str(tmp_path), "--save", str(saved)], check=True, stdout=subprocess.DEVNULL)
    as_built, optimized = json.loads(saved.read_text())
    assert as_built[2:5] == ["as built", "int8", "ok"] and optimized[2:5] == [technique, "int8", "ok"], optimized
    assert optimized[6] == 0  # no operator left in float
    if flavour == "keras3":
        assert optimized[9] is not None and optimized[9] < 1e-4  # the Keras 3 rebuild's max abs error
    if name.startswith("mobilenet_v2"):
        assert optimized[7] == 0  # every BatchNormalization folded into its convolution


def test_layers_of_edge_models_get_quantize_configs_that_convert(zoo, digits, tmp_path):
    """Keras 3 layers TF-MOT has no config for (Rescaling, squeeze-excite Multiply, hard_silu, keras.ops
    arithmetic) are rebuilt, quantized by QAT and converted to int8 with no operator left in float."""
    from edgecompress.converters.convert import convert_model
    from edgecompress.inspect import inspect_model
    from edgecompress.models import import_tf, load_model
    from edgecompress.optimize import QAT, TrainSettings, optimize

    import_tf()
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    inp = keras.Input((8, 8, 1))
    x = layers.Rescaling(2.0, offset=-1.0, name="scale")(inp)
    x = layers.ZeroPadding2D(1, name="pad")(x)
    x = layers.Conv2D(8, 3, use_bias=False, name="conv")(x)
    x = layers.BatchNormalization(name="conv_bn")(x)
    x = layers.Activation("hard_silu", name="hswish")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.ReLU(6.0, name="dw_relu")(x)
    se = layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    se = layers.Conv2D(8, 1, name="se_conv")(se)
    se = layers.ReLU(6.0, name="se_relu")(se + 3.0) * (1.0 / 6.0)  # MobileNetV3's hard_sigmoid, keras.ops
    x = layers.Multiply(name="se_mul")([x, se])
    x = layers.UpSampling2D(2, name="up")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Reshape((8,), name="reshape")(x)
    out = layers.Dense(10, activation="softmax", name="probs")(x)
    source = tmp_path / "edge.keras"
    keras.Model(inp, out).save(source)

    train = Split(digits.train.x[:64], digits.train.y[:64]).save_npz(tmp_path / "train.npz")
    result = optimize(source, tmp_path / "qat.keras", train, [QAT()], settings=TrainSettings(epochs=1))
    assert not result.skipped_layers, result.skipped_layers
    assert result.details["rebuild"]["max_abs_error"] < 1e-5
    wrapped = {layer.layer.name for layer in load_model(result.output).model.layers if hasattr(layer, "layer")}
    assert {"scale", "pad", "hswish", "se_mul", "up", "reshape", "conv_bn", "dw_bn"} <= wrapped, wrapped

    tflite = tmp_path / "qat.tflite"
    convert_model(result.output, tflite, quantize="int8", calibration=train)
    report = inspect_model(tflite)
    ops = {o.name for o in report.operators}
    assert report.integer_model and "HARD_SWISH" in ops, ops
    assert zoo.graph(tflite).float_ops == 0


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_v2_b0", "mobilenet_v3_large", "nasnet_mobile"])
def test_keras3_applications_rebuild_in_tf_keras(zoo, name):
    from edgecompress.optimize.rebuild import as_tf_keras

    rebuilt = as_tf_keras(zoo.build(name, "keras3", 32))
    assert rebuilt.max_abs_error < 1e-4
