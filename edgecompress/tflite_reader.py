"""Read a .tflite flatbuffer into plain dataclasses, without TensorFlow.

The schema classes come from `ai_edge_litert.schema_py_generated` (they ship with the runtime and need only
the `flatbuffers` package), so this works on a Raspberry Pi that has nothing but the runtime side.
Constant tensors carry their buffer as a numpy array (a read-only view into the file's bytes, no copy).

Other modules rely on these names: `read_model`, `parse_model`, `unsupported_ops`, `is_integer_model`,
`TFLiteModel`, `Subgraph`, `Operator`, `Tensor`, `Quantization`, `Signature`, `COMPUTE_OPS`.
"""
from __future__ import annotations

import hashlib

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.errors import UserError
from edgecompress.runtime import check_tflite_file

# Ops that do the bulk of a network's arithmetic (multiply-accumulates); the dtype of their outputs tells a
# float model from an integer one, and inspect estimates their MACs from the weight shapes.
COMPUTE_OPS = frozenset(
    {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "CONV_3D",
        "CONV_3D_TRANSPOSE",
        "TRANSPOSE_CONV",
        "FULLY_CONNECTED",
        "BATCH_MATMUL",
        "LSTM",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
    }
)
INTEGER_DTYPES = frozenset({"int8", "uint8", "int16", "int4"})
_CUSTOM = "CUSTOM"


@dataclass(frozen=True)
class Quantization:
    """Affine quantization: real = scale * (stored - zero_point), per tensor or per channel along `axis`.

    Blockwise (int4 from ai-edge-quantizer): one scale per `block_size` values along the last dimension, held
    in the constant tensor `block_scales` (an index in the same subgraph) instead of in `scale`.
    """

    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    axis: int = 0
    block_size: int = 0  # 0 unless blockwise
    block_scales: int = -1

    @property
    def is_quantized(self) -> bool:
        return len(self.scale) > 0 or self.block_size > 0

    @property
    def per_channel(self) -> bool:
        return len(self.scale) > 1


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]  # -1 marks a dynamic dimension
    dtype: str  # numpy-style name ("float32", "int8"), or the schema's name lower-cased ("int4", "string")
    buffer: int
    quantization: Quantization
    data: np.ndarray | None = field(default=None, repr=False)  # constant values, shaped when possible
    stored_bytes: int = 0  # bytes held in the file for this tensor's buffer
    is_variable: bool = False
    sparse: bool = False  # stored in TFLite's sparse format (data is the compressed values)
    sparse_block: tuple[int, ...] = ()  # block-sparse: the dense block each stored entry is (e.g. (1, 4))

    @property
    def is_constant(self) -> bool:
        return self.stored_bytes > 0

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)


@dataclass(frozen=True)
class Operator:
    index: int
    name: str  # builtin name ("CONV_2D") or, for custom and Flex ops, the custom code ("FlexMatrixInverse")
    kind: str  # "builtin", "flex" or "custom"
    version: int
    inputs: tuple[int, ...]  # tensor indices; -1 is an omitted optional input
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)  # the few builtin options read: MAC rules, conv geometry


@dataclass
class Subgraph:
    index: int
    name: str
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def tensor(self, index: int) -> Tensor | None:
        return self.tensors[index] if index >= 0 else None


@dataclass(frozen=True)
class Signature:
    key: str
    subgraph: int
    inputs: dict[str, int]  # signature name -> tensor index
    outputs: dict[str, int]


@dataclass
class TFLiteModel:
    path: str
    size_bytes: int
    schema_version: int
    description: str
    subgraphs: list[Subgraph]
    signatures: list[Signature]

    @property
    def main(self) -> Subgraph:
        """The subgraph an interpreter runs by default (inputs/outputs of get_input_details)."""
        return self.subgraphs[0]

    @property
    def inputs(self) -> list[Tensor]:
        return [self.main.tensors[i] for i in self.main.inputs]

    @property
    def outputs(self) -> list[Tensor]:
        return [self.main.tensors[i] for i in self.main.outputs]

    @property
    def operators(self) -> list[Operator]:
        return [op for sg in self.subgraphs for op in sg.operators]


VARIABLE_OPS = frozenset({"VAR_HANDLE", "ASSIGN_VARIABLE", "READ_VARIABLE"})


def state_size(model: TFLiteModel) -> int:
    """How many variables MODEL keeps between invocations: variable tensors (a converted Keras LSTM's states,
    which its kernel overwrites on every call) and resource variables (VAR_HANDLE: streaming models)."""
    tensors = sum(t.is_variable for sg in model.subgraphs for t in sg.tensors)
    handles = sum(op.name == "VAR_HANDLE" for sg in model.subgraphs for op in sg.operators)
    return tensors + handles


def graph_digest(model: TFLiteModel) -> str:
    """A digest of what the runtime computes, not of the weights' values: every operator with its version and
    the shapes and dtypes it reads and writes. Pruned, clustered or QAT-trained variants of one int8 model share
    it: dense kernels run them in the same time, so one measurement stands for all of them."""
    parts = []
    for sg in model.subgraphs:
        for op in sg.operators:
            io = [(t.shape, t.dtype, t.is_constant) if t is not None else None
                  for t in (sg.tensor(i) for i in (*op.inputs, *op.outputs))]
            parts.append((op.name, op.version, io))
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def read_model(path: str | Path) -> TFLiteModel:
    """Parse the .tflite file at PATH; empty, foreign, truncated or damaged files raise UserError."""
    data = check_tflite_file(path)
    return parse_model(data, str(path))


def parse_model(data: bytes, source: str = "<bytes>") -> TFLiteModel:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # e.g. a device with only tflite-runtime, which ships no schema module
        raise UserError(f"reading .tflite files needs the ai-edge-litert package ({exc}): pip install ai-edge-litert") from exc

    try:
        model = _parse(schema, data, source)
    except UserError:
        raise
    # A truncated or corrupted flatbuffer surfaces as whichever low-level read first runs off the end.
    except (struct.error, IndexError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise UserError(
            f"model {source} is damaged or truncated (its flatbuffer cannot be read): re-export or re-download it"
        ) from exc
    if not model.subgraphs:
        raise UserError(f"model {source} has no subgraph: re-export it with a TFLite converter")
    return model


def unsupported_ops(model: TFLiteModel) -> list[str]:
    """Names of Flex (SELECT_TF_OPS) and custom operators, which stock runtimes cannot run, sorted and unique."""
    return sorted({op.name for op in model.operators if op.kind != "builtin"})


def is_integer_model(model: TFLiteModel) -> bool:
    """True when the main compute ops produce int8/uint8/int16 tensors (full-integer quantization).

    Dynamic-range and float16 models keep float activations, so they count as float. A model with none of
    COMPUTE_OPS is integer when no operator produces a float tensor.
    """
    pairs = [(sg, op) for sg in model.subgraphs for op in sg.operators]
    compute = [(sg, op) for sg, op in pairs if op.name in COMPUTE_OPS]
    dtypes = {sg.tensors[i].dtype for sg, op in (compute or pairs) for i in op.outputs if i >= 0}
    if not dtypes:
        return False
    if compute:
        return dtypes <= INTEGER_DTYPES
    return not any(d.startswith(("float", "bfloat", "complex")) for d in dtypes)


# --- parsing ---------------------------------------------------------------------------------------------


def _enum_names(enum_cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", errors="replace") if raw else ""


def _ints(obj: Any, method: str) -> tuple[int, ...]:
    """A flatbuffer int vector as a tuple (the *AsNumpy accessors return 0 when the vector is absent)."""
    if getattr(obj, method + "IsNone")():
        return ()
    return tuple(int(v) for v in getattr(obj, method + "AsNumpy")())


def _parse(schema: Any, data: bytes, source: str) -> TFLiteModel:
    root = schema.Model.GetRootAs(data, 0)
    op_names = _enum_names(schema.BuiltinOperator)
    dtype_names = {k: v.lower() for k, v in _enum_names(schema.TensorType).items()}
    opcodes = [_opcode(root.OperatorCodes(i), op_names) for i in range(root.OperatorCodesLength())]
    buffers = [_buffer_bytes(root.Buffers(i), data, source) for i in range(root.BuffersLength())]
    subgraphs = [
        _subgraph(schema, root.Subgraphs(i), i, opcodes, buffers, dtype_names, source)
        for i in range(root.SubgraphsLength())
    ]
    signatures = [_signature(root.SignatureDefs(i)) for i in range(root.SignatureDefsLength())]
    return TFLiteModel(
        path=source,
        size_bytes=len(data),
        schema_version=int(root.Version()),
        description=_text(root.Description()),
        subgraphs=subgraphs,
        signatures=signatures,
    )


def _opcode(code: Any, op_names: dict[int, str]) -> tuple[str, str, int]:
    """(name, kind, version). Old files put codes < 127 in deprecated_builtin_code only; new ones fill both."""
    builtin = max(int(code.DeprecatedBuiltinCode()), int(code.BuiltinCode()))
    name = op_names.get(builtin, f"BUILTIN_{builtin}")
    version = int(code.Version()) or 1
    if name != _CUSTOM:
        return name, "builtin", version
    custom = _text(code.CustomCode()) or "unnamed custom op"
    return custom, ("flex" if custom.startswith("Flex") else "custom"), version


def _buffer_bytes(buf: Any, data: bytes, source: str) -> memoryview:
    """A buffer's bytes: inline in the flatbuffer, or (models over 2 GB) at an offset after it."""
    offset, size = int(buf.Offset()), int(buf.Size())
    if offset > 1:
        if offset + size > len(data):
            raise UserError(f"model {source} is truncated (a weight buffer runs past the end): re-export it")
        return memoryview(data)[offset : offset + size]
    if buf.DataIsNone():
        return memoryview(b"")
    return memoryview(buf.DataAsNumpy())


def _subgraph(
    schema: Any,
    sg: Any,
    index: int,
    opcodes: list[tuple[str, str, int]],
    buffers: list[memoryview],
    dtype_names: dict[int, str],
    source: str,
) -> Subgraph:
    tensors = [_tensor(schema, sg.Tensors(i), i, buffers, dtype_names, source) for i in range(sg.TensorsLength())]
    operators = [_operator(schema, sg.Operators(i), i, opcodes, len(tensors), source) for i in range(sg.OperatorsLength())]
    inputs, outputs = _ints(sg, "Inputs"), _ints(sg, "Outputs")
    _check_indices(inputs + outputs, len(tensors), source)
    return Subgraph(index, _text(sg.Name()), tensors, operators, inputs, outputs)


def _check_indices(indices: tuple[int, ...], count: int, source: str) -> None:
    if any(i < -1 or i >= count for i in indices):
        raise UserError(f"model {source} refers to a tensor that does not exist (damaged file): re-export it")


def _tensor(
    schema: Any, t: Any, index: int, buffers: list[memoryview], dtype_names: dict[int, str], source: str
) -> Tensor:
    shape = _ints(t, "Shape")
    signature = _ints(t, "ShapeSignature") or shape
    dtype = dtype_names.get(int(t.Type()), f"type{int(t.Type())}")
    buffer_index = int(t.Buffer())
    if buffer_index >= len(buffers):
        raise UserError(f"model {source}: tensor {index} uses a missing buffer (damaged file): re-export it")
    raw = buffers[buffer_index]
    q = t.Quantization()
    quant = Quantization()
    if q is not None and q.DetailsType() == schema.QuantizationDetails.BlockwiseQuantization:
        details, blockwise = q.Details(), schema.BlockwiseQuantization()
        blockwise.Init(details.Bytes, details.Pos)
        quant = Quantization(block_size=int(blockwise.BlockSize()), block_scales=int(blockwise.Scales()))
    elif q is not None and not q.ScaleIsNone():
        quant = Quantization(
            tuple(float(s) for s in q.ScaleAsNumpy()),
            _ints(q, "ZeroPoint"),
            int(q.QuantizedDimension()),
        )
    sparse = t.Sparsity() is not None
    block = _sparse_block(t.Sparsity(), len(shape)) if sparse else ()
    return Tensor(
        index=index,
        name=_text(t.Name()),
        shape=shape,
        shape_signature=signature,
        dtype=dtype,
        buffer=buffer_index,
        quantization=quant,
        data=_array(raw, dtype, shape, sparse) if len(raw) else None,
        stored_bytes=len(raw),
        is_variable=bool(t.IsVariable()),
        sparse=sparse,
        sparse_block=block,
    )


def _sparse_block(sparsity: Any, rank: int) -> tuple[int, ...]:
    """The block shape of a block-sparse tensor: the dense sizes of the dimensions past the tensor's own rank
    in the traversal (one per entry of the block map); () for element-wise sparsity."""
    blocked = sparsity.BlockMapLength()
    if not blocked:
        return ()
    sizes = [int(sparsity.DimMetadata(i).DenseSize()) for i in range(sparsity.DimMetadataLength())]
    block = [1] * rank
    for k in range(blocked):
        block[int(sparsity.BlockMap(k))] = sizes[rank + k] if rank + k < len(sizes) else 1
    return tuple(block)


def _array(raw: memoryview, dtype: str, shape: tuple[int, ...], sparse: bool) -> np.ndarray | None:
    """The constant's values; None for types numpy cannot hold (strings, resources, bfloat16, float8, ...)."""
    if dtype == "int4":  # two values per byte, low nibble first, sign-extended
        packed = np.frombuffer(raw, dtype=np.uint8)
        nibbles = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(-1).astype(np.int8)
        values = np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        values = values[:count] if not sparse else values
    else:
        try:
            np_dtype = np.dtype(dtype)
        except TypeError:
            return None
        if np_dtype.kind not in "biufc" or len(raw) % np_dtype.itemsize:
            return None
        values = np.frombuffer(raw, dtype=np_dtype.newbyteorder("<"))
    if not sparse and values.size == (int(np.prod(shape, dtype=np.int64)) if shape else 1):
        return values.reshape(shape)
    return values


def _operator(schema: Any, op: Any, index: int, opcodes: list[tuple[str, str, int]], n_tensors: int, source: str) -> Operator:
    code = int(op.OpcodeIndex())
    if code >= len(opcodes):
        raise UserError(f"model {source}: operator {index} uses a missing operator code (damaged file): re-export it")
    name, kind, version = opcodes[code]
    inputs, outputs = _ints(op, "Inputs"), _ints(op, "Outputs")
    _check_indices(inputs + outputs, n_tensors, source)
    return Operator(index, name, kind, version, inputs, outputs, _options(schema, op, name))


def _options(schema: Any, op: Any, name: str) -> dict[str, Any]:
    # BATCH_MATMUL's transposition flags change its MAC count; CONV_2D's geometry is what error-compensating
    # rounding needs to see the inputs its weights multiply (converters.rounding). Shapes give the rest.
    if name == "BATCH_MATMUL" and op.BuiltinOptionsType() == schema.BuiltinOptions.BatchMatMulOptions:
        opts = _table(schema.BatchMatMulOptions(), op)
        return {"adj_x": bool(opts.AdjX()), "adj_y": bool(opts.AdjY())}
    if name == "CONV_2D" and op.BuiltinOptionsType() == schema.BuiltinOptions.Conv2DOptions:
        opts = _table(schema.Conv2DOptions(), op)
        return {"padding": "same" if opts.Padding() == schema.Padding.SAME else "valid",
                "stride": (int(opts.StrideH()), int(opts.StrideW())),
                "dilation": (int(opts.DilationHFactor()), int(opts.DilationWFactor()))}
    return {}


def _table(opts: Any, op: Any) -> Any:
    table = op.BuiltinOptions()
    opts.Init(table.Bytes, table.Pos)
    return opts


def _signature(sig: Any) -> Signature:
    def tensor_map(length: int, get: Any) -> dict[str, int]:
        return {_text(get(i).Name()): int(get(i).TensorIndex()) for i in range(length)}

    return Signature(
        key=_text(sig.SignatureKey()),
        subgraph=int(sig.SubgraphIndex()),
        inputs=tensor_map(sig.InputsLength(), sig.Inputs),
        outputs=tensor_map(sig.OutputsLength(), sig.Outputs),
    )
