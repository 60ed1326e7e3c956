"""Shared fixtures: the bundled digits, a trained example model, reference .tflite files, and a
runtime-only virtual environment (numpy, click, ai-edge-litert; no TensorFlow).

Expensive things are built once per session. The reference .tflite files are made with a plain
TFLiteConverter so that tests of inspect and benchmark do not depend on edgecompress's own converter.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import LM_SHAPE

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def digits():
    from edgecompress.datasets import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="session")
def digits_model(digits):
    """The example CNN trained on the bundled digits (tf-keras), about 99% test accuracy."""
    from edgecompress.examples import train_digits_cnn

    return train_digits_cnn(epochs=15, seed=0, data=digits)


@pytest.fixture(scope="session")
def digits_model_path(digits_model, session_dir) -> Path:
    path = session_dir / "digits.keras"
    digits_model.save(path)
    return path


@pytest.fixture(scope="session")
def test_npz(digits, session_dir) -> Path:
    """The held-out split as an edgecompress data file (x, y)."""
    return digits.test.save_npz(session_dir / "digits_test.npz")


@pytest.fixture(scope="session")
def val_npz(digits, session_dir) -> Path:
    """The validation split (x, y): what early stopping and --max-drop decide on (the test split scores)."""
    return digits.val.save_npz(session_dir / "digits_val.npz")


@pytest.fixture(scope="session")
def calib_npz(digits, session_dir) -> Path:
    """200 training images under `x` (and labels under `y`) for calibration."""
    from edgecompress.datasets import Split

    return Split(digits.train.x[:200], digits.train.y[:200]).save_npz(session_dir / "digits_calib.npz")


def _plain_convert(model, int8_from: np.ndarray | None = None) -> bytes:
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, 8, 8, 1], tf.float32)
    )
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    if int8_from is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([s[None]] for s in int8_from)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


@pytest.fixture(scope="session")
def float_tflite(digits_model, session_dir) -> Path:
    """The example model as a float32 .tflite, made by a plain TFLiteConverter."""
    path = session_dir / "digits_float.tflite"
    path.write_bytes(_plain_convert(digits_model))
    return path


@pytest.fixture(scope="session")
def int8_tflite(digits_model, digits, session_dir) -> Path:
    """The example model as a full-integer int8 .tflite (int8 I/O), made by a plain TFLiteConverter."""
    path = session_dir / "digits_int8.tflite"
    path.write_bytes(_plain_convert(digits_model, int8_from=digits.train.x[:100]))
    return path


@pytest.fixture(scope="session")
def runtime_venv(tmp_path_factory) -> Path:
    """A virtual environment with only the runtime side installed: returns its python executable.

    This is what a Raspberry Pi user has (pip install 'edgecompress[quantize]'): numpy, click, ai-edge-litert,
    and litert-quantizer for `quantize` (it brings no TensorFlow).
    """
    root = tmp_path_factory.mktemp("runtime-venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    python = root / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + [f"{REPO}[quantize]"], check=True)
    probe = subprocess.run([str(python), "-c", "import tensorflow"], capture_output=True)
    assert probe.returncode != 0, "the runtime-only environment must not have TensorFlow"
    return python


@pytest.fixture(scope="session")
def plain_convert():
    """The plain-TFLiteConverter path above, for tests that convert their own variants of the example model:
    plain_convert(model, int8_from=None) -> .tflite bytes."""
    return _plain_convert


@pytest.fixture()
def run_cli(capsys):
    """Run the CLI in-process through main(), exit-code policy included: returns (code, stdout, stderr)."""
    from edgecompress.cli.main import main

    def run(args) -> tuple[int, str, str]:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def emulation_tools():
    """qemu-user-static and debootstrap for check's emulated userland, installed with apt-get when missing (root
    in CI), since the command itself installs nothing as root."""
    from apt_packages import ensure_packages

    from edgecompress.devices.userland import missing_tools

    ensure_packages(missing_tools())


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A throwaway SSH server on 127.0.0.1 (tools/loopback_sshd.py), stopped when the session ends."""
    from loopback_sshd import loopback_sshd

    with loopback_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def lm_folder(tmp_path_factory):
    """A small LM trained two epochs on the bundled reviews, its tokenizer.json beside it, and token windows:
    windows.npz (x only, to validate exports), lm_train.npz and lm_val.npz (x and the next tokens y, to train)."""
    from edgecompress.text.bpe import train_bpe
    from edgecompress.text.data import texts_by_split
    from edgecompress.text.lm import LMShape, build_causal_lm, token_windows, train_causal_lm

    folder = tmp_path_factory.mktemp("lm")
    texts = texts_by_split()
    tokenizer = train_bpe(texts["train"], 512)
    tokenizer.save(folder / "tokenizer.json")
    train = token_windows(tokenizer, texts["train"][:2000], LM_SHAPE["seq_len"])
    val = token_windows(tokenizer, texts["val"][:300], LM_SHAPE["seq_len"])
    model = train_causal_lm(build_causal_lm(LMShape(tokenizer.size, **LM_SHAPE)), train, val, epochs=2,
                            learning_rate=3e-3)
    model.save(folder / "lm.keras")
    np.savez(folder / "windows.npz", x=val[:, :LM_SHAPE["seq_len"]])
    for name, windows in (("lm_train", train), ("lm_val", val)):
        np.savez(folder / f"{name}.npz", x=windows[:, :-1], y=windows[:, 1:])
    return folder
