"""Training and validation data for fine-tuning: .npz files checked against the model's inputs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecompress.errors import UserError
from edgecompress.fileio import require_file
from edgecompress.specs import LABEL_KEY, SINGLE_INPUT_KEY, TensorSpec, input_key


@dataclass(frozen=True)
class Labeled:
    """Inputs in the model's input order, and the labels (class indices or one-hot rows)."""

    x: list[np.ndarray]
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def feed(self) -> np.ndarray | list[np.ndarray]:
        return self.x[0] if len(self.x) == 1 else self.x


def load_labeled(path: str | Path, inputs: list[TensorSpec], outputs: list[TensorSpec], what: str) -> Labeled:
    """Read an .npz with the model's inputs and labels `y`; every mismatch is a UserError naming the fix."""
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
    _check_labels(p, y, outputs, what)
    return Labeled([x.astype(spec.np_dtype, copy=False) for spec, x in zip(inputs, xs)], y)


def _check_labels(p: Path, y: np.ndarray, outputs: list[TensorSpec], what: str) -> None:
    if len(outputs) != 1:
        raise UserError(f"the model has {len(outputs)} outputs: optimize fine-tunes single-output classifiers only")
    classes = outputs[0].shape[-1]
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < 0 or y.max() >= (classes or 1))):
            raise UserError(
                f"{what} data {p}: labels y must be class indices in [0, {classes}) for the model's {classes} outputs"
            )
    elif tuple(y.shape[1:]) != tuple(outputs[0].sample_shape):
        raise UserError(
            f"{what} data {p}: labels y have shape {tuple(y.shape[1:])} per sample, the model outputs "
            f"{tuple(outputs[0].sample_shape)}: give class indices or one-hot rows"
        )
    elif len(y) and not _one_hot(y):
        # Cross-entropy on float targets trains toward nothing sensible (seen: the loss went to -13.6 on word
        # embeddings while the early stopping watched an 'accuracy' of them).
        raise UserError(
            f"{what} data {p}: labels y are float targets, not class indices or one-hot rows: optimize fine-tunes "
            "classifiers only (cross-entropy); regression and embedding targets are not supported yet"
        )


def _one_hot(y: np.ndarray) -> bool:
    """Rows of class probabilities: values in [0, 1] summing to 1 over the last axis (one-hot or soft labels)."""
    values = y.astype(np.float64)
    return bool(values.min() >= 0 and values.max() <= 1 and np.allclose(values.sum(axis=-1), 1.0, atol=1e-3))
