"""Training that cannot take the process down (issue 18): TF 2.21's oneDNN kernels crash while training a Conv2D
with a 1x1 kernel and stride 2 on an even-sized feature map (fer's emotion CNN, every ResNet shortcut).
edgecompress imports TensorFlow with oneDNN off (benchmarks/onednn_training.py: its cost), and `optimize` trains
in a child process, so a crash that still happens is one line naming the stage and the signal."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def shortcut_model(tmp_path_factory):
    """A Keras 2 .h5 with fer's crashing layer: a 1x1 stride-2 convolution on a 64x64 map."""
    from edgecompress.models import import_tf_keras

    k = import_tf_keras()
    k.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("shortcut")
    inp = k.Input((64, 64, 1), name="face")
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = k.layers.Conv2D(16, 1, strides=2, name="shortcut")(x)
    model = k.Model(inp, k.layers.Dense(3, activation="softmax")(k.layers.GlobalAveragePooling2D()(x)))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.save(folder / "shortcut.h5")
    rng = np.random.default_rng(0)
    np.savez(folder / "train.npz", x=rng.random((64, 64, 64, 1)).astype("float32"), y=np.arange(64) % 3)
    return folder


def test_pruning_a_model_with_a_strided_1x1_convolution_trains(run_cli, shortcut_model, monkeypatch):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    out = shortcut_model / "pruned.h5"
    code, _, err = run_cli(["optimize", shortcut_model / "shortcut.h5", "-o", out, "--train",
                            shortcut_model / "train.npz", "--prune", "0.5", "--epochs", "2"])
    assert code == 0, err
    assert out.exists()


def test_a_native_crash_in_training_is_one_line_naming_the_stage(run_cli, shortcut_model, monkeypatch):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")  # the user turned oneDNN back on: TensorFlow's bug returns
    out = shortcut_model / "crashed.h5"
    code, stdout, err = run_cli(["optimize", shortcut_model / "shortcut.h5", "-o", out, "--train",
                                 shortcut_model / "train.npz", "--prune", "0.5", "--epochs", "2", "--json"])
    assert code == 1 and stdout == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: optimize crashed in native code in its prune stage (SIG"), err
    assert "Traceback" not in err and not out.exists()
