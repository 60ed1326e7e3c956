"""Shapes a .tflite resolves only at run time, read from the runtime itself.

A file with dynamic dimensions (a free batch, a signature-less audio model) stores placeholder shapes:
before allocation one real model showed 218 of 571 tensors sized 1 where they hold thousands of values, and
MACs came out 15x low (26.5M where its convolutions do about 404M). The runtime is asked instead: dynamic
inputs resized to batch 1 (every free dimension 1, or the shapes given), allocated, and run once on zeros,
since some tensors are sized only when the op before them runs. This happens in a child process
(edgecompress.isolation): a file that crashes the runtime must not take the caller down.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edgecompress.isolation import run_isolated
from edgecompress.tflite_reader import TFLiteModel


def has_dynamic_shapes(model: TFLiteModel) -> bool:
    return any(t.is_dynamic for t in model.main.tensors)


def resolve_shapes(model: TFLiteModel, path: str | Path,
                   input_shapes: dict[str, Sequence[int]] | None = None) -> int:
    """Give MODEL's main subgraph the shapes the runtime allocates for PATH; returns how many tensors changed
    (0, without starting anything, for a file without dynamic dimensions)."""
    if not has_dynamic_shapes(model):
        return 0
    shapes = run_isolated(allocated_shapes, str(path), dict(input_shapes or {}),
                          what=f"the runtime, sizing the tensors of {Path(path).name}")
    changed = 0
    for tensor in model.main.tensors:
        shape = shapes.get(tensor.index)
        if shape is not None and shape != tensor.shape:
            tensor.shape = shape
            changed += 1
    return changed


def allocated_shapes(path: str, input_shapes: dict[str, Sequence[int]]) -> dict[int, tuple[int, ...]]:
    """Every tensor's shape (by index) once PATH's inputs are fixed, allocated and run once on zeros.

    Without XNNPACK first: the tensors inside a delegated partition are never resized by the interpreter. Some
    files run only with the default delegates (seen: READ_VARIABLE failing without them); then with them.
    """
    fallback = None
    for use_xnnpack in (False, True):
        shapes, ran = _run_once(path, input_shapes, use_xnnpack)
        if ran:
            return shapes
        fallback = fallback or shapes
    return fallback or {}


def _run_once(path: str, input_shapes: dict[str, Sequence[int]],
              use_xnnpack: bool) -> tuple[dict[int, tuple[int, ...]], bool]:
    from edgecompress.runtime import load_interpreter

    interpreter, _ = load_interpreter(path, num_threads=1, use_xnnpack=use_xnnpack)
    for d in interpreter.get_input_details():
        wanted = input_shapes.get(d["name"])
        signature = d.get("shape_signature", d["shape"])
        shape = list(wanted) if wanted is not None else [1 if int(s) < 0 else int(s) for s in signature]
        interpreter.resize_tensor_input(d["index"], shape, strict=False)
    interpreter.allocate_tensors()
    for d in interpreter.get_input_details():
        interpreter.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    try:
        interpreter.invoke()
        ran = True
    except RuntimeError:  # a kernel refusing zeros, or this resolver: the allocation's shapes are what there is
        ran = False
    return {int(d["index"]): tuple(int(s) for s in d["shape"]) for d in interpreter.get_tensor_details()}, ran
