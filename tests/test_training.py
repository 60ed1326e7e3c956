"""Fine-tuning until convergence: early stopping keeps the best epoch, a seeded hold-out stands in for missing
validation data, pruning's masks survive a restore, and distillation alone trains a student from scratch."""
from __future__ import annotations

import numpy as np
import pytest

from edgecompress.datasets import Split


@pytest.fixture(scope="module")
def train_npz(digits, tmp_path_factory):
    return Split(digits.train.x[:400], digits.train.y[:400]).save_npz(tmp_path_factory.mktemp("fit") / "train.npz")


@pytest.fixture(scope="module")
def val_npz(digits, tmp_path_factory):
    return digits.val.save_npz(tmp_path_factory.mktemp("fit") / "val.npz")


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
    callback = convergence(model, model.optimizer, "acc", patience=3, max_epochs=10, first_compared=2)
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
    assert callback.reason() == "stopped at epoch 9: val accuracy and loss did not improve for 3 epochs; restored epoch 4"


def test_holdout_is_a_seeded_disjoint_share_of_the_training_data(digits):
    from edgecompress.optimize.data import Labeled
    from edgecompress.optimize.train import holdout_split

    data = Labeled([digits.train.x[:400]], digits.train.y[:400])
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
    from edgecompress.cli.main import main
    import json

    # A learning rate far too high makes every epoch after the first worse: training must stop and go back.
    main(["optimize", str(digits_model_path), "-o", str(tmp_path / "q.keras"), "--train", str(train_npz),
          "--val", str(val_npz), "--cluster", "8", "--epochs", "20", "--patience", "2", "--learning-rate", "0.05",
          "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    [stage] = report["training"]
    assert stage["best_epoch"] < stage["epochs_run"] < 20
    assert stage["stop_reason"] == (f"stopped at epoch {stage['epochs_run']}: val accuracy and loss did not improve for "
                                    f"2 epochs; restored epoch {stage['best_epoch']}")
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
