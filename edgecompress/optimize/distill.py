"""Knowledge distillation: the model being compressed (the student) learns from a teacher's soft targets.

loss = alpha * CE(y, student) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

The T^2 factor keeps the soft-target gradients on the scale of the hard-label ones (Hinton et al., 2015).

Logits of a model ending in softmax are recovered as log-probabilities. softmax is shift-invariant and
log softmax(z) = z - logsumexp(z), so softmax(log p / T) == softmax(z / T) and CE from log p equals CE from
z: the loss is exactly the one on the true logits. Unlike cutting the model before its softmax (a
sub-model, or the last Dense kernel applied by hand), it runs every layer's own call, so TF-MOT wrappers
on the student (pruning masks, fake quantisation) stay in force while it is distilled. The clamp before
the log only matters when a probability underflows float32 (a logit gap above ~87), where that class's
soft target is nil anyway.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.errors import UserError
from edgecompress.models import import_tf, import_tf_keras, load_model
from edgecompress.optimize.rebuild import as_tf_keras


DISTILLATION = "distillation"  # its name in results, beside the names of the registered techniques


@dataclass(frozen=True)
class DistillationConfig:
    """The teacher, temperature T and alpha A of distillation, validated on creation."""

    teacher_path: Path
    temperature: float = 4.0
    alpha: float = 0.1  # weight of the hard-label loss; 1 - alpha goes to the teacher's soft targets

    def __post_init__(self) -> None:
        object.__setattr__(self, "teacher_path", Path(self.teacher_path))
        if not self.temperature > 0:
            raise UserError(f"temperature {self.temperature} must be above 0: try temperature 4",
                            settings=("temperature",))
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"alpha {self.alpha} is outside [0, 1]: it weighs the true labels, try alpha 0.1",
                            settings=("alpha",))

    def describe(self) -> str:
        return (f"distil from {self.teacher_path.name} "
                f"(temperature {self.temperature:g}, alpha {self.alpha:g} on the true labels)")


def _final_layer(model: Any) -> Any:
    layer = model.layers[-1]
    while hasattr(layer, "layer"):  # TF-MOT wrappers hold the real layer
        layer = layer.layer
    while hasattr(layer, "layers") and layer.layers:  # a nested model's last layer
        layer = _final_layer(layer)
    return layer


def ends_in_softmax(model: Any) -> bool:
    """True when MODEL ends in softmax, False when it outputs logits; other activations are refused."""
    keras = import_tf_keras()
    if len(model.outputs) != 1:
        raise UserError(
            f"distillation needs a model with one output; {model.name} has {len(model.outputs)}: "
            "distil a single-output classifier"
        )
    layer = _final_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    while hasattr(activation, "activation"):  # QAT's QuantizeAwareActivation holds the real one
        activation = activation.activation
    activation = getattr(activation, "__name__", "linear")
    if activation == "softmax":
        return True
    if activation == "linear":
        return False
    raise UserError(
        f"distillation needs a classifier ending in softmax or in linear logits; "
        f"{model.name}'s last layer {layer.name} uses {activation}: change it to softmax"
    )


def as_logits(outputs: Any, probabilities: bool) -> Any:
    """Logits up to a per-row constant (all the loss needs) from a model's outputs."""
    if not probabilities:
        return outputs
    tf = import_tf()
    tiny = np.finfo(np.float32).tiny
    return tf.math.log(tf.maximum(tf.cast(outputs, tf.float32), tiny))


def distillation_loss(y: Any, student_logits: Any, teacher_logits: Any, temperature: float, alpha: float) -> Any:
    """Mean over the batch of alpha*CE(y, student) + (1-alpha)*T^2*KL(teacher_T || student_T).

    Y holds class indices (N,) or one-hot rows (N, C); for a language model, the next token at every position
    (N, T) against logits (N, T, vocab): the mean is then over every position of the batch.
    """
    tf = import_tf()
    student_logits = tf.cast(student_logits, tf.float32)
    teacher_logits = tf.cast(teacher_logits, tf.float32)
    if len(y.shape) == len(student_logits.shape):
        hard = tf.nn.softmax_cross_entropy_with_logits(tf.cast(y, tf.float32), student_logits)
    else:
        labels = tf.reshape(tf.cast(y, tf.int32), tf.shape(student_logits)[:-1])
        hard = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, student_logits)
    log_teacher = tf.nn.log_softmax(teacher_logits / temperature)
    log_student = tf.nn.log_softmax(student_logits / temperature)
    kl = tf.reduce_sum(tf.exp(log_teacher) * (log_teacher - log_student), axis=-1)
    return tf.reduce_mean(alpha * hard + (1.0 - alpha) * temperature**2 * kl)


def check_teacher(teacher: Any, student: Any) -> None:
    """The teacher must take the student's input and score the same classes."""
    for what, t_shape, s_shape in (
        ("input", teacher.input_shape, student.input_shape),
        ("output", teacher.output_shape, student.output_shape),
    ):
        if tuple(t_shape)[1:] != tuple(s_shape)[1:]:
            raise UserError(
                f"teacher {what} shape {tuple(t_shape)[1:]} differs from the student's {tuple(s_shape)[1:]}: "
                f"give a teacher trained on the same {'inputs' if what == 'input' else 'classes'} as MODEL"
            )


def load_teacher(config: DistillationConfig, student: Any, unsafe: bool = False) -> Any:
    """The teacher as a frozen tf-keras model (a Keras 3 file is rebuilt), checked against STUDENT."""
    loaded = load_model(config.teacher_path, unsafe=unsafe)
    if not loaded.is_keras:
        raise UserError(f"teacher {config.teacher_path} is a SavedModel: give its Keras model (.keras or .h5)")
    teacher = as_tf_keras(loaded.model).model if loaded.flavour == "keras3" else loaded.model
    check_teacher(teacher, student)
    ends_in_softmax(teacher)
    teacher.trainable = False
    return teacher


def build_distiller(
    student: Any, teacher: Any, temperature: float, alpha: float, metric: str = "accuracy"
) -> Any:
    """A tf-keras Model training STUDENT (in place) against TEACHER; compile it with an optimizer, then fit.

    fit(x, y) logs `loss` and the student's accuracy under METRIC (`val_<METRIC>` with validation data),
    the names a plain compile(metrics=[METRIC]) would log. Callbacks that look for TF-MOT wrappers
    (UpdatePruningStep) find them in the student: they search nested models.
    """
    check_teacher(teacher, student)
    return _distiller_class()(student, teacher, temperature, alpha, metric)


@functools.cache
def _distiller_class() -> type:
    # Defined on first use so that importing this module does not import TensorFlow.
    keras = import_tf_keras("knowledge distillation")
    tf = import_tf()

    class Distiller(keras.Model):
        def __init__(self, student: Any, teacher: Any, temperature: float, alpha: float, metric: str) -> None:
            super().__init__(name=f"distil_{student.name}")
            self.student, self.teacher = student, teacher
            self.teacher.trainable = False
            self.temperature, self.alpha = float(temperature), float(alpha)
            self._student_probs = ends_in_softmax(student)
            self._teacher_probs = ends_in_softmax(teacher)
            self.loss_tracker = keras.metrics.Mean(name="loss")
            self.student_accuracy = keras.metrics.SparseCategoricalAccuracy(name=metric)

        @property
        def metrics(self) -> list[Any]:
            return [self.loss_tracker, self.student_accuracy]

        def call(self, x: Any, training: bool = False) -> Any:
            return self.student(x, training=training)

        def _step(self, data: Any, training: bool) -> dict[str, Any]:
            x, y = data[0], data[1]
            teacher_logits = as_logits(self.teacher(x, training=False), self._teacher_probs)
            with tf.GradientTape() as tape:
                student_logits = as_logits(self.student(x, training=training), self._student_probs)
                loss = distillation_loss(y, student_logits, teacher_logits, self.temperature, self.alpha)
                if training and self.student.losses:
                    loss += tf.add_n(self.student.losses)
            if training:
                variables = self.student.trainable_variables
                self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            self.loss_tracker.update_state(loss)
            labels = tf.argmax(y, axis=-1) if len(y.shape) == len(student_logits.shape) else y
            self.student_accuracy.update_state(labels, student_logits)
            return {m.name: m.result() for m in self.metrics}

        def train_step(self, data: Any) -> dict[str, Any]:
            return self._step(data, training=True)

        def test_step(self, data: Any) -> dict[str, Any]:
            return self._step(data, training=False)

    return Distiller
