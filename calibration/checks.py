"""Checks of samples against a model's inputs, each failing with one line that names the input,
what was expected and what was found (and how to fix it)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from edgecompress.errors import UserError
from edgecompress.specs import SINGLE_INPUT_KEY, TensorSpec
from edgecompress.calibration.sources import Source, describe_column, len_of


def check_source(source: Source, inputs: Sequence[TensorSpec]) -> None:
    """Keys, counts, shapes and dtypes (from array headers only; values are checked while streaming)."""
    for spec in inputs:
        _check_present(source, spec, single=len(inputs) == 1)
    for spec in inputs:
        column = source.columns[spec.name]
        if len_of(column) == 0:
            what = "no jpg/png images" if source.kind == "images" else f"no samples (array {describe_column(column)})"
            raise UserError(f"data {source.path} has {what} for input {spec.name!r}: give at least one sample")
        _check_shape(source, spec, column.shape)
        _check_dtype(source, spec, np.dtype(column.dtype))
    counts = {spec.name: len_of(source.columns[spec.name]) for spec in inputs}
    if len(set(counts.values())) > 1:
        found = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise UserError(f"data {source.path} has different sample counts per input ({found}): give the same number for each")


def check_labels(source: Source) -> np.ndarray:
    """The labels of an evaluation set, which must be there and match the sample count."""
    if source.labels is None:
        raise UserError(
            f"data {source.path} has no labels (found keys: {', '.join(source.available) or 'none'}): "
            "save them under the key 'y' (integer classes or float targets)"
        )
    labels = np.asarray(source.labels[:])
    if labels.shape[0] != source.count:
        raise UserError(
            f"data {source.path} has {labels.shape[0]} labels for {source.count} samples: give one label per sample"
        )
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise UserError(f"labels in {source.path} are {labels.dtype.name}: use integer classes or float targets")
    return labels


def check_finite(spec: TensorSpec, values: np.ndarray, sample_ids: Sequence[int], source: Source) -> None:
    """VALUES stacks the samples numbered SAMPLE_IDS in the source."""
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
        bad = int(np.argwhere(~np.isfinite(values.reshape(len(values), -1)))[0][0])
        raise UserError(
            f"input {spec.name!r}: sample {int(sample_ids[bad])} of {source.path} holds NaN or infinite values "
            "where finite numbers are expected: clean or drop those samples"
        )


def _check_present(source: Source, spec: TensorSpec, single: bool) -> None:
    if spec.name in source.columns:
        return
    keys = f"'{spec.name}' or '{SINGLE_INPUT_KEY}'" if single else f"'{spec.name}'"
    raise UserError(
        f"data {source.path} has no array for input {spec.name!r} (found keys: {', '.join(source.available) or 'none'}): "
        f"save the samples under the key {keys}"
    )


def _check_shape(source: Source, spec: TensorSpec, shape: tuple[int, ...]) -> None:
    expected = spec.sample_shape
    found = tuple(int(d) for d in shape[1:])
    if len(found) == len(expected) and all(e is None or e == f for e, f in zip(expected, found)):
        return
    want = ", ".join("?" if d is None else str(d) for d in expected)
    raise UserError(
        f"input {spec.name!r} expects samples of shape ({want}), found {found} in {source.path} "
        f"(array {tuple(int(d) for d in shape)}): give an array of shape (N, {want})"
    )


def _check_dtype(source: Source, spec: TensorSpec, dtype: np.dtype) -> None:
    wants_float = np.issubdtype(spec.np_dtype, np.floating)
    ok = (np.issubdtype(dtype, np.floating) if wants_float
          else np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.bool_))
    if ok:
        return
    hint = "convert and scale it to float (for images: x.astype('float32') / 255)" if wants_float else \
        f"convert it with x.astype('{spec.dtype}')"
    raise UserError(f"input {spec.name!r} expects {spec.dtype} samples, found {dtype.name} in {source.path}: {hint}")
