"""Bad input to `edgecompress optimize`: exit 2, one line naming the problem and the fix, no output file."""
from __future__ import annotations

import numpy as np
import pytest

from edgecompress.cli.main import main


@pytest.fixture(scope="module")
def files(digits, tmp_path_factory):
    """Training files that are wrong in one way each, and two models that cannot be optimized as asked."""
    from edgecompress.models import import_tf_keras

    folder = tmp_path_factory.mktemp("bad")
    x, y = digits.train.x[:64], digits.train.y[:64]
    np.savez(folder / "good.npz", x=x, y=y)
    np.savez(folder / "no_labels.npz", x=x)
    np.savez(folder / "wrong_key.npz", pixels=x, y=y)
    np.savez(folder / "wrong_shape.npz", x=x[:, :4], y=y)
    np.savez(folder / "label_range.npz", x=x, y=y + 10)

    keras = import_tf_keras()
    five = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(5, activation="softmax")])
    five.save(folder / "teacher5.keras")
    # Only a LayerNormalization holds weights: nothing TF-MOT can prune.
    norm_only = keras.Sequential([keras.Input((10,)), keras.layers.LayerNormalization(), keras.layers.Softmax()])
    norm_only.save(folder / "norm_only.keras")
    np.savez(folder / "vectors.npz", x=np.random.default_rng(0).random((32, 10), dtype=np.float32), y=y[:32] % 10)
    return folder


CASES = {
    "sparsity at 1": (["--prune", "1.0"], "--prune 1.0 is outside [0, 1)"),
    "negative sparsity": (["--prune", "-0.2"], "outside [0, 1)"),
    "unsupported pattern": (["--prune-pattern", "3:4"], "2:4"),
    "malformed pattern": (["--prune-pattern", "two-four"], "2:4"),
    "one cluster": (["--cluster", "1"], "--cluster 1 is below 2"),
    "no technique": ([], "no technique chosen"),
    "prune twice": (["--prune", "0.5", "--prune-pattern", "2:4"], "--prune and --prune-pattern exclude each other"),
    "no labels": (["--prune", "0.5", "--train", "{d}/no_labels.npz"], "no labels `y`"),
    "wrong key": (["--prune", "0.5", "--train", "{d}/wrong_key.npz"], "lacks the model input"),
    "wrong shape": (["--prune", "0.5", "--train", "{d}/wrong_shape.npz"], "reshape the data"),
    "label out of range": (["--prune", "0.5", "--train", "{d}/label_range.npz"], "class indices in [0, 10)"),
    "teacher with other classes": (["--distill-from", "{d}/teacher5.keras"], "teacher output shape"),
    "bad temperature": (["--distill-from", "{d}/teacher5.keras", "--temperature", "0"], "try --temperature 4"),
    "no patience": (["--prune", "0.5", "--patience", "0"], "patience 0 must be at least 1"),
    "no epochs": (["--prune", "0.5", "--epochs", "0"], "epochs 0 must be at least 1"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_and_no_output(case, files, digits_model_path, tmp_path, capsys):
    extra, expected = CASES[case]
    extra = [a.replace("{d}", str(files)) for a in extra]
    out = tmp_path / "out.keras"
    args = ["optimize", str(digits_model_path), "-o", str(out), "--train", str(files / "good.npz"), *extra]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_model_with_nothing_to_compress_is_refused(files, tmp_path, capsys):
    out = tmp_path / "out.keras"
    with pytest.raises(SystemExit) as exit_info:
        main(["optimize", str(files / "norm_only.keras"), "-o", str(out), "--train", str(files / "vectors.npz"),
              "--prune", "0.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert "no layer of this model supports prune" in err[-1] and err[-1].startswith("error: ")
    assert not out.exists()


def test_existing_output_needs_force(files, digits_model_path, tmp_path, capsys):
    out = tmp_path / "taken.keras"
    out.write_bytes(b"keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["optimize", str(digits_model_path), "-o", str(out), "--train", str(files / "good.npz"), "--prune", "0.5"])
    assert exit_info.value.code == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"


def test_techniques_from_settings_are_validated_and_ordered():
    """Recipes and the CLI name techniques by their settings: the registry builds them, with the same checks."""
    from edgecompress.errors import UserError
    from edgecompress.optimize import QAT, REGISTRY, Cluster, LowRank, Prune, StructuredPrune, techniques_from_settings

    assert set(REGISTRY) == {"structured_prune", "prune", "cluster", "qat", "low_rank"}
    assert techniques_from_settings({"qat": True, "prune_pattern": "2:4", "low_rank": 0.9, "cluster": 0}) == [
        LowRank(0.9), Prune(sparsity=0.5, pattern=(2, 4)), QAT()]
    assert techniques_from_settings({"prune_ffn": 0.25, "low_rank": 0.9}) == [StructuredPrune(0.0, 0.25), LowRank(0.9)]
    with pytest.raises(UserError, match="^prune_heads 1.0 is outside") as err:
        techniques_from_settings({"prune_heads": 1.0})
    assert err.value.settings == ("prune_heads",)
    assert techniques_from_settings({"prune": 0.0, "cluster": 16, "qat": False}) == [Cluster(16)]
    with pytest.raises(UserError, match="^cluster 1 is below 2"):
        techniques_from_settings({"cluster": 1})
    with pytest.raises(UserError, match="^prune and prune_pattern exclude each other") as err:
        techniques_from_settings({"prune": 0.5, "prune_pattern": "2:4"})
    assert err.value.settings == ("prune", "prune_pattern")


def test_training_that_diverges_is_a_one_line_error(files, digits_model_path, tmp_path, capsys):
    """NaN weights went on to the converter, where TensorFlow crashed (a segfault on EfficientNetB0 QAT)."""
    out = tmp_path / "out.keras"
    with pytest.raises(SystemExit) as exit_info:
        main(["optimize", str(digits_model_path), "-o", str(out), "--train", str(files / "good.npz"),
              "--prune", "0.5", "--epochs", "2", "--learning-rate", "1e12"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("error: prune training diverged") and "--learning-rate" in err[-1], err[-1]
    assert not out.exists()
