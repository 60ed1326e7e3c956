"""Fine-tuning after each technique: a seeded Keras fit that runs until the validation accuracy stops improving.

`epochs` is a maximum. Each stage keeps the weights of its best validation epoch (the highest accuracy, ties
broken by the lower loss; accuracies one validation sample apart count as ties: on 300 samples a single image
kept QAT's first epoch, 0.33 points better on validation, in 3 of 5 seeds, and that epoch then lost to TF-MOT's
last one on the test set each time). An epoch improves when it beats the best accuracy or the best loss so far: on a few
hundred validation samples accuracy moves in coarse steps while the loss still shows progress (a student trained
from scratch stopped at 95.3% on accuracy alone; on the loss as well it went on to 96.7%). The learning rate halves
after LR_PATIENCE epochs without improvement, and the stage stops after `patience` such epochs.

The snapshot is every variable of the model being trained, TF-MOT's pruning masks and cluster assignments
included, so restoring it never undoes a technique; epochs before a technique's schedule has finished
(pruning's sparsity ramp) are not compared at all, so the model kept is always at full strength.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecompress.errors import UserError
from edgecompress.models import import_tf_keras
from edgecompress.progress import bar, note
from edgecompress.optimize.data import Labeled, predictions
from edgecompress.optimize.distill import DistillationConfig, build_distiller

# Fine-tuning an already trained model converges in a few epochs; early stopping usually ends it well before.
FINE_TUNE_EPOCHS = 30
# Distillation alone trains the student, often from scratch: it needs many more epochs to converge, and a
# larger step (on validation data, the example CNN's student from scratch: 97.7% at 3e-3, 97.3% at 1e-3).
TRAIN_EPOCHS = 100
FINE_TUNE_RATE = 1e-3
TRAIN_RATE = 3e-3
LOSS_MIN_DELTA = 0.01  # a loss only counts as better when at least 1% lower: it creeps down for ever
PATIENCE = 5
# Halving on plateaus rather than a cosine schedule: early stopping leaves the length unknown, and a cosine
# over the maximum would still be at a high rate when it stops. On validation data (benchmarks/training_tuning.py)
# it pruned to the same accuracy as a constant rate in 22.5 epochs instead of 26, a student within one image.
LR_PATIENCE = 2  # below `patience`, so a lower learning rate gets its chance before training stops
LR_FACTOR = 0.5
HOLDOUT = 0.1  # share of the training data held out to stop on when no validation data is given


@dataclass(frozen=True)
class TrainSettings:
    epochs: int | None = None  # the maximum per stage; None: FINE_TUNE_EPOCHS, or TRAIN_EPOCHS for distillation alone
    patience: int = PATIENCE
    batch_size: int = 32
    learning_rate: float | None = None  # None: FINE_TUNE_RATE, or TRAIN_RATE for distillation alone
    seed: int = 0
    holdout: float = HOLDOUT

    def validate(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise UserError(f"epochs {self.epochs} must be at least 1: fine-tuning is what recovers accuracy",
                            settings=("epochs",))
        if self.patience < 1:
            raise UserError(f"patience {self.patience} must be at least 1 epoch without improvement, for example 5",
                            settings=("patience",))
        if self.batch_size < 1:
            raise UserError(f"batch_size {self.batch_size} must be at least 1", settings=("batch_size",))
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise UserError(f"learning_rate {self.learning_rate} must be positive, for example 1e-4",
                            settings=("learning_rate",))
        if not 0 < self.holdout < 1:
            raise UserError(f"holdout {self.holdout} must be a share in (0, 1), for example 0.1")

    def max_epochs(self, training_alone: bool) -> int:
        return self.epochs or (TRAIN_EPOCHS if training_alone else FINE_TUNE_EPOCHS)

    def rate(self, training_alone: bool) -> float:
        return self.learning_rate or (TRAIN_RATE if training_alone else FINE_TUNE_RATE)

    def steps_per_epoch(self, samples: int) -> int:
        return max(1, -(-samples // self.batch_size))


@dataclass(frozen=True)
class StageTraining:
    """How one stage's fine-tuning went: what ran, what was kept, and why it stopped."""

    stage: str
    max_epochs: int
    epochs_run: int
    best_epoch: int | None  # 1-based; None when no epoch could be compared
    best_val_accuracy: float | None  # accuracy of class or 0/1 labels (None for float targets)
    stop_reason: str
    metric: str = "accuracy"  # what early stopping watched: accuracy, or MAE for float targets
    best_val_score: float | None = None  # that metric at the kept epoch


@dataclass(frozen=True)
class Objective:
    """What fine-tuning minimises (per output, for several) and what early stopping watches."""

    loss: Any  # one loss, or one per output
    metrics: list[Any]  # compile()'s metrics: the target output's (per output, for several)
    key: str  # the metric's name
    label: str  # accuracy or MAE
    higher_is_better: bool
    describe: str  # the loss, said to the user
    teacher: Any = None
    distill: DistillationConfig | None = None
    output: int | None = None  # the target output's position, for a model with several

    def log_key(self, model: Any) -> str:
        """The metric's name in Keras's logs of MODEL (without "val_"): prefixed with the output's layer name,
        which TF-MOT's wrappers change, when there are several."""
        return self.key if self.output is None else f"{model.output_names[self.output]}_{self.key}"


def holdout_split(train: Labeled, share: float, seed: int) -> tuple[Labeled, Labeled]:
    """(rest, held out): a seeded random SHARE of TRAIN (at least one sample) to stop training on."""
    if len(train) < 2:
        raise UserError(f"training data has {len(train)} sample: give more, or validation data to stop on")
    order = np.random.default_rng(seed).permutation(len(train))
    n = min(len(train) - 1, max(1, round(share * len(train))))
    held, rest = np.sort(order[:n]), np.sort(order[n:])
    return train.take(rest), train.take(held)


def _probabilities(values: np.ndarray, kind: str) -> bool:
    """True when VALUES are what a softmax (kind classes) or a sigmoid (binary) gives, else logits."""
    if values.size == 0 or values.min() < 0 or values.max() > 1:
        return False
    return kind == "binary" or bool(np.allclose(values.sum(axis=-1), 1.0, atol=1e-3))


def objective_for(model: Any, train: Labeled, teacher: Any = None,
                  distill: DistillationConfig | None = None) -> Objective:
    """The loss that fits the target output and its labels (cross-entropy for classes, binary cross-entropy for
    0/1 labels, mean squared error for float targets), early stopping on the matching metric; every other output
    learns back the original's values (train.kept) so that fine-tuning keeps it."""
    keras = import_tf_keras()
    target = train.target
    sample = train.take(np.arange(min(len(train), 16)))
    values = predictions(model, sample.x)
    head = values[target.index]
    probabilities = _probabilities(head, target.kind)
    if target.kind == "classes":
        sparse = train.y.shape[1:] != head.shape[1:]
        loss = (keras.losses.SparseCategoricalCrossentropy if sparse else keras.losses.CategoricalCrossentropy)(
            from_logits=not probabilities)
        metric = "sparse_categorical_accuracy" if sparse else "categorical_accuracy"
        key, label, higher, said = metric, "accuracy", True, "cross-entropy"
    elif target.kind == "binary":
        loss = keras.losses.BinaryCrossentropy(from_logits=not probabilities)
        metric = keras.metrics.BinaryAccuracy(name="binary_accuracy", threshold=0.5 if probabilities else 0.0)
        key, label, higher, said = "binary_accuracy", "accuracy", True, "binary cross-entropy"
    else:
        loss, metric = keras.losses.MeanSquaredError(), "mean_absolute_error"
        key, label, higher, said = metric, "MAE", False, "mean squared error"
    if distill is not None and (target.kind != "classes" or target.outputs > 1):
        raise UserError("distillation learns a teacher's class probabilities: it needs a single-output model with "
                        "class labels", settings=("distill_from",))
    said = f"{said} on output {target.name}" if target.outputs > 1 else said
    if target.outputs == 1:
        return Objective(loss, [metric], key, label, higher, said, teacher, distill)
    losses, kept = [], []
    for i, original in enumerate(values):
        if i == target.index:
            losses.append(loss)
        else:  # the original's own values as soft targets
            kind = "classes" if _probabilities(original, "classes") else "binary" if _probabilities(original, "binary") \
                else "values"
            losses.append(keras.losses.CategoricalCrossentropy() if kind == "classes" else
                          keras.losses.BinaryCrossentropy() if kind == "binary" else keras.losses.MeanSquaredError())
            kept.append(model.output_names[i])
    metrics = [[metric] if i == target.index else [] for i in range(len(values))]
    said += f"; {', '.join(kept)} kept by learning back the original's outputs"
    return Objective(losses, metrics, key, label, higher, said, teacher, distill, target.index)


def seed_everything(seed: int) -> None:
    keras = import_tf_keras()
    keras.utils.set_random_seed(seed)


def convergence(
    model: Any, optimizer: Any, objective: Objective, patience: int, max_epochs: int, first_compared: int,
    val_samples: int | None = None,
) -> Any:
    """A Keras callback: keep MODEL's best validation epoch, lower the learning rate, stop, restore.

    Epochs before FIRST_COMPARED (1-based) are trained but neither kept nor counted. With VAL_SAMPLES,
    accuracies within one sample of each other are ties.
    """
    keras = import_tf_keras()
    band = 1.0 / val_samples + 1e-9 if val_samples and objective.higher_is_better else 0.0
    sign = 1.0 if objective.higher_is_better else -1.0  # scores compare higher-is-better
    key = objective.log_key(model)

    def better(score: tuple[float, float], kept: tuple[float, float], top_accuracy: float) -> bool:
        """SCORE beats KEPT: a clearly higher accuracy, or a tie (within one sample of KEPT and of the best
        accuracy seen, so that ties cannot drift down) with a lower loss."""
        if score[0] > kept[0] + band:
            return True
        return abs(score[0] - kept[0]) <= band and score[0] >= top_accuracy - band and score[1] > kept[1]

    class Convergence(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.best: tuple[float, float] | None = None  # (accuracy, -loss) of the kept epoch: higher is better
            self.records = (-np.inf, -np.inf)  # the best accuracy and the best -loss, each on its own
            self.best_epoch: int | None = None
            self.snapshot: list[np.ndarray] | None = None
            self.waited = 0
            self.epochs_run = 0
            self.stopped_early = False

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            self.epochs_run = epoch + 1
            if self.epochs_run < first_compared:
                return
            score = (sign * float(logs[f"val_{key}"]), -float(logs.get("val_loss", 0.0)))
            improved = score[0] > self.records[0] or -score[1] < -self.records[1] * (1 - LOSS_MIN_DELTA)
            if self.best is None or better(score, self.best, self.records[0]):
                self.best, self.best_epoch, improved = score, self.epochs_run, True
                self.snapshot = model.get_weights()  # masks, clusters and quantizer ranges included
            self.records = (max(score[0], self.records[0]), max(score[1], self.records[1]))
            if improved:
                self.waited = 0
                return
            self.waited += 1
            if self.waited >= patience:
                self.stopped_early = True
                self.model.stop_training = True
            elif self.waited % LR_PATIENCE == 0:
                rate = float(optimizer.learning_rate.numpy()) * LR_FACTOR
                optimizer.learning_rate.assign(rate)
                note(f"  no improvement for {self.waited} epochs: learning rate lowered to {rate:.2g}")

        def on_train_end(self, logs: dict | None = None) -> None:
            if self.snapshot is not None and self.best_epoch != self.epochs_run:
                model.set_weights(self.snapshot)

        def reason(self) -> str:
            if self.best_epoch is None:
                return (f"reached the maximum of {max_epochs} epochs before the schedule ended "
                        f"(epoch {first_compared}): nothing compared, last epoch kept")
            restored = f"; restored epoch {self.best_epoch}" if self.best_epoch != self.epochs_run else ""
            if self.stopped_early:
                return (f"stopped at epoch {self.epochs_run}: val {objective.label} and loss did not improve for "
                        f"{patience} epochs{restored}")
            return f"reached the maximum of {max_epochs} epochs{restored}"

    return Convergence()


def epoch_progress(label: str, epochs: int, steps: int, objective: Objective, first_compared: int) -> Any:
    """A Keras callback: one progress bar per epoch (batches), then a line with loss and the val metric."""
    keras = import_tf_keras()

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._stack = contextlib.ExitStack()
            self._bar = self._stack.enter_context(bar(range(steps), f"{label} epoch {epoch + 1}/{epochs} (at most)"))

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self._bar.update(1)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self._stack.close()
            logs = logs or {}
            val = logs.get(f"val_{objective.log_key(self.model)}", float("nan"))
            ramp = "  (schedule still running: not compared)" if epoch + 1 < first_compared else ""
            note(f"  epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f}  val {objective.label} {val:.4f}{ramp}")

    return EpochProgress()


def stop_on_nan() -> Any:
    """A Keras callback ending training at the first NaN or infinite batch loss (Keras's TerminateOnNaN does
    the same but prints to stdout, which --json keeps for its answer)."""
    keras = import_tf_keras()

    class StopOnNaN(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(float(loss)):
                self.model.stop_training = True

    return StopOnNaN()


def fine_tune(
    model: Any,
    objective: Objective,
    train: Labeled,
    val: Labeled,
    settings: TrainSettings,
    callbacks: list[Any],
    label: str,
    training_alone: bool = False,
    first_compared: int = 1,
) -> StageTraining:
    """Train MODEL in place until VAL stops improving, keeping its best epoch, reproducibly for a given seed.

    TRAINING_ALONE (distillation alone) gets the longer budget; FIRST_COMPARED: the first epoch (1-based)
    whose end shows the technique at full strength.
    """
    keras = import_tf_keras()
    seed_everything(settings.seed)
    max_epochs = settings.max_epochs(training_alone)
    optimizer = keras.optimizers.Adam(settings.rate(training_alone))
    if objective.distill is not None:
        # The distiller trains MODEL itself (its variables, its TF-MOT wrappers) against the teacher.
        cfg = objective.distill
        trainer = build_distiller(model, objective.teacher, cfg.temperature, cfg.alpha, metric=objective.key)
        trainer.compile(optimizer=optimizer)
    else:
        trainer = model
        trainer.compile(optimizer=optimizer, loss=objective.loss, metrics=objective.metrics)
    first_compared = min(first_compared, max_epochs)
    steps = settings.steps_per_epoch(len(train))
    stopper = convergence(model, optimizer, objective, settings.patience, max_epochs, first_compared, len(val))
    progress = epoch_progress(label, max_epochs, steps, objective, first_compared)
    diverged = stop_on_nan()
    trainer.fit(
        train.feed(),
        train.targets(),
        validation_data=(val.feed(), val.targets()),
        epochs=max_epochs,
        batch_size=settings.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[*callbacks, progress, stopper, diverged],  # progress first: its line precedes the stopper's
    )
    if not all(np.isfinite(w).all() for w in model.get_weights()):
        # Left alone, the NaN weights went on to crash TensorFlow inside the int8 converter (a segfault).
        raise UserError(f"{label} training diverged (the loss became NaN): lower learning_rate, "
                        "or check that the training inputs have the scale the model expects",
                        settings=("learning_rate",))
    best = None if stopper.best is None else (stopper.best[0] if objective.higher_is_better else -stopper.best[0])
    result = StageTraining(
        stage=label,
        max_epochs=max_epochs,
        epochs_run=stopper.epochs_run,
        best_epoch=stopper.best_epoch,
        best_val_accuracy=best if objective.label == "accuracy" else None,
        stop_reason=stopper.reason(),
        metric=objective.label,
        best_val_score=best,
    )
    note(f"{label}: {result.stop_reason}")
    return result
