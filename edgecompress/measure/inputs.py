"""The input tensors a benchmark feeds: random within each dtype's range, or arrays from a .npz file.

Random values follow benchmark_model's habits: floats uniform in [-1, 1), 8- and 16-bit integers over their
whole range, wider integers in [0, 100) because they are usually indices (token ids, embedding rows) that
must stay in bounds. A .npz file is validated against the model's inputs (keys, shapes, dtypes) with one-line
errors; float data given to a quantized integer input is quantized with that input's scale and zero point.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgecompress.errors import UserError
from edgecompress.runtime import quantize
from edgecompress.specs import SINGLE_INPUT_KEY, input_key

WIDE_INT_HIGH = 100


class InputsError(UserError):
    """The --inputs file does not match the model's inputs."""


@dataclass(frozen=True)
class InputUsed:
    name: str
    shape: tuple[int, ...]
    dtype: str
    source: str


def random_input(shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A random array for one input and a short description of how it was drawn."""
    if np.issubdtype(dtype, np.floating):
        return rng.uniform(-1.0, 1.0, shape).astype(dtype), "random uniform [-1, 1)"
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_), "random bool"
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, high = (int(info.min), int(info.max) + 1) if info.bits <= 16 else (0, WIDE_INT_HIGH)
        return rng.integers(low, high, shape, dtype=dtype), f"random integers [{low}, {high - 1}]"
    raise InputsError(f"input dtype {dtype} cannot be filled at random: give the data with --inputs DATA.npz")


def _pick_key(name: str, n_inputs: int, keys: list[str], source: Path) -> str:
    key = input_key(name, n_inputs, keys)
    if key is not None:
        return key
    if n_inputs == 1 and len(keys) == 1:  # a lone array can only be meant for a lone input
        return keys[0]
    raise InputsError(
        f"--inputs {source} has no array for model input {name!r} (keys: {', '.join(keys) or 'none'}): "
        f"save one array per input under its name" + (f" or under {SINGLE_INPUT_KEY!r}" if n_inputs == 1 else "")
    )


def _fit_shape(arr: np.ndarray, name: str, shape: tuple[int, ...], key: str, source: Path) -> np.ndarray:
    """Accept the input's exact shape, or a stack of samples of which the first batch is used."""
    if arr.shape == shape:
        return arr
    if arr.ndim == len(shape) and arr.shape[1:] == shape[1:] and arr.shape[0] >= shape[0]:
        return arr[: shape[0]]
    raise InputsError(
        f"--inputs {source}: array {key!r} has shape {list(arr.shape)} but model input {name!r} expects "
        f"{list(shape)} (or N samples of {list(shape[1:])}): save arrays of the input's shape"
    )


def _fit_dtype(arr: np.ndarray, detail: Mapping[str, Any], key: str, source: Path) -> tuple[np.ndarray, str]:
    dtype = np.dtype(detail["dtype"])
    if arr.dtype == dtype:
        return arr, ""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.issubdtype(arr.dtype, np.floating) and np.issubdtype(dtype, np.integer) and scale > 0:
        return quantize(arr, scale, zero_point, dtype), f", quantized with scale {scale:g} and zero point {zero_point}"
    raise InputsError(
        f"--inputs {source}: array {key!r} has dtype {arr.dtype} but model input {detail['name']!r} expects "
        f"{dtype}: save it as {dtype} (x.astype('{dtype}'))"
    )


def npz_inputs(source: Path, details: list[Mapping[str, Any]]) -> list[tuple[np.ndarray, InputUsed]]:
    """Arrays for each input detail (as from Interpreter.get_input_details()) taken from SOURCE."""
    try:
        with np.load(source, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputsError(f"--inputs {source} is not a readable .npz file ({exc}): save it with numpy.savez") from exc
    out = []
    for detail in details:
        name, shape = detail["name"], tuple(int(d) for d in detail["shape"])
        key = _pick_key(name, len(details), sorted(arrays), source)
        arr = _fit_shape(arrays[key], name, shape, key, source)
        arr, note = _fit_dtype(arr, detail, key, source)
        out.append((np.ascontiguousarray(arr), InputUsed(name, shape, str(arr.dtype), f"{source.name}:{key}{note}")))
    return out


def model_inputs(details: list[Mapping[str, Any]], source: Path | None, seed: int = 0) -> list[tuple[np.ndarray, InputUsed]]:
    """The arrays to feed, in the order of DETAILS, from SOURCE when given, else random."""
    if source is not None:
        return npz_inputs(source, details)
    rng = np.random.default_rng(seed)
    out = []
    for detail in details:
        shape = tuple(int(d) for d in detail["shape"])
        arr, how = random_input(shape, np.dtype(detail["dtype"]), rng)
        out.append((arr, InputUsed(detail["name"], shape, str(arr.dtype), how)))
    return out
