"""Embedding tables as EMBEDDING_LOOKUP, so ai-edge-quantizer quantizes them.

TFLiteConverter lowers a Keras Embedding to GATHER(constant float table, int32 ids) on axis 0, and
ai-edge-quantizer's weight-only and dynamic recipes quantize EMBEDDING_LOOKUP tables but leave GATHER's in
float: a text model's largest weight (8000x128 floats, 4 MB, in the project's text encoder) stayed float32
and its int4 file came out bigger than int8's. On axis 0 with no batch dimensions the two ops compute the
same rows, but LiteRT's EMBEDDING_LOOKUP takes 1-D ids only, so ids of higher rank are flattened by a RESHAPE
before it and its rows are given the original output shape by a RESHAPE after it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgecompress.converters.tflite_edit import add_tensor, flatbuffers, op_code, operator, read, write


def gathers_to_embedding_lookups(data: bytes) -> tuple[bytes, int]:
    """DATA (a .tflite) with every GATHER of rows from a constant float32 table rewritten as EMBEDDING_LOOKUP,
    and how many were rewritten (DATA itself comes back when none qualifies)."""
    model = read(data)
    rewritten = 0
    for subgraph in model.subgraphs:
        operators = []
        for op in subgraph.operators:
            if _is_row_gather(model, subgraph, op):
                operators.extend(_lookup_ops(model, subgraph, op))
                rewritten += 1
            else:
                operators.append(op)
        subgraph.operators = operators
    return (write(model), rewritten) if rewritten else (data, 0)


def _is_row_gather(model: Any, subgraph: Any, op: Any) -> bool:
    """GATHER(params, indices) taking whole rows of a constant float32 table by int32 ids of a fixed shape."""
    schema = flatbuffers().schema_fb
    if op_code(model, op) != schema.BuiltinOperator.GATHER or len(op.inputs) != 2 or len(op.outputs) != 1:
        return False
    options = op.builtinOptions
    if options is not None and (options.axis != 0 or options.batchDims != 0):
        return False
    table, ids = (subgraph.tensors[i] for i in op.inputs)
    return (
        table.type == schema.TensorType.FLOAT32
        and model.buffers[table.buffer].data is not None
        and table.shape is not None and len(table.shape) >= 2
        and _unquantized(table)
        and ids.type == schema.TensorType.INT32
        and _static(ids)
    )


def _lookup_ops(model: Any, subgraph: Any, gather: Any) -> list[Any]:
    """The ops that replace GATHER: EMBEDDING_LOOKUP(ids, table), with RESHAPEs around it unless ids are 1-D."""
    codes = flatbuffers().schema_fb.BuiltinOperator
    table_index, ids_index = gather.inputs
    (output_index,) = gather.outputs
    ids, output = subgraph.tensors[ids_index], subgraph.tensors[output_index]
    if len(ids.shape) == 1:
        return [operator(model, codes.EMBEDDING_LOOKUP, [ids_index, table_index], [output_index])]
    count = int(np.prod(ids.shape))
    flat_ids = add_tensor(subgraph, ids, [count], b"/flat_ids")
    rows = add_tensor(subgraph, output, [count, *output.shape[len(ids.shape):]], b"/rows")
    return [
        _reshape(model, ids_index, flat_ids, [count]),
        operator(model, codes.EMBEDDING_LOOKUP, [flat_ids, table_index], [rows]),
        _reshape(model, rows, output_index, [int(d) for d in output.shape]),
    ]


def _reshape(model: Any, source: int, target: int, shape: list[int]) -> Any:
    schema = flatbuffers().schema_fb
    op = operator(model, schema.BuiltinOperator.RESHAPE, [source], [target])
    op.builtinOptionsType = schema.BuiltinOptions.ReshapeOptions
    op.builtinOptions = schema.ReshapeOptionsT()
    op.builtinOptions.newShape = shape
    return op


def _unquantized(tensor: Any) -> bool:
    q = tensor.quantization
    return q is None or q.scale is None or len(q.scale) == 0


def _static(tensor: Any) -> bool:
    """A shape known in full: the RESHAPEs around the lookup are written with fixed shapes."""
    shape = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
    return shape is not None and len(shape) >= 1 and all(int(d) >= 0 for d in shape)
