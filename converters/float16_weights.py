"""float16-weight .tflite files with their float32 constants restored, so that every weight mode can read them.

MediaPipe and most model hubs ship float16 weights: each constant is stored as float16 and a DEQUANTIZE op turns
it into the float32 tensor the graph computes with. The quantizer takes float32 constants, and float16 -> float32
is exact, so each such DEQUANTIZE is folded: its output becomes a float32 constant holding the same values, the op
goes, and the float16 tensor is left without data (nothing reads it). The result computes exactly what the file
did (tests compare every output bit for bit).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgecompress.converters.tflite_edit import flatbuffers, op_code, read, write


def restore_float32(data: bytes) -> tuple[bytes, int]:
    """DATA with every DEQUANTIZE of a constant float16 tensor folded into a float32 constant, and how many were
    (DATA itself comes back when none was)."""
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
    for subgraph in model.subgraphs:  # float16 tensors left on a converted buffer: nothing reads them now
        for tensor in subgraph.tensors:
            if tensor.type == schema.TensorType.FLOAT16 and tensor.buffer in converted:
                tensor.buffer = 0
    return (write(model), folded) if folded else (data, 0)


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
