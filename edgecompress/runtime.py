"""The TFLite interpreter, from the smallest runtime that is installed.

Order: ai-edge-litert (maintained, numpy 2), then tflite-runtime (last release 2.14, needs numpy<2), then
tf.lite (only when TensorFlow happens to be installed). Nothing here imports TensorFlow unless both runtimes
are missing, so a Raspberry Pi with only the runtime side never loads it.
"""
from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecompress.errors import UserError
from edgecompress.fileio import require_file
from edgecompress.quiet import quiet_native_stderr

TFLITE_IDENTIFIER = b"TFL3"


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    version: str


def _load_runtime(prefer: str | None = None) -> tuple[Any, Any, RuntimeInfo]:
    """Return (Interpreter class, OpResolverType enum or None, RuntimeInfo)."""
    candidates = [
        ("ai-edge-litert", "ai_edge_litert.interpreter", "ai_edge_litert"),
        ("tflite-runtime", "tflite_runtime.interpreter", "tflite_runtime"),
        ("tensorflow", "tensorflow.lite.python.interpreter", "tensorflow"),
    ]
    if prefer:
        candidates = [c for c in candidates if c[0] == prefer]
        if not candidates:
            raise UserError(f"unknown runtime {prefer!r}: use ai-edge-litert, tflite-runtime or tensorflow")
    errors = []
    for name, module, top in candidates:
        try:
            mod = importlib.import_module(module)
            version = getattr(importlib.import_module(top), "__version__", "unknown")
        except ImportError as exc:  # not installed, or built against another numpy
            errors.append(f"{name}: {exc}")
            continue
        return mod.Interpreter, getattr(mod, "OpResolverType", None), RuntimeInfo(name, str(version))
    raise UserError(
        "no TFLite runtime could be imported (" + "; ".join(errors) + "): pip install ai-edge-litert"
    )


def runtime_info(prefer: str | None = None) -> RuntimeInfo:
    return _load_runtime(prefer)[2]


def load_check(path: str, use_xnnpack: bool = True) -> None:
    """Load and allocate PATH as a run would, for a child to ask (a UserError in the runtime's words if it refuses)."""
    load_interpreter(path, num_threads=1, use_xnnpack=use_xnnpack)


def check_tflite_file(path: str | Path) -> bytes:
    """Read a .tflite file, refusing what is plainly not one with a message that says so."""
    p = require_file(path, "model")
    if p.is_dir():
        raise UserError(f"model {p} is a folder, not a .tflite file: convert it first with `edgecompress convert`")
    data = p.read_bytes()
    if len(data) == 0:
        raise UserError(f"model {p} is empty: re-export it with `edgecompress convert`")
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise UserError(
            f"model {p} is not a TFLite flatbuffer (no 'TFL3' identifier): give a .tflite file made by a TFLite converter"
        )
    return data


def load_interpreter(
    path: str | Path,
    num_threads: int | None = None,
    use_xnnpack: bool = True,
    prefer: str | None = None,
    preserve_all_tensors: bool = False,
    input_shapes: dict[str, Sequence[int]] | None = None,
) -> tuple[Any, RuntimeInfo]:
    """Create and allocate an interpreter for PATH; bad files become UserError, not crashes.

    PRESERVE_ALL_TENSORS keeps every intermediate tensor readable after invoke (no buffer reuse). INPUT_SHAPES
    (input name -> shape) sizes inputs with free dimensions before allocation."""
    check_tflite_file(path)
    interpreter_cls, resolver, info = _load_runtime(prefer)
    kwargs: dict[str, Any] = {"model_path": str(path)}
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    if num_threads is not None:
        kwargs["num_threads"] = num_threads
    if not use_xnnpack and resolver is not None:
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        # The runtime announces its XNNPACK delegate on stderr; load errors come back in the exception.
        with quiet_native_stderr(replay_on_error=False), warnings.catch_warnings():
            # preserve_all_tensors is asked for on purpose (per-layer comparison); its memory warning is noise
            warnings.simplefilter("ignore", UserWarning)
            interpreter = interpreter_cls(**kwargs)
            for detail in interpreter.get_input_details() if input_shapes else ():
                if detail["name"] in input_shapes:
                    interpreter.resize_tensor_input(detail["index"], list(input_shapes[detail["name"]]), strict=False)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"{info.name} {info.version} cannot load {path}: {first_line(exc)}") from exc
    return interpreter, info


def first_line(exc: BaseException) -> str:
    """An exception's first non-empty line (native errors run to pages), or its type's name."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # The runtime's useful sentence is usually the first; Flex/custom op errors name the op there.
    return lines[0] if lines else type(exc).__name__


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype: np.dtype | str) -> np.ndarray:
    """Real values to a quantized tensor's integers (TFLite's affine scheme), clipped to DTYPE's range."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(values, dtype=np.float32) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """A quantized tensor's integers back to real values."""
    return (np.asarray(values).astype(np.float32) - zero_point) * scale
