"""Small edits to a .tflite through the flatbuffer object API of the schema that ships with ai-edge-litert
(no TensorFlow): read, add tensors and operators, write back."""
from __future__ import annotations

from types import ModuleType
from typing import Any


def flatbuffers() -> ModuleType:
    """ai-edge-litert's flatbuffer tools (schema classes under .schema_fb), imported when an edit needs them."""
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils


def read(data: bytes) -> Any:
    """DATA as a mutable ModelT."""
    return flatbuffers().read_model_from_bytearray(bytearray(data))


def write(model: Any) -> bytes:
    return bytes(flatbuffers().convert_object_to_bytearray(model))


def op_code(model: Any, op: Any) -> int:
    """OP's BuiltinOperator code."""
    return flatbuffers().get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])


def fill_builtin_codes(data: bytes) -> tuple[bytes, int]:
    """DATA with each operator code's builtin_code filled from deprecated_builtin_code, and how many were empty.
    Files written before schema v3's builtin_code field (MediaPipe's short-range face detector) leave it 0, which
    reads as ADD to tools that look only there (ai-edge-quantizer then quantizes no op of that file, and its full
    int8 treats convolution weights as ADD inputs); the runtime takes the larger of the two."""
    root = flatbuffers().schema_fb.Model.GetRootAs(data, 0)
    codes = [root.OperatorCodes(i) for i in range(root.OperatorCodesLength())]
    if all(c.BuiltinCode() >= c.DeprecatedBuiltinCode() for c in codes):
        return data, 0  # the usual case, without unpacking a large file
    model = read(data)
    for entry in model.operatorCodes:
        entry.builtinCode = max(entry.builtinCode, entry.deprecatedBuiltinCode)
    return write(model), sum(c.BuiltinCode() < c.DeprecatedBuiltinCode() for c in codes)


def add_tensor(subgraph: Any, like: Any, shape: list[int], suffix: bytes, dtype: int | None = None) -> int:
    """A new activation tensor named after LIKE, with SHAPE and LIKE's type (or DTYPE), unquantized; its index."""
    tensor = flatbuffers().schema_fb.TensorT()
    tensor.shape = [int(d) for d in shape]
    tensor.type = like.type if dtype is None else dtype
    tensor.buffer = 0  # the empty buffer: computed at run time
    tensor.name = (like.name or b"tensor") + suffix
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def operator(model: Any, code: int, inputs: list[int], outputs: list[int], version: int = 1) -> Any:
    """A new builtin operator CODE (at VERSION, which the runtime checks against its kernels)."""
    op = flatbuffers().schema_fb.OperatorT()
    op.opcodeIndex = opcode_index(model, code, version)
    op.inputs, op.outputs = list(inputs), list(outputs)
    return op


def opcode_index(model: Any, code: int, version: int) -> int:
    """The model's operator code entry for builtin CODE at VERSION, added when missing."""
    fb = flatbuffers()
    for index, entry in enumerate(model.operatorCodes):
        if fb.get_builtin_code_from_operator_code(entry) == code and entry.version == version:
            return index
    entry = fb.schema_fb.OperatorCodeT()
    entry.builtinCode = code
    entry.deprecatedBuiltinCode = min(code, 127)  # codes past 127 live in builtinCode only
    entry.version = version
    model.operatorCodes.append(entry)
    return len(model.operatorCodes) - 1


def drop_unused_tensors(model: Any) -> int:
    """Remove from each subgraph the tensors no operator, subgraph input or output, or signature refers to (such
    as a float16 constant whose DEQUANTIZE was folded): tools that walk every tensor expect data behind each.
    Returns how many went."""
    dropped = 0
    for index, subgraph in enumerate(model.subgraphs):
        signatures = [t for sd in (model.signatureDefs or []) if sd.subgraphIndex == index
                      for t in [*(sd.inputs or []), *(sd.outputs or [])]]
        used = {i for op in subgraph.operators for i in [*(op.inputs if op.inputs is not None else []),
                                                         *(op.outputs if op.outputs is not None else [])] if i >= 0}
        used |= {int(i) for i in subgraph.inputs} | {int(i) for i in subgraph.outputs}
        used |= {int(t.tensorIndex) for t in signatures}
        keep = [i for i in range(len(subgraph.tensors)) if i in used]
        if len(keep) == len(subgraph.tensors):
            continue
        new_index = {old: new for new, old in enumerate(keep)}
        remap = lambda seq: [new_index[int(i)] if i >= 0 else int(i) for i in seq]  # noqa: E731 - -1: no input
        for op in subgraph.operators:
            op.inputs = remap(op.inputs if op.inputs is not None else [])
            op.outputs = remap(op.outputs if op.outputs is not None else [])
            if getattr(op, "intermediates", None) is not None:
                op.intermediates = remap(op.intermediates)
        subgraph.inputs, subgraph.outputs = remap(subgraph.inputs), remap(subgraph.outputs)
        for t in signatures:
            t.tensorIndex = new_index[int(t.tensorIndex)]
        dropped += len(subgraph.tensors) - len(keep)
        subgraph.tensors = [subgraph.tensors[i] for i in keep]
    return dropped
