"""float16-weight .tflite files with their float32 constants restored, so that every weight mode can read them.

MediaPipe and most model hubs ship float16 weights: each constant is stored as float16 and a DEQUANTIZE op turns
it into the float32 tensor the graph computes with. The quantizer takes float32 constants, and float16 -> float32
is exact, so each such DEQUANTIZE is folded: its output becomes a float32 constant holding the same values, the op
goes, and the float16 tensor is left without data (nothing reads it). The result computes exactly what the file
did (tests compare every output bit for bit).

Block-sparse variants (MediaPipe's full-range face detector) store some float16 constants sparse, densified by a
DENSIFY op before their DEQUANTIZE. The dense values are what the runtime's own DENSIFY gives: it runs once, in a
child process, on zeros, and its outputs become dense constants; then the DEQUANTIZEs fold as above.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.isolation import run_isolated

from edgecompress.converters.tflite_edit import drop_unused_tensors, flatbuffers, op_code, read, write


def restore_float32(data: bytes) -> tuple[bytes, int, int]:
    """DATA with every DEQUANTIZE of a constant float16 tensor folded into a float32 constant (sparse ones
    densified first), how many were folded and how many densified (DATA itself comes back when none was)."""
    data, densified = densify_constants(data)
    model = read(data)
    schema = flatbuffers().schema_fb
    converted: set[int] = set()  # buffers now holding float32 (several tensors or ops may share one)
    folded = 0
    for subgraph in model.subgraphs:
        kept = []
        for op in subgraph.operators:
            if op_code(model, op) == schema.BuiltinOperator.DEQUANTIZE and _fold(model, subgraph, op, schema, converted):
                folded += 1
            else:
                kept.append(op)
        subgraph.operators = kept
    drop_unused_tensors(model)  # the float16 constants: nothing reads them now
    return (write(model), folded, densified) if folded else (data, 0, densified)


def _fold(model: Any, subgraph: Any, op: Any, schema: Any, converted: set[int]) -> bool:
    """Make OP's float32 output a constant with its float16 input's values; False when OP is not that case."""
    if len(op.inputs) != 1 or len(op.outputs) != 1:
        return False
    source, target = subgraph.tensors[op.inputs[0]], subgraph.tensors[op.outputs[0]]
    if source.type != schema.TensorType.FLOAT16 or target.type != schema.TensorType.FLOAT32:
        return False
    buffer = source.buffer
    if buffer not in converted:
        stored = model.buffers[buffer].data if 0 < buffer < len(model.buffers) else None
        if stored is None or len(stored) == 0:
            return False  # a float16 activation, not a constant
        values = np.frombuffer(np.asarray(stored, dtype=np.uint8).tobytes(), dtype="<f2").astype("<f4")
        model.buffers[buffer].data = np.frombuffer(values.tobytes(), dtype=np.uint8)
        converted.add(buffer)
    target.buffer = buffer
    return True


def densify_constants(data: bytes) -> tuple[bytes, int]:
    """DATA with every DENSIFY of a constant (sparse) tensor of the main subgraph replaced by the dense constant the
    runtime computes for it, and how many were (DATA itself, 0, when there is none)."""
    model = read(data)
    schema = flatbuffers().schema_fb
    subgraph = model.subgraphs[0]
    densify = [op for op in subgraph.operators if op_code(model, op) == schema.BuiltinOperator.DENSIFY
               and subgraph.tensors[op.inputs[0]].sparsity is not None]
    if not densify:
        return data, 0
    with tempfile.TemporaryDirectory(prefix="edgecompress-densify-") as folder:
        path = Path(folder) / "sparse.tflite"
        path.write_bytes(data)
        dense = run_isolated(dense_values, str(path), [op.outputs[0] for op in densify],
                             what=f"the runtime, densifying the sparse constants of {path.name}")
    for op in densify:
        target = subgraph.tensors[op.outputs[0]]
        buffer = flatbuffers().schema_fb.BufferT()
        buffer.data = np.frombuffer(dense[op.outputs[0]].astype(dense[op.outputs[0]].dtype.newbyteorder("<")).tobytes(),
                                    dtype=np.uint8)
        model.buffers.append(buffer)
        target.buffer = len(model.buffers) - 1
    subgraph.operators = [op for op in subgraph.operators if all(op is not d for d in densify)]
    drop_unused_tensors(model)  # the sparse constants
    return write(model), len(densify)


def dense_values(path: str, tensors: list[int]) -> dict[int, np.ndarray]:
    """The values of TENSORS (outputs of DENSIFY ops on constants) after one run of PATH on zeros."""
    from edgecompress.runtime import load_interpreter

    interpreter, _ = load_interpreter(path, num_threads=1, use_xnnpack=False, preserve_all_tensors=True)
    for d in interpreter.get_input_details():
        interpreter.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    interpreter.invoke()
    return {index: interpreter.get_tensor(index).copy() for index in tensors}
