"""Multiply-accumulate (MAC) estimates of a .tflite's operators, from the flatbuffer alone: what `inspect`
reports and the device estimates scale by.

Per operator, from the shapes stored in the file (batch as stored), or
for a file with dynamic dimensions from the shapes the runtime allocates at batch 1 (edgecompress.shapes):
- CONV_2D: output elements * kh * kw * (in_c / groups), from the filter [out_c, kh, kw, in_c/groups].
- DEPTHWISE_CONV_2D: output elements * kh * kw (filter [1, kh, kw, out_c]).
- CONV_3D: output elements * kd * kh * kw * in_c (filter [kd, kh, kw, in_c, out_c]).
- TRANSPOSE_CONV: input elements * kh * kw * out_c (filter [out_c, kh, kw, in_c]); CONV_3D_TRANSPOSE likewise.
- FULLY_CONNECTED: output elements * in_features (weights [units, in_features]).
- BATCH_MATMUL: output elements * K, the contracted dimension of the left operand (after adj_x).
- LSTM / UNIDIRECTIONAL_SEQUENCE_LSTM: steps * batch * 4 gates * hidden * (in_features + hidden).
- Data movement (RESHAPE, TRANSPOSE, CONCATENATION, PAD, GATHER, SLICE, QUANTIZE, ...): 0; DENSIFY of a
  constant (sparse weights, expanded once as the model loads): 0.
- Every other op (ADD, MUL, activations, pooling, SOFTMAX, ...): one per output element, a rough floor.
"""
from __future__ import annotations

from edgecompress.tflite_reader import Operator, Subgraph, TFLiteModel

_DATA_MOVEMENT = frozenset(
    {
        "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "CONCATENATION", "PACK", "UNPACK", "SPLIT", "SPLIT_V",
        "SLICE", "STRIDED_SLICE", "GATHER", "GATHER_ND", "PAD", "PADV2", "MIRROR_PAD", "SHAPE", "TILE",
        "BROADCAST_TO", "QUANTIZE", "DEQUANTIZE", "CAST", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "ZEROS_LIKE",
        "FILL", "REVERSE_V2", "SCATTER_ND", "EMBEDDING_LOOKUP", "WHILE", "IF", "CALL_ONCE", "VAR_HANDLE",
        "READ_VARIABLE", "ASSIGN_VARIABLE",
    }
)

def op_macs(sg: Subgraph, op: Operator) -> int:
    """Estimated multiply-accumulates of one operator (rules in the module docstring)."""
    if op.name in _DATA_MOVEMENT or op.kind != "builtin":
        return 0
    if op.name == "DENSIFY" and op.inputs and (t := sg.tensor(op.inputs[0])) is not None and t.is_constant:
        return 0  # a constant is densified once, as the model loads, not per inference
    ins = [sg.tensor(i) for i in op.inputs]
    out = sg.tensor(op.outputs[0]) if op.outputs else None
    if out is None:
        return 0
    n_out = out.elements

    def dims(pos: int) -> tuple[int, ...]:
        t = ins[pos] if pos < len(ins) else None
        return t.shape if t is not None else ()

    w = dims(1)
    if op.name == "CONV_2D" and len(w) == 4:
        return n_out * w[1] * w[2] * w[3]
    if op.name == "DEPTHWISE_CONV_2D" and len(w) == 4:
        return n_out * w[1] * w[2]
    if op.name == "CONV_3D" and len(w) == 5:
        return n_out * w[0] * w[1] * w[2] * w[3]
    if op.name == "TRANSPOSE_CONV" and len(w) == 4 and ins[2] is not None:
        return ins[2].elements * w[0] * w[1] * w[2]
    if op.name == "CONV_3D_TRANSPOSE" and len(w) == 5 and ins[2] is not None:
        return ins[2].elements * w[0] * w[1] * w[2] * w[3]
    if op.name == "FULLY_CONNECTED" and w:
        return n_out * w[-1]
    if op.name == "BATCH_MATMUL" and len(dims(0)) >= 2:
        lhs = dims(0)
        return n_out * (lhs[-2] if op.options.get("adj_x") else lhs[-1])
    if op.name in ("LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM") and dims(0) and out.shape:
        hidden, features = out.shape[-1], dims(0)[-1]
        return (n_out // max(hidden, 1)) * 4 * hidden * (features + hidden)
    return n_out


def total_macs(model: TFLiteModel) -> int:
    """Estimated multiply-accumulates of the whole model, every subgraph (what macs_total reports)."""
    return sum(op_macs(sg, op) for sg in model.subgraphs for op in sg.operators)
