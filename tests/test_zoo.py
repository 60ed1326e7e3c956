"""The models users ship (Keras applications, Conv+BatchNorm CNNs) through QAT and the Keras 3 rebuild.

QAT must go through TF-MOT's whole-model transforms: a Conv -> BatchNormalization (-> ReLU) block becomes one
int8 CONV_2D, with no MUL/ADD by a constant left over from the BatchNormalization. A fast subset of
benchmarks/zoo.py keeps each family working (tiny inputs, one epoch on a few random samples).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
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


def test_qat_folds_batchnorm_and_saves_a_keras_file_that_converts(zoo, digits, calib_npz, tmp_path):
    from edgecompress.converters.convert import convert_model
    from edgecompress.examples import build_digits_cnn
    from edgecompress.optimize import QAT, TrainSettings, optimize

    train = Split(digits.train.x[:256], digits.train.y[:256]).save_npz(tmp_path / "train.npz")
    model = build_digits_cnn(batch_norm=True)
    result = optimize(model, tmp_path / "qat.keras", train, [QAT()], settings=TrainSettings(epochs=1))
    assert not any(s.layer.endswith("_bn") for s in result.skipped_layers), result.skipped_layers

    tflite = tmp_path / "qat.tflite"
    convert_model(result.output, tflite, quantize="int8", calibration=calib_npz)  # loads the .keras back
    ops = _op_counts(tflite)
    assert ops["CONV_2D"] == 2 and "MUL" not in ops and "ADD" not in ops, ops
    assert zoo.graph(tflite).constant_affine == 0 and zoo.graph(tflite).float_ops == 0


@pytest.mark.parametrize(
    "name, flavour, technique",
    [
        ("mobilenet_v2_0.35", "keras3", "qat"),  # 52 BatchNormalizations, residual Adds
        ("mobilenet_v3_small", "keras3", "pcqat"),  # hard_silu, keras.ops in squeeze-excite, Rescaling
    ],
)
def test_keras_applications_go_through_optimize_and_int8(zoo, tmp_path, name, flavour, technique):
    rows = zoo.run_model(name, flavour, tmp_path, ["int8"], [technique], side=32)
    by_step = {row[2]: row for row in rows}
    optimized = by_step[f"{technique} -> int8"]
    assert optimized[3] == "ok", optimized
    assert optimized[6] <= by_step["convert int8"][6], (optimized, by_step["convert int8"])
    assert optimized[8] is not None and optimized[8] < 1e-4  # the Keras 3 rebuild's max abs error
    if name.startswith("mobilenet_v2"):
        assert optimized[6] == 0  # every BatchNormalization folded into its convolution
