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

from edgecompress.errors import UserError
from edgecompress.isolation import run_isolated
from edgecompress.tflite_reader import TFLiteModel


def has_dynamic_shapes(model: TFLiteModel) -> bool:
    return any(t.is_dynamic for t in model.main.tensors)


def parse_input_shapes(values: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """input_shape values (NAME=1x120x160x3, or 1x120x160x3 for the only input, named "") as {name: shape}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values:
        name, _, dims = value.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            raise UserError(f"input_shape {value!r} is not a shape: write it as NAME=1x120x160x3 (batch 1 first)",
                            settings=("input_shape",))
        shapes[name] = shape
    return shapes


def fit_input_shapes(given: dict[str, tuple[int, ...]],
                     inputs: Sequence[tuple[str, Sequence[int | None]]]) -> dict[str, tuple[int, ...]]:
    """GIVEN (from parse_input_shapes) checked against INPUTS (name, shape with None for each free dimension):
    {input name: shape}. A shape naming no input, or contradicting batch 1 or a fixed dimension, is a UserError."""
    names = [name for name, _ in inputs]
    if "" in given:
        if len(names) != 1:
            raise UserError(f"the model has {len(names)} inputs ({', '.join(names)}): give input_shape as NAME=SHAPE",
                            settings=("input_shape",))
        given = {names[0]: given[""]}
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise UserError(f"the model has no input {unknown[0]!r}: its inputs are {', '.join(names)}",
                        settings=("input_shape",))
    for name, declared in inputs:
        shape = given.get(name)
        if shape is not None and (len(shape) != len(declared) or shape[0] != 1 or any(
                d is not None and d != w for d, w in zip(declared[1:], shape[1:]))):
            free = "x".join("?" if d is None else str(d) for d in declared)
            raise UserError(f"input_shape {'x'.join(map(str, shape))} does not fit input {name} ({free}): give batch 1 "
                            "and the model's fixed dimensions as they are", settings=("input_shape",))
    return dict(given)


def tflite_input_shapes(model: TFLiteModel, given: dict[str, tuple[int, ...]],
                        required: bool = False) -> dict[str, tuple[int, ...]]:
    """GIVEN checked against MODEL's inputs (-1 marks a free dimension). REQUIRED: an input free beyond its batch
    must be given a shape (running it at 1 in every free dimension, as stored, measures a different model)."""
    inputs = [(t.name, tuple(None if d < 0 else d for d in t.shape_signature)) for t in model.inputs]
    fitted = fit_input_shapes(given, inputs)
    if required:
        for name, declared in inputs:
            if name not in fitted and None in declared[1:]:
                example = "x".join(str(d or 224) for d in declared[1:])
                raise UserError(f"input {name} has free dimensions ({'x'.join('?' if d is None else str(d) for d in declared)}):"
                                f" give the shape to run, as input_shape {name}=1x{example}", settings=("input_shape",))
    return fitted


def resolve_shapes(model: TFLiteModel, path: str | Path,
                   input_shapes: dict[str, Sequence[int]] | None = None) -> int:
    """Give MODEL's main subgraph the shapes the runtime allocates for PATH; returns how many tensors changed
    (0, without starting anything, for a file without dynamic dimensions)."""
    if not has_dynamic_shapes(model):
        return 0
    given = input_shapes or {}
    sized = {t.name: list(given.get(t.name) or [1 if d < 0 else d for d in t.shape_signature]) for t in model.inputs}
    shapes = run_isolated(allocated_shapes, str(path), sized,
                          what=f"the runtime, sizing the tensors of {Path(path).name}")
    changed = 0
    for tensor in model.main.tensors:
        shape = shapes.get(tensor.index)
        if shape is not None and shape != tensor.shape:
            tensor.shape = shape
            changed += 1
    return changed


def allocated_shapes(path: str, input_shapes: dict[str, Sequence[int]]) -> dict[int, tuple[int, ...]]:
    """Every tensor's shape (by index) once PATH's inputs are sized INPUT_SHAPES (every input), allocated and run
    once on zeros.

    Without XNNPACK first: the tensors inside a delegated partition are never resized by the interpreter. Some
    files run only with the default delegates (seen: READ_VARIABLE failing without them, and MediaPipe's custom
    Convolution2DTransposeBias, which only XNNPACK provides); then with them. When the runtime loads the file
    neither way, its refusal (a UserError) is raised.
    """
    fallback = None
    for use_xnnpack in (False, True):
        try:
            shapes, ran = _run_once(path, input_shapes, use_xnnpack)
        except UserError:
            if use_xnnpack and fallback is None:
                raise
            continue
        if ran:
            return shapes
        fallback = fallback or shapes
    return fallback or {}


def _run_once(path: str, input_shapes: dict[str, Sequence[int]],
              use_xnnpack: bool) -> tuple[dict[int, tuple[int, ...]], bool]:
    from edgecompress.runtime import load_interpreter

    interpreter, _ = load_interpreter(path, num_threads=1, use_xnnpack=use_xnnpack, input_shapes=input_shapes)
    for d in interpreter.get_input_details():
        interpreter.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    try:
        interpreter.invoke()
        ran = True
    except RuntimeError:  # a kernel refusing zeros, or this resolver: the allocation's shapes are what there is
        ran = False
    return {int(d["index"]): tuple(int(s) for s in d["shape"]) for d in interpreter.get_tensor_details()}, ran
