"""Embedding tables as EMBEDDING_LOOKUP, so ai-edge-quantizer quantizes them.

TFLiteConverter lowers a Keras Embedding to GATHER(constant float table, int32 ids) on axis 0, and
ai-edge-quantizer's weight-only and dynamic recipes quantize EMBEDDING_LOOKUP tables but leave GATHER's in
float: a text model's largest weight (8000x128 floats, 4 MB, in the project's text encoder) stayed float32
and its int4 file came out bigger than int8's. On axis 0 with no batch dimensions the two ops compute the
same rows, but LiteRT's EMBEDDING_LOOKUP takes 1-D ids only, so ids of higher rank are flattened by a RESHAPE
before it and its rows are given the original output shape by a RESHAPE after it.

Works on the flatbuffer object API of the schema that ships with ai-edge-litert: no TensorFlow.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def gathers_to_embedding_lookups(data: bytes) -> tuple[bytes, int]:
    """DATA (a .tflite) with every GATHER of rows from a constant float32 table rewritten as EMBEDDING_LOOKUP,
    and how many were rewritten (DATA itself comes back when none qualifies)."""
    from ai_edge_litert.tools import flatbuffer_utils as fb

    model = fb.read_model_from_bytearray(bytearray(data))
    rewritten = 0
    for subgraph in model.subgraphs:
        operators = []
        for op in subgraph.operators:
            if _is_row_gather(fb, model, subgraph, op):
                operators.extend(_lookup_ops(fb, model, subgraph, op))
                rewritten += 1
            else:
                operators.append(op)
        subgraph.operators = operators
    if not rewritten:
        return data, 0
    return bytes(fb.convert_object_to_bytearray(model)), rewritten


def _is_row_gather(fb: Any, model: Any, subgraph: Any, op: Any) -> bool:
    """GATHER(params, indices) taking whole rows of a constant float32 table by int32 ids of a fixed shape."""
    schema = fb.schema_fb
    code = fb.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
    if code != schema.BuiltinOperator.GATHER or len(op.inputs) != 2 or len(op.outputs) != 1:
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


def _lookup_ops(fb: Any, model: Any, subgraph: Any, gather: Any) -> list[Any]:
    """The ops that replace GATHER: EMBEDDING_LOOKUP(ids, table), with RESHAPEs around it unless ids are 1-D."""
    schema = fb.schema_fb
    table_index, ids_index = gather.inputs
    (output_index,) = gather.outputs
    ids, output = subgraph.tensors[ids_index], subgraph.tensors[output_index]
    lookup = _operator(fb, model, schema.BuiltinOperator.EMBEDDING_LOOKUP, [ids_index, table_index], [output_index])
    if len(ids.shape) == 1:
        return [lookup]
    count = int(np.prod(ids.shape))
    flat_ids = _add_tensor(fb, subgraph, ids, [count], b"/flat_ids")
    rows = _add_tensor(fb, subgraph, output, [count, *output.shape[len(ids.shape):]], b"/rows")
    lookup.inputs[0], lookup.outputs[0] = flat_ids, rows
    return [
        _reshape(fb, model, ids_index, flat_ids, [count]),
        lookup,
        _reshape(fb, model, rows, output_index, [int(d) for d in output.shape]),
    ]


def _add_tensor(fb: Any, subgraph: Any, like: Any, shape: list[int], suffix: bytes) -> int:
    """A new activation tensor of LIKE's type with SHAPE, named after LIKE; its index."""
    tensor = fb.schema_fb.TensorT()
    tensor.shape = [int(d) for d in shape]
    tensor.type = like.type
    tensor.buffer = 0  # the empty buffer: computed at run time
    tensor.name = (like.name or b"embedding") + suffix
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def _reshape(fb: Any, model: Any, source: int, target: int, shape: list[int]) -> Any:
    op = _operator(fb, model, fb.schema_fb.BuiltinOperator.RESHAPE, [source], [target])
    op.builtinOptionsType = fb.schema_fb.BuiltinOptions.ReshapeOptions
    op.builtinOptions = fb.schema_fb.ReshapeOptionsT()
    op.builtinOptions.newShape = shape
    return op


def _operator(fb: Any, model: Any, code: int, inputs: list[int], outputs: list[int]) -> Any:
    op = fb.schema_fb.OperatorT()
    op.opcodeIndex = _opcode_index(fb, model, code)
    op.inputs, op.outputs = list(inputs), list(outputs)
    return op


def _opcode_index(fb: Any, model: Any, code: int) -> int:
    """The model's operator code entry for builtin CODE (version 1), added when missing."""
    for index, entry in enumerate(model.operatorCodes):
        if fb.get_builtin_code_from_operator_code(entry) == code and entry.version == 1:
            return index
    entry = fb.schema_fb.OperatorCodeT()
    entry.builtinCode = code
    entry.deprecatedBuiltinCode = min(code, 127)  # codes past 127 live in builtinCode only
    entry.version = 1
    model.operatorCodes.append(entry)
    return len(model.operatorCodes) - 1


def _unquantized(tensor: Any) -> bool:
    q = tensor.quantization
    return q is None or q.scale is None or len(q.scale) == 0


def _static(tensor: Any) -> bool:
    """A shape known in full: the RESHAPEs around the lookup are written with fixed shapes."""
    shape = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
    return shape is not None and len(shape) >= 1 and all(int(d) >= 0 for d in shape)
