"""optimize on small real models: each technique and combination, checked on the saved model and, for
QAT, on the int8 .tflite (sparsity and cluster counts must survive conversion); training until convergence:
early stopping keeps the best epoch, a seeded hold-out stands in for missing validation data, pruning's masks
survive a restore, and distillation alone trains a student from scratch."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from edgecompress.cli.main import main
from edgecompress.datasets import Split

EPOCHS = 1


@pytest.fixture(scope="module")
def train_npz(digits, tmp_path_factory):
    """A 400-image training subset: enough to fine-tune in a second or two per epoch."""
    return Split(digits.train.x[:400], digits.train.y[:400]).save_npz(tmp_path_factory.mktemp("opt") / "train.npz")


def _kernels(model):
    """(layer name, kernel) of each Dense / Conv2D layer, looking through QAT wrappers."""
    found = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if type(inner).__name__ in ("Dense", "Conv2D"):
            found.append((inner.name, inner.kernel.numpy()))
    return found


def _run(model, out, train, techniques, val=None, **settings):
    from edgecompress.optimize import TrainSettings, optimize

    return optimize(model, out, train, techniques, val=val, settings=TrainSettings(epochs=EPOCHS, **settings))


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_prune_reaches_sparsity_reports_json_and_leaves_source_file(
    digits_model_path, train_npz, val_npz, tmp_path, capsys
):
    from edgecompress.models import load_model

    before = _sha(digits_model_path)
    out = tmp_path / "pruned.keras"
    main(["optimize", str(digits_model_path), "-o", str(out), "--train", str(train_npz), "--val", str(val_npz),
          "--prune", "0.8", "--epochs", "2", "--json"])  # returns on success, exits on errors
    report = json.loads(capsys.readouterr().out)
    assert _sha(digits_model_path) == before
    assert report["output"] == str(out) and report["techniques"] == ["prune"]
    assert report["skipped_layers"] == []
    assert report["before"]["params"] == report["after"]["params"]
    assert report["after"]["nonzero_params"] < 0.25 * report["before"]["nonzero_params"]
    assert report["after"]["saved_gzip_bytes"] < report["before"]["saved_gzip_bytes"] / 3
    assert report["after"]["val_accuracy"] > 0.85
    model = load_model(out).model
    assert not any("Prune" in type(layer).__name__ for layer in model.layers), "pruning wrappers must be stripped"
    for name, kernel in _kernels(model):
        assert np.mean(kernel == 0) >= 0.79, name


def test_2_4_pattern_holds_and_in_memory_source_is_unchanged(digits_model, train_npz, tmp_path):
    from edgecompress.optimize import Prune

    snapshot = [w.copy() for w in digits_model.get_weights()]
    result = _run(digits_model, tmp_path / "p24.keras", train_npz, [Prune(pattern=(2, 4))])
    for old, new in zip(snapshot, digits_model.get_weights()):
        np.testing.assert_array_equal(old, new)
    from edgecompress.models import load_model

    checked = 0
    for name, kernel in _kernels(load_model(result.output).model):
        # TFLite layout: output channels first, groups of 4 along the input channels (last axis).
        rows = np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)
        if rows.shape[1] % 4:
            continue  # conv1 has a single input channel: no group of 4 to prune
        groups = rows.reshape(-1, 4)
        assert np.all(np.sum(groups == 0, axis=1) >= 2), name
        checked += 1
    assert checked == 3


@pytest.mark.parametrize("prune_first", [False, True], ids=["cluster", "prune+cluster"])
def test_clustering_limits_distinct_values(digits_model_path, train_npz, tmp_path, prune_first):
    from edgecompress.models import load_model
    from edgecompress.optimize import Cluster, Prune

    techniques = ([Prune(0.6)] if prune_first else []) + [Cluster(8)]
    result = _run(digits_model_path, tmp_path / "c.keras", train_npz, techniques)
    assert result.techniques == [t.name for t in techniques]
    for name, kernel in _kernels(load_model(result.output).model):
        assert np.unique(kernel).size <= 8, name
        if prune_first:  # sparsity-preserving clustering keeps the pruned zeros
            assert np.mean(kernel == 0) >= 0.59, name


def _per_channel_distinct(path):
    """Largest count of distinct stored values in one output channel, over the int8 weight tensors."""
    from edgecompress.tflite_reader import read_model

    worst = 0
    for t in read_model(path).main.tensors:
        if t.is_constant and t.dtype == "int8" and t.data is not None and t.data.ndim >= 2:
            worst = max(worst, max(np.unique(channel).size for channel in t.data))
    return worst


@pytest.mark.parametrize(
    "names", [("qat",), ("prune", "qat"), ("cluster", "qat"), ("prune", "cluster", "qat")], ids="+".join
)
def test_qat_combinations_convert_to_int8_and_keep_structure(
    digits_model_path, train_npz, calib_npz, test_npz, tmp_path, names
):
    from edgecompress.converters.convert import convert_model
    from edgecompress.evaluate import evaluate
    from edgecompress.inspect import inspect_model
    from edgecompress.models import load_model
    from edgecompress.optimize import QAT, Cluster, Prune

    make = {"prune": lambda: Prune(0.75), "cluster": lambda: Cluster(8), "qat": QAT}
    result = _run(digits_model_path, tmp_path / "q.keras", train_npz, [make[n]() for n in names])
    loaded = load_model(result.output)
    assert any(type(layer).__name__ == "QuantizeWrapperV2" for layer in loaded.model.layers)

    tflite = tmp_path / "q.tflite"
    convert_model(result.output, tflite, quantize="int8", calibration=calib_npz)
    report = inspect_model(tflite)
    assert report.integer_model
    kernels = [w for w in report.weights if w.dtype == "int8" and len(w.shape) >= 2]
    assert len(kernels) == 4
    if "prune" in names:
        assert all(w.sparsity >= 0.74 for w in kernels), [(w.name, w.sparsity) for w in kernels]
    if "cluster" in names:
        # Per-channel scales map one float centroid to one int8 value per channel.
        assert _per_channel_distinct(tflite) <= 8
    else:
        assert _per_channel_distinct(tflite) > 8
    assert evaluate(tflite, test_npz).accuracy >= 0.9


@pytest.fixture(scope="module")
def attention_model(digits, tmp_path_factory):
    """Digits read as 8 rows of 8 pixels through attention: MultiHeadAttention and LayerNormalization."""
    from edgecompress.models import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8), name="rows")
    x = keras.layers.Dense(16, name="proj")(inp)
    x = keras.layers.MultiHeadAttention(2, 8, name="mha")(x, x)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    out = keras.layers.Dense(10, activation="softmax", name="probs")(x)
    folder = tmp_path_factory.mktemp("attention")
    path = folder / "attention.keras"
    keras.Model(inp, out).save(path)
    data = folder / "rows.npz"
    np.savez(data, x=digits.train.x[:300, ..., 0], y=digits.train.y[:300])
    return path, data


def test_unsupported_layers_are_skipped_and_reported(attention_model, tmp_path):
    from edgecompress.models import load_model
    from edgecompress.optimize import QAT, Cluster, Prune

    path, data = attention_model
    result = _run(path, tmp_path / "att.h5", data, [Prune(0.5), Cluster(8), QAT()])
    skipped = {(s.layer, s.technique) for s in result.skipped_layers}
    assert skipped == {("ln", "prune"), ("ln", "cluster"), ("mha", "qat"), ("ln", "qat")}
    assert all(s.reason for s in result.skipped_layers)
    model = load_model(result.output).model
    wrapped = {layer.layer.name for layer in model.layers if hasattr(layer, "layer")}
    assert {"proj", "probs"} <= wrapped and "mha" not in wrapped
    # mha was pruned and clustered, then frozen while QAT fine-tuned the rest: both survive.
    for w in model.get_layer("mha").weights:
        if "kernel" in w.name:
            assert np.mean(w.numpy() == 0) >= 0.45 and np.unique(w.numpy()).size <= 8, w.name


def test_same_seed_gives_the_same_model(attention_model, tmp_path):
    from edgecompress.models import load_model
    from edgecompress.optimize import Prune

    path, data = attention_model
    runs = [_run(path, tmp_path / f"s{i}.keras", data, [Prune(0.5)], seed=7).output for i in range(2)]
    a, b = (load_model(p).model.get_weights() for p in runs)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_keras3_model_file_is_rebuilt_and_optimized(digits, train_npz, tmp_path):
    from edgecompress.models import import_tf, load_model
    from edgecompress.optimize import Prune

    import_tf()
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    path = tmp_path / "k3.keras"
    model.save(path)
    result = _run(path, tmp_path / "k3_pruned.keras", train_npz, [Prune(0.5)])
    out = load_model(result.output)
    assert out.flavour == "tf-keras"
    assert result.after.nonzero_params < 0.6 * result.before.nonzero_params


# ---------------------------------------------------------------- training until convergence


def _watching_acc():
    """An objective whose metric Keras logs as `acc`, higher is better."""
    from edgecompress.optimize.train import Objective

    return Objective(loss=None, metrics=["acc"], key="acc", label="accuracy", higher_is_better=True, describe="")


def _tiny_model():
    from edgecompress.models import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    return model


def test_convergence_keeps_the_best_epoch_lowers_the_rate_and_stops():
    from edgecompress.optimize.train import LR_FACTOR, LR_PATIENCE, convergence

    assert LR_PATIENCE < 3
    model = _tiny_model()
    callback = convergence(model, model.optimizer, _watching_acc(), patience=3, max_epochs=10, first_compared=2)
    callback.set_model(model)
    # Epoch 1 ends before the technique's schedule does: never kept, however good. Epoch 4 ties epoch 3's
    # accuracy with a lower loss: kept. Epoch 6 has a record loss but a lower accuracy: it resets the wait but
    # is not kept. Epochs 7-9 improve nothing: stop after 9, back to 4.
    accuracies = [0.9, 0.5, 0.7, 0.7, 0.6, 0.65, 0.6, 0.6, 0.6, 0.8]
    losses = [0.1, 0.5, 0.4, 0.3, 0.4, 0.25, 0.4, 0.4, 0.4, 0.2]
    kernels = []
    for epoch, (acc, loss) in enumerate(zip(accuracies, losses)):
        kernels.append(np.full((4, 2), float(epoch), np.float32))
        model.layers[0].kernel.assign(kernels[-1])
        callback.on_epoch_end(epoch, {"val_acc": acc, "val_loss": loss})
        if epoch + 1 == 6 + LR_PATIENCE:
            assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.1 * LR_FACTOR)
        if model.stop_training:
            break
    assert epoch + 1 == 9
    callback.on_train_end()
    assert callback.best_epoch == 4
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), kernels[3])
    assert callback.reason() == ("stopped at epoch 9: val accuracy and loss did not improve for 3 epochs; "
                                 "restored epoch 4")


def test_accuracies_one_validation_sample_apart_are_ties_broken_by_the_loss():
    """On 10 validation samples 0.1 is one sample: epoch 2 (one sample lower, far lower loss) is kept; epoch 3,
    within one sample of epoch 2 but two below the best accuracy seen, is not (ties do not drift down);
    epoch 4, clearly better, is."""
    from edgecompress.optimize.train import convergence

    model = _tiny_model()
    callback = convergence(model, model.optimizer, _watching_acc(), patience=5, max_epochs=10, first_compared=1,
                           val_samples=10)
    callback.set_model(model)
    kept = []
    for epoch, (acc, loss) in enumerate([(0.8, 0.5), (0.7, 0.3), (0.6, 0.2), (0.9, 0.4)]):
        callback.on_epoch_end(epoch, {"val_acc": acc, "val_loss": loss})
        kept.append(callback.best_epoch)
    assert kept == [1, 2, 2, 4]


def test_holdout_is_a_seeded_disjoint_share_of_the_training_data(digits):
    from edgecompress.optimize.data import Labeled, Target
    from edgecompress.optimize.train import holdout_split

    data = Labeled([digits.train.x[:400]], digits.train.y[:400], Target(0, "probs", "classes", 1))
    fit, held = holdout_split(data, 0.1, seed=0)
    again = holdout_split(data, 0.1, seed=0)[1]
    other = holdout_split(data, 0.1, seed=1)[1]
    assert (len(fit), len(held)) == (360, 40)
    np.testing.assert_array_equal(held.x[0], again.x[0])
    assert not np.array_equal(held.x[0], other.x[0])
    rows = {r.tobytes() for r in fit.x[0]}
    assert not any(r.tobytes() in rows for r in held.x[0])


def test_without_val_training_stops_on_the_held_out_share(digits_model_path, train_npz, tmp_path, capsys):
    from edgecompress.optimize import Cluster, TrainSettings, optimize

    result = optimize(digits_model_path, tmp_path / "c.keras", train_npz, [Cluster(8)],
                      settings=TrainSettings(epochs=2, patience=1))
    assert result.stopped_on == "40 training samples held out (10%, seed 0)"
    assert "no validation data: early stopping watches 40 training samples held out" in capsys.readouterr().err
    [stage] = result.training
    assert stage.best_val_accuracy is not None and stage.epochs_run <= 2


def test_early_stopping_restores_the_best_epoch_and_says_why(digits_model_path, train_npz, val_npz, tmp_path,
                                                              capsys):
    # A learning rate far too high makes every epoch after the first worse: training must stop and go back.
    main(["optimize", str(digits_model_path), "-o", str(tmp_path / "q.keras"), "--train", str(train_npz),
          "--val", str(val_npz), "--cluster", "8", "--epochs", "20", "--patience", "2", "--learning-rate", "0.02",
          "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    [stage] = report["training"]
    assert stage["best_epoch"] < stage["epochs_run"] < 20
    assert stage["stop_reason"] == (f"stopped at epoch {stage['epochs_run']}: val accuracy and loss did not "
                                    f"improve for 2 epochs; restored epoch {stage['best_epoch']}")
    assert f"cluster: {stage['stop_reason']}" in captured.err
    assert report["after"]["val_accuracy"] == pytest.approx(stage["best_val_accuracy"])  # the kept epoch is saved


def test_pruning_keeps_its_final_sparsity_through_early_stopping(digits_model_path, train_npz, val_npz, calib_npz,
                                                                 tmp_path):
    from edgecompress.converters.convert import convert_model
    from edgecompress.inspect import inspect_model
    from edgecompress.optimize import Prune, TrainSettings, optimize
    from edgecompress.optimize.prune import RAMP_SHARE

    settings = TrainSettings(epochs=8, patience=1)
    result = optimize(digits_model_path, tmp_path / "p.keras", train_npz, [Prune(0.8)], val=val_npz,
                      settings=settings)
    [stage] = result.training
    ramp = int(8 * RAMP_SHARE)
    assert ramp <= stage.best_epoch, stage  # nothing kept from inside the ramp, where sparsity is lower
    tflite = tmp_path / "p.tflite"
    convert_model(result.output, tflite, quantize="int8", calibration=calib_npz)
    kernels = [w for w in inspect_model(tflite).weights if w.dtype == "int8" and len(w.shape) >= 2]
    assert len(kernels) == 4 and all(w.sparsity >= 0.79 for w in kernels), [(w.name, w.sparsity) for w in kernels]


def test_distillation_alone_trains_a_student_from_scratch_close_to_the_teacher(digits, digits_model_path,
                                                                                tmp_path):
    from edgecompress.examples import build_digits_cnn
    from edgecompress.optimize import DistillationConfig, optimize
    from edgecompress.optimize.train import FINE_TUNE_EPOCHS

    folder = tmp_path / "d"
    folder.mkdir()
    train, val = digits.train.save_npz(folder / "train.npz"), digits.val.save_npz(folder / "val.npz")
    student = build_digits_cnn(seed=3, width=8, dense=32)  # 9.8K parameters against the teacher's 72K
    result = optimize(student, folder / "student.keras", train, [], val=val,
                      distill=DistillationConfig(digits_model_path))  # the default settings
    teacher = _val_accuracy(digits_model_path, digits)
    [stage] = result.training
    assert stage.max_epochs > FINE_TUNE_EPOCHS  # training from scratch gets the longer budget
    assert result.before.val_accuracy < 0.3
    assert result.after.val_accuracy >= teacher - 0.02, (result.after.val_accuracy, teacher, stage)


def _val_accuracy(path, digits) -> float:
    from edgecompress.examples import accuracy
    from edgecompress.models import load_model

    return accuracy(load_model(path).model, digits.val.x, digits.val.y)
