"""What TFLiteConverter's int16x8 quantizer emits that LiteRT cannot run, made runnable.

1. It gives every op int16 activations, including ops whose LiteRT kernel takes none: the model converts,
   then fails on its first run. LayerNormalization's SQUARED_DIFFERENCE is one (ai-edge-litert 2.3.0:
   "SquaredDifference only supports FLOAT32 and INT32 now, got 7"), so every transformer failed. Adding
   TFLITE_BUILTINS to the supported op sets (TFLite's documented float fallback) changes nothing: the
   quantizer still emits the op in int16. So each such op gets a float island: DEQUANTIZE on its int16
   inputs, the op in float, QUANTIZE back to the int16 scale its output was calibrated to.
2. A constant of zeros (LayerNormalization on 2-D inputs adds one as its offset) gets scale 0, on which the
   runtime aborts the whole process while loading the model. Any scale represents zeros exactly; the smallest
   scale of the subgraph's other int16 tensors is used, so that the op adding it keeps its inputs' precision
   (int16 ADD/SUB rescale both inputs to the larger scale).
3. An op with a fused RELU6 (or RELU_N1_TO_1) whose int16 output scale is so small that 6 / scale exceeds
   int32 (an almost silent tensor: 1.8e-9 in a freshly initialised MobileNetV2) fails to load ("no_integer_
   overflow_from_quantization"). Its int16 values cannot reach the clamp then (32767 * scale << 6), so the
   clamp is dropped (RELU6 -> RELU, RELU_N1_TO_1 -> none): the same computation, one the runtime accepts.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgecompress.converters.tflite_edit import (
    add_tensor, flatbuffers, op_code, opcode_index, operator, read, write,
)

# Ops the int16x8 quantizer emits with int16 activations that LiteRT cannot run (checked on ai-edge-litert 2.3.0).
NO_INT16_KERNEL = ("SQUARED_DIFFERENCE",)
# Operator versions as TFLite's op_version.cc assigns them: float ops at 1, DEQUANTIZE from int16 at 3,
# QUANTIZE to int16 at 2.
_DEQUANTIZE_INT16, _QUANTIZE_INT16, _FLOAT = 3, 2, 1


def make_runnable(data: bytes) -> tuple[bytes, list[str]]:
    """DATA (an int16x8 .tflite) fixed as the module docstring says, and what was changed (DATA itself comes
    back when nothing was)."""
    model = read(data)
    changes = [f"{count} {name} kept in float (no int16 kernel)" for name, count in _float_islands(model).items()]
    zeros = _zero_scales(model)
    if zeros:
        changes.append(f"{zeros} constant(s) of zeros given a scale (was 0)")
    clamps = _unreachable_clamps(model)
    if clamps:
        changes.append(f"{clamps} fused RELU6/RELU_N1_TO_1 clamp(s) beyond their output's int16 range dropped")
    return (write(model), changes) if changes else (data, [])


def _float_islands(model: Any) -> dict[str, int]:
    """Every op of NO_INT16_KERNEL with int16 tensors computed in float; how many of each."""
    schema = flatbuffers().schema_fb
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    changed: dict[str, int] = {}
    for subgraph in model.subgraphs:
        operators: list[Any] = []
        for op in subgraph.operators:
            name = names.get(op_code(model, op))
            if name in NO_INT16_KERNEL and _has_int16(subgraph, op):
                operators.extend(_island(model, subgraph, op))
                changed[name] = changed.get(name, 0) + 1
            else:
                operators.append(op)
        subgraph.operators = operators
    return changed


def _has_int16(subgraph: Any, op: Any) -> bool:
    int16 = flatbuffers().schema_fb.TensorType.INT16
    return any(subgraph.tensors[i].type == int16 for i in [*op.inputs, *op.outputs] if i >= 0)


def _island(model: Any, subgraph: Any, op: Any) -> list[Any]:
    """[DEQUANTIZE per int16 input, OP in float, QUANTIZE per int16 output]."""
    schema = flatbuffers().schema_fb
    codes, int16, float32 = schema.BuiltinOperator, schema.TensorType.INT16, schema.TensorType.FLOAT32
    before, after = [], []
    for position, index in enumerate(op.inputs):
        tensor = subgraph.tensors[index] if index >= 0 else None
        if tensor is not None and tensor.type == int16:
            real = add_tensor(subgraph, tensor, tensor.shape, b"/float", float32)
            before.append(operator(model, codes.DEQUANTIZE, [index], [real], _DEQUANTIZE_INT16))
            op.inputs[position] = real
    for position, index in enumerate(op.outputs):
        tensor = subgraph.tensors[index]
        if tensor.type == int16:
            real = add_tensor(subgraph, tensor, tensor.shape, b"/float", float32)
            after.append(operator(model, codes.QUANTIZE, [real], [index], _QUANTIZE_INT16))
            op.outputs[position] = real
    op.opcodeIndex = opcode_index(model, op_code(model, op), _FLOAT)
    return [*before, op, *after]


def _zero_scales(model: Any) -> int:
    """Constant int16 tensors of zeros with scale 0 given the subgraph's smallest int16 scale; how many."""
    int16 = flatbuffers().schema_fb.TensorType.INT16
    fixed = 0
    for subgraph in model.subgraphs:
        tensors = [t for t in subgraph.tensors if t.type == int16 and _scales(t)]
        positive = [s for t in tensors for s in _scales(t) if s > 0]
        for tensor in tensors:
            raw = model.buffers[tensor.buffer].data
            if min(_scales(tensor)) > 0 or raw is None or np.frombuffer(bytes(raw), np.int16).any() or not positive:
                continue
            tensor.quantization.scale = [min(positive)] * len(_scales(tensor))
            fixed += 1
    return fixed


def _unreachable_clamps(model: Any) -> int:
    """Fused clamps whose bound overflows int32 at their int16 output's scale, relaxed (see 3. above)."""
    schema = flatbuffers().schema_fb
    act = schema.ActivationFunctionType
    relaxed = {act.RELU6: (6.0, act.RELU), act.RELU_N1_TO_1: (1.0, act.NONE)}
    int32_max = float(np.iinfo(np.int32).max)
    fixed = 0
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            options = op.builtinOptions
            fused = getattr(options, "fusedActivationFunction", None)
            if fused not in relaxed or len(op.outputs) != 1:
                continue
            output = subgraph.tensors[op.outputs[0]]
            bound, replacement = relaxed[fused]
            scales = _scales(output)
            if output.type == schema.TensorType.INT16 and scales and 0 < min(scales) < bound / int32_max:
                options.fusedActivationFunction = replacement
                fixed += 1
    return fixed


def _scales(tensor: Any) -> list[float]:
    q = tensor.quantization
    return [] if q is None or q.scale is None else [float(s) for s in q.scale]
