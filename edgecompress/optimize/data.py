"""Training and validation data for fine-tuning: .npz files checked against the model's inputs."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgecompress.errors import UserError
from edgecompress.fileio import require_file
from edgecompress.specs import LABEL_KEY, SINGLE_INPUT_KEY, TensorSpec, input_key


# What labels are, per the output they are for: class indices or rows of class probabilities ("classes", trained
# with cross-entropy), 0/1 per value ("binary": sigmoid outputs, binary cross-entropy), or anything else a float
# output gives ("values": regression, embeddings; mean squared error).
LABEL_KINDS = ("classes", "binary", "values")


@dataclass(frozen=True)
class Target:
    """The output the labels are for, and what kind of labels they are."""

    index: int
    name: str
    kind: str  # one of LABEL_KINDS
    outputs: int  # how many outputs the model has


@dataclass(frozen=True)
class Labeled:
    """Inputs in the model's input order, the labels of the target output, and (with several outputs) what the
    original gives on the other outputs: fine-tuning keeps those heads by learning them back."""

    x: list[np.ndarray]
    y: np.ndarray
    target: Target
    kept: dict[int, np.ndarray] = field(default_factory=dict)  # output index -> the original's values

    def __len__(self) -> int:
        return len(self.y)

    def feed(self) -> np.ndarray | list[np.ndarray]:
        return self.x[0] if len(self.x) == 1 else self.x

    def targets(self) -> np.ndarray | list[np.ndarray]:
        """What fit() takes: the labels, or one array per output (the labels at the target's place)."""
        if self.target.outputs == 1:
            return self.y
        return [self.y if i == self.target.index else self.kept[i] for i in range(self.target.outputs)]

    def take(self, idx: np.ndarray) -> "Labeled":
        return Labeled([x[idx] for x in self.x], self.y[idx], self.target, {i: v[idx] for i, v in self.kept.items()})

    def keeping(self, predict: Callable[[list[np.ndarray]], list[np.ndarray]]) -> "Labeled":
        """These labels with PREDICT's values (the original's, on these inputs) for every other output."""
        if self.target.outputs == 1:
            return self
        values = predict(self.x)
        return replace(self, kept={i: v for i, v in enumerate(values) if i != self.target.index})


def predictions(model: Any, xs: list[np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
    """A Keras MODEL's outputs on XS, one array per output."""
    out = model.predict(xs[0] if len(xs) == 1 else xs, batch_size=batch_size, verbose=0)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def load_labeled(path: str | Path, inputs: list[TensorSpec], outputs: list[TensorSpec], what: str,
                 output: int | None = None) -> Labeled:
    """Read an .npz with the model's inputs and labels `y` for output OUTPUT (a position; by default the only
    output, or the only one whose shape the labels fit); every mismatch is a UserError naming the fix."""
    xs, y = load_labeled_inputs(path, inputs, what)
    p = Path(path)
    index = _target_index(p, y, outputs, output, what)
    kind, y = label_kind(p, y, outputs[index], what)
    return Labeled(xs, y, Target(index, outputs[index].name, kind, len(outputs)))


def load_labeled_inputs(path: str | Path, inputs: list[TensorSpec], what: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The model's inputs (in its input order, in their dtypes) and the labels `y` of an .npz, checked against
    the inputs only."""
    p = require_file(path, f"{what} data")
    try:
        with np.load(p, allow_pickle=False) as raw:
            arrays = {k: raw[k] for k in raw.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"{what} data {p} is not a readable .npz file ({exc}): save it with numpy.savez") from exc
    if LABEL_KEY not in arrays:
        raise UserError(f"{what} data {p} has no labels `y` (keys: {', '.join(arrays) or 'none'}): add them as y=...")
    names = [spec.name for spec in inputs]
    keys = [input_key(n, len(inputs), arrays) for n in names]
    missing = [n for n, k in zip(names, keys) if k is None]
    if missing:
        hint = SINGLE_INPUT_KEY if len(inputs) == 1 else ", ".join(names)
        raise UserError(
            f"{what} data {p} lacks the model input {', '.join(missing)} (keys: {', '.join(arrays)}): "
            f"store it under {hint}"
        )
    xs = [arrays[k] for k in keys]
    y = arrays[LABEL_KEY]
    for spec, x in zip(inputs, xs):
        want = spec.sample_shape
        if x.ndim != len(want) + 1 or any(w is not None and w != d for w, d in zip(want, x.shape[1:])):
            raise UserError(
                f"{what} data {p}: input {spec.name} has samples of shape {tuple(x.shape[1:])}, "
                f"the model expects {tuple('?' if d is None else d for d in want)}: reshape the data"
            )
        if len(x) != len(y):
            raise UserError(f"{what} data {p}: {len(x)} samples of {spec.name} but {len(y)} labels y: make them match")
    return [x.astype(spec.np_dtype, copy=False) for spec, x in zip(inputs, xs)], y


def _target_index(p: Path, y: np.ndarray, outputs: list[TensorSpec], output: int | None, what: str) -> int:
    if output is not None:
        return output
    if len(outputs) == 1:
        return 0
    fitting = [i for i, spec in enumerate(outputs) if _fits(y, spec)]
    if len(fitting) == 1:
        return fitting[0]
    listed = ", ".join(f"{o.name} {'x'.join('?' if d is None else str(d) for d in o.sample_shape)}" for o in outputs)
    raise UserError(f"{what} data {p}: the model has {len(outputs)} outputs ({listed}) and labels y of shape "
                    f"{tuple(y.shape[1:])} per sample: set model_output to the one they are for",
                    settings=("model_output",))


def _fits(y: np.ndarray, spec: TensorSpec) -> bool:
    try:
        label_kind(Path("-"), y, spec, "-")
    except UserError:
        return False
    return True


def label_kind(p: Path, y: np.ndarray, spec: TensorSpec, what: str) -> tuple[str, np.ndarray]:
    """What labels Y are for output SPEC (LABEL_KINDS), and Y shaped as the training takes them; labels that fit
    the output in no way are a UserError saying what would."""
    out = tuple(spec.sample_shape)
    got = tuple(y.shape[1:])
    classes = out[-1] if out else None
    integer = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)
    if integer and _matches(got, out[:-1]) and classes and classes > 1:  # a language model's: one per position
        if len(y) and (y.min() < 0 or y.max() >= classes):
            raise UserError(f"{what} data {p}: labels y must be class indices in [0, {classes}) for output "
                            f"{spec.name}'s {classes} classes")
        return "classes", y
    binary = bool(len(y)) and bool(np.isin(np.unique(y), (0, 1)).all())
    if got == out[:-1] and classes == 1 and binary:  # one sigmoid, labels without its axis of 1
        return "binary", y.reshape(len(y), *out).astype(np.float32)
    if got == out and len(out):
        if classes and classes > 1 and _one_hot(y):
            return "classes", y
        if binary:
            return "binary", y.astype(np.float32)
        return "values", y.astype(np.float32)
    shape = "x".join("?" if d is None else str(d) for d in out)
    raise UserError(
        f"{what} data {p}: labels y have shape {got} per sample, and output {spec.name} gives {shape}: give class "
        f"indices (shape {out[:-1]}), one-hot rows, 0/1 per value, or float targets of shape {out}")


def _matches(got: tuple[int, ...], want: tuple[int | None, ...]) -> bool:
    """GOT is a shape WANT admits (None: any size, such as a language model's sequence length)."""
    return len(got) == len(want) and all(w is None or w == g for g, w in zip(got, want))


def _one_hot(y: np.ndarray) -> bool:
    """Rows of class probabilities: values in [0, 1] summing to 1 over the last axis (one-hot or soft labels)."""
    values = y.astype(np.float64)
    return bool(values.min() >= 0 and values.max() <= 1 and np.allclose(values.sum(axis=-1), 1.0, atol=1e-3))
