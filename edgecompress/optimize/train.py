"""Fine-tuning after each technique: a seeded Keras fit with a per-epoch progress bar on stderr."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecompress.errors import UserError
from edgecompress.models import import_tf_keras
from edgecompress.progress import bar, note
from edgecompress.optimize.data import Labeled
from edgecompress.optimize.distill import DistillationConfig, build_distiller


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0

    def validate(self) -> None:
        if self.epochs < 1:
            raise UserError(f"epochs {self.epochs} must be at least 1: fine-tuning is what recovers accuracy",
                            settings=("epochs",))
        if self.batch_size < 1:
            raise UserError(f"batch_size {self.batch_size} must be at least 1", settings=("batch_size",))
        if not self.learning_rate > 0:
            raise UserError(f"learning_rate {self.learning_rate} must be positive, for example 1e-4",
                            settings=("learning_rate",))

    def steps_per_epoch(self, samples: int) -> int:
        return max(1, -(-samples // self.batch_size))


@dataclass(frozen=True)
class Objective:
    """What fine-tuning minimises: the loss on the labels, or distillation from a teacher when one is given."""

    loss: Any
    metric: str
    teacher: Any = None
    distill: DistillationConfig | None = None


def outputs_probabilities(model: Any, sample: Labeled) -> bool:
    """True when the model ends in a softmax (rows of non-negative values summing to 1), else logits."""
    out = np.asarray(model(sample.x[0][:16] if len(sample.x) == 1 else [x[:16] for x in sample.x], training=False))
    return bool(np.all(out >= 0) and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))


def classification(
    model: Any, train: Labeled, teacher: Any = None, distill: DistillationConfig | None = None
) -> Objective:
    keras = import_tf_keras()
    logits = not outputs_probabilities(model, train)
    if train.y.ndim == 1:
        loss, metric = keras.losses.SparseCategoricalCrossentropy(from_logits=logits), "sparse_categorical_accuracy"
    else:
        loss, metric = keras.losses.CategoricalCrossentropy(from_logits=logits), "categorical_accuracy"
    return Objective(loss, metric, teacher, distill)


def seed_everything(seed: int) -> None:
    keras = import_tf_keras()
    keras.utils.set_random_seed(seed)


def epoch_progress(label: str, epochs: int, steps: int, metric: str) -> Any:
    """A Keras callback: one progress bar per epoch (batches), then a line with loss and val accuracy."""
    keras = import_tf_keras()

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._stack = contextlib.ExitStack()
            self._bar = self._stack.enter_context(bar(range(steps), f"{label} epoch {epoch + 1}/{epochs}"))

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self._bar.update(1)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self._stack.close()
            logs = logs or {}
            val = logs.get(f"val_{metric}")
            accuracy = f"  val accuracy {val:.4f}" if val is not None else ""
            note(f"  loss {logs.get('loss', float('nan')):.4f}{accuracy}")

    return EpochProgress()


def fine_tune(
    model: Any,
    objective: Objective,
    train: Labeled,
    val: Labeled | None,
    settings: TrainSettings,
    callbacks: list[Any],
    label: str,
) -> None:
    """Train MODEL in place for settings.epochs, reproducibly for a given seed."""
    keras = import_tf_keras()
    seed_everything(settings.seed)
    optimizer = keras.optimizers.Adam(settings.learning_rate)
    if objective.distill is not None:
        # The distiller trains MODEL itself (its variables, its TF-MOT wrappers) against the teacher.
        cfg = objective.distill
        trainer = build_distiller(model, objective.teacher, cfg.temperature, cfg.alpha, metric=objective.metric)
        trainer.compile(optimizer=optimizer)
    else:
        trainer = model
        trainer.compile(optimizer=optimizer, loss=objective.loss, metrics=[objective.metric])
    steps = settings.steps_per_epoch(len(train))
    progress = epoch_progress(label, settings.epochs, steps, objective.metric)
    trainer.fit(
        train.feed(),
        train.y,
        validation_data=(val.feed(), val.y) if val is not None else None,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[*callbacks, progress],
    )
