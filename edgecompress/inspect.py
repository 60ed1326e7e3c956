"""What is inside a .tflite file: IO, operators, dtypes, parameters, weight statistics and estimated MACs.

Works from the flatbuffer alone (no TensorFlow), so it runs on a Raspberry Pi; only a file with dynamic
dimensions is also loaded by the runtime, in a child process, for the shapes it resolves.

Multiply-accumulates come from edgecompress.macs (the rules are there).

Weights are constant tensors holding learned values: floating or quantized (scale present) constants, and
any constant a compute op takes as weight or bias. Other constants (int32 shapes, axes, indices) are not
parameters. The parameter count counts every weight tensor; weight bytes count a buffer shared by several
tensors once, as the file stores it. The converter merges identical constants (an untrained LSTM's all-zero
gate biases become one tensor) and drops all-zero biases, so an untrained model can show fewer parameters
than Keras counts; trained models match. Sparsity is the share of weights equal to zero (stored value == zero point for quantized ones);
distinct values are counted on the stored numbers, so pruning and clustering show up after quantization too.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecompress.errors import UserError
from edgecompress.fileio import gzip_size
from edgecompress.macs import op_macs
from edgecompress.runtime import check_tflite_file
from edgecompress.shapes import resolve_shapes, tflite_input_shapes
from edgecompress.tflite_reader import (
    COMPUTE_OPS,
    Tensor,
    TFLiteModel,
    is_integer_model,
    parse_model,
    state_size,
    unsupported_ops,
)

# The input position of the activation (everything else a compute op takes is a weight or bias).
_ACTIVATION_INPUT = {"TRANSPOSE_CONV": 2, "CONV_3D_TRANSPOSE": 2}
_NON_WEIGHT_INPUT = {"TRANSPOSE_CONV": (0,), "CONV_3D_TRANSPOSE": (0,)}  # the output_shape tensor


@dataclass(frozen=True)
class IOSpec:
    name: str
    shape: list[int]
    shape_signature: list[int]  # -1 marks a dynamic dimension
    dtype: str
    scale: list[float]  # empty when not quantized; one per channel when per-channel
    zero_point: list[int]


@dataclass(frozen=True)
class OpSummary:
    name: str
    kind: str  # builtin, flex, custom
    count: int
    versions: list[int]
    macs: int


@dataclass(frozen=True)
class DtypeSummary:
    dtype: str
    tensors: int
    constant_tensors: int
    constant_bytes: int  # stored in the file
    activation_bytes: int  # nominal size of the non-constant tensors (batch as stored)


@dataclass(frozen=True)
class WeightStats:
    name: str
    shape: list[int]
    dtype: str
    elements: int
    stored_bytes: int
    quantized: str  # "no", "per-tensor", "per-channel" or "blockwise"
    sparsity: float | None  # share of zeros; None when the values cannot be read (strings, bfloat16, ...)
    distinct_values: int | None
    block_size: int | None = None  # values per scale when blockwise
    storage: str = "dense"  # "dense", "sparse", or "block-sparse 1x4": TFLite's sparse format, DENSIFY at load
    dense_bytes: int = 0  # what the tensor holds once densified (stored_bytes is what the file holds)


@dataclass
class InspectReport:
    path: str
    size_bytes: int
    gzip_bytes: int
    schema_version: int
    subgraphs: int
    signatures: list[str]
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    operators: list[OpSummary]
    dtypes: list[DtypeSummary]
    parameter_count: int
    weight_bytes: int
    other_bytes: int  # graph structure, non-weight constants, metadata, padding
    macs_total: int
    integer_model: bool
    weights: list[WeightStats]
    unsupported_ops: list[str]  # Flex and custom op names
    warnings: list[str] = field(default_factory=list)
    resolved_tensors: int = 0  # tensors whose shapes came from the runtime (dynamic dimensions)
    resolved_at: dict[str, list[int]] = field(default_factory=dict)  # the input shapes given for that (else batch 1)
    float16_weights: int = 0  # constants stored as float16 and dequantized to float32 by a DEQUANTIZE op
    state_variables: int = 0  # variables kept between invocations (tflite_reader.state_size)


def inspect_model(path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None) -> InspectReport:
    """What PATH holds; INPUT_SHAPES (name -> shape, "" for the only input) sizes inputs with free dimensions,
    which are otherwise sized at 1 by the runtime."""
    data = check_tflite_file(path)
    model = parse_model(data, str(path))
    given = tflite_input_shapes(model, input_shapes or {})
    sizing = []
    try:
        resolved = resolve_shapes(model, path, given)
    except UserError as exc:  # Flex ops, say: the file is still worth reading
        resolved = 0
        sizing.append(f"the runtime could not size the dynamic shapes ({exc}): MACs and sizes are from the stored shapes")
    weights = _weight_tensors(model)
    stats = [_weight_stats(t) for t in weights]
    # The converter may point several tensors at one buffer (identical constants): bytes count it once.
    # int4 buffers hold two values per byte, so their stored size is already the packed one.
    weight_bytes = sum({t.buffer: t.stored_bytes for t in weights}.values())
    scales = _block_scale_ids(model)
    ops = _op_summaries(model)
    return InspectReport(
        path=str(path),
        size_bytes=len(data),
        gzip_bytes=gzip_size(data),
        schema_version=model.schema_version,
        subgraphs=len(model.subgraphs),
        signatures=[s.key for s in model.signatures],
        inputs=[_io_spec(t) for t in model.inputs],
        outputs=[_io_spec(t) for t in model.outputs],
        operators=ops,
        dtypes=_dtype_summaries(model),
        parameter_count=sum(t.elements for t in weights if id(t) not in scales),
        weight_bytes=weight_bytes,
        other_bytes=len(data) - weight_bytes,
        macs_total=sum(o.macs for o in ops),
        integer_model=is_integer_model(model),
        weights=stats,
        unsupported_ops=unsupported_ops(model),
        warnings=sizing + _warnings(model),
        resolved_tensors=resolved,
        resolved_at={name: list(shape) for name, shape in given.items()},
        float16_weights=_float16_weights(model),
        state_variables=state_size(model),
    )


def _float16_weights(model: TFLiteModel) -> int:
    """Constants stored as float16 that a DEQUANTIZE turns into float32: how MediaPipe and hubs ship weights."""
    return sum(1 for sg in model.subgraphs for op in sg.operators if op.name == "DEQUANTIZE" and op.inputs
               and (t := sg.tensor(op.inputs[0])) is not None and t.is_constant and t.dtype == "float16")


def _io_spec(t: Tensor) -> IOSpec:
    q = t.quantization
    return IOSpec(t.name, list(t.shape), list(t.shape_signature), t.dtype, list(q.scale), list(q.zero_point))


def _op_summaries(model: TFLiteModel) -> list[OpSummary]:
    counts: dict[str, int] = defaultdict(int)
    versions: dict[str, set[int]] = defaultdict(set)
    macs: dict[str, int] = defaultdict(int)
    kinds: dict[str, str] = {}
    for sg in model.subgraphs:
        for op in sg.operators:
            counts[op.name] += 1
            versions[op.name].add(op.version)
            macs[op.name] += op_macs(sg, op)
            kinds[op.name] = op.kind
    # First-seen order follows the graph, which reads better than alphabetical for small models.
    return [OpSummary(n, kinds[n], counts[n], sorted(versions[n]), macs[n]) for n in counts]


def _weight_tensors(model: TFLiteModel) -> list[Tensor]:
    """Constant tensors holding learned values (floating or quantized, or a compute op's weight or bias)."""
    from_compute: set[tuple[int, int]] = set()
    for sg in model.subgraphs:
        for op in sg.operators:
            if op.name in COMPUTE_OPS:
                skip = {_ACTIVATION_INPUT.get(op.name, 0), *_NON_WEIGHT_INPUT.get(op.name, ())}
                from_compute.update((sg.index, i) for pos, i in enumerate(op.inputs) if pos not in skip and i >= 0)
    weights = []
    for sg in model.subgraphs:
        for t in sg.tensors:
            learned = t.dtype.startswith(("float", "bfloat")) or t.quantization.is_quantized
            if t.is_constant and (learned or (sg.index, t.index) in from_compute):
                weights.append(t)
    return weights


def _block_scale_ids(model: TFLiteModel) -> set[int]:
    """id() of the tensors holding blockwise scales: weight bytes, but quantization parameters, not parameters."""
    found = set()
    for sg in model.subgraphs:
        for t in sg.tensors:
            if t.quantization.block_size and 0 <= t.quantization.block_scales < len(sg.tensors):
                found.add(id(sg.tensors[t.quantization.block_scales]))
    return found


def _weight_stats(t: Tensor) -> WeightStats:
    q = t.quantization
    quantized = "per-channel" if q.per_channel else ("per-tensor" if q.is_quantized else "no")
    if q.block_size:
        quantized = "blockwise"
    sparsity = distinct = None
    if t.data is not None and t.data.size:
        values = t.data
        zero = _zero_values(t)
        # A sparse tensor stores only its kept entries (or blocks): every entry it leaves out is a zero too.
        zeros = int(np.sum(values == zero)) + (t.elements - values.size if t.sparse else 0)
        sparsity = zeros / max(t.elements, 1)
        distinct = int(np.unique(values).size) + (1 if t.sparse and t.elements > values.size else 0)
    storage = "dense" if not t.sparse else (
        f"block-sparse {'x'.join(map(str, t.sparse_block))}" if t.sparse_block else "sparse")
    return WeightStats(t.name, list(t.shape), t.dtype, t.elements, t.stored_bytes, quantized, sparsity, distinct,
                       q.block_size or None, storage, _nominal_bytes(t))


def _zero_values(t: Tensor) -> np.ndarray | int:
    """What a real zero is stored as: 0, or the zero point (broadcast along the quantized axis if per channel)."""
    zp = t.quantization.zero_point
    if not zp or t.data is None:
        return 0
    if len(zp) == 1 or t.sparse or t.data.ndim <= t.quantization.axis or t.data.shape[t.quantization.axis] != len(zp):
        return int(zp[0])
    shape = [1] * t.data.ndim
    shape[t.quantization.axis] = len(zp)
    return np.asarray(zp, dtype=np.int64).reshape(shape)


def _dtype_summaries(model: TFLiteModel) -> list[DtypeSummary]:
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for sg in model.subgraphs:
        for t in sg.tensors:
            row = rows[t.dtype]
            row[0] += 1
            if t.is_constant:
                row[1] += 1
                row[2] += t.stored_bytes
            else:
                row[3] += _nominal_bytes(t)
    return [DtypeSummary(d, *r) for d, r in sorted(rows.items(), key=lambda kv: -kv[1][0])]


def _nominal_bytes(t: Tensor) -> int:
    if t.dtype == "int4":
        return (t.elements + 1) // 2
    try:
        itemsize = np.dtype(t.dtype).itemsize
    except TypeError:  # strings, resources, variants: no fixed size
        return 0
    return t.elements * itemsize


def _warnings(model: TFLiteModel) -> list[str]:
    out = []
    flex = sorted({op.name for op in model.operators if op.kind == "flex"})
    custom = sorted({op.name for op in model.operators if op.kind == "custom"})
    if flex:
        out.append(
            f"Flex (SELECT_TF_OPS) operators {', '.join(flex)}: stock ai-edge-litert and tflite-runtime cannot run "
            "them; reconvert with TFLite builtin ops only, or ship the TF Select (Flex) delegate"
        )
    if custom:
        out.append(
            f"custom operators {', '.join(custom)}: a runtime can run them only with their kernels registered"
        )
    for t in model.inputs:
        if t.is_dynamic:
            out.append(f"input {t.name} has dynamic dimensions {list(t.shape_signature)}: devices run a fixed shape")
    return out
