"""What a weight quantization really quantized, per operator type: no mode reports success for a no-op.

ai-edge-quantizer leaves an op it has no rule for in float without a word (with ALL_SUPPORTED, an unsupported
(algorithm, op) pair is skipped silently), so a file can come back "quantized" with every weight still float
(seen: a Keras LSTM in int4, 1.08x smaller, no integer tensor in it). The weights are counted in the result:
a constant of rank 2 or more that an op reads, directly or through a DEQUANTIZE (weight-only modes keep the
integer constant and dequantize it as the model loads). Biases (rank 1) are not counted.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from edgecompress.errors import UserError
from edgecompress.tflite_reader import Subgraph, Tensor, TFLiteModel
from edgecompress.converters.modes import MODES

# The ops each mode's kernels take integer weights for (Mode.kernels): leaving one of these float is less than
# the mode promises.
PROMISED = {m.name: m.kernels for m in MODES.values() if m.kernels}
_INTEGER = frozenset({"int8", "uint8", "int4", "int16"})


@dataclass(frozen=True)
class OpCoverage:
    op: str
    quantized: int  # weight tensors stored as integers
    float: int  # weight tensors left float
    float_elements: int  # the weights those hold
    elements: int  # all the op type's weights


def weight_coverage(model: TFLiteModel) -> list[OpCoverage]:
    """Per op type of MODEL, how many of its weight tensors are integer and how many stayed float."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for sg in model.subgraphs:
        producers = {out: op for op in sg.operators for out in op.outputs}
        for op in sg.operators:
            if op.name == "DEQUANTIZE":
                continue
            for index in op.inputs:
                weight = _weight(sg, index, producers)
                if weight is None:
                    continue
                row = counts[op.name]
                row[3] += weight.elements
                if weight.dtype in _INTEGER:
                    row[0] += 1
                else:
                    row[1] += 1
                    row[2] += weight.elements
    return [OpCoverage(op, *row) for op, row in counts.items()]


def _weight(sg: Subgraph, index: int, producers: dict) -> Tensor | None:
    """The constant weight tensor behind input INDEX (through a DEQUANTIZE), or None when it is not a weight."""
    tensor = sg.tensor(index)
    if tensor is None:
        return None
    producer = producers.get(index)
    if producer is not None and producer.name == "DEQUANTIZE" and producer.inputs:
        tensor = sg.tensor(producer.inputs[0])
    if tensor is None or not tensor.is_constant or len(tensor.shape) < 2 or tensor.dtype in ("int32", "int64", "bool"):
        return None
    return tensor


def float_share(coverage: list[OpCoverage]) -> float:
    """The share of all weights left float."""
    return sum(c.float_elements for c in coverage) / max(sum(c.elements for c in coverage), 1)


def describe_float(coverage: list[OpCoverage]) -> str:
    """'DEPTHWISE_CONV_2D (13 tensors, 8% of the weights)' for every op type with weights left float."""
    total = max(sum(c.elements for c in coverage), 1)
    return ", ".join(f"{c.op} ({c.float} tensor{'s' if c.float != 1 else ''}, {c.float_elements / total:.0%} of the "
                     "weights)" for c in coverage if c.float)


def check_coverage(coverage: list[OpCoverage], quantize: str, source: str, allow_partial: bool = False) -> None:
    """A UserError when QUANTIZE quantized no weight at all, or (unless ALLOW_PARTIAL) left float a weight of an
    op its kernels cover; the message names the ops left float and their share of the weight bytes."""
    quantized = sum(c.quantized for c in coverage)
    left = [c for c in coverage if c.float]
    listed = describe_float(coverage)
    if not quantized:
        if not left:
            raise UserError(f"{source} has no weights to quantize: {quantize} would change nothing",
                            settings=("quantize",))
        others = [m for m in PROMISED if m != quantize and any(c.op in PROMISED[m] for c in left)]
        raise UserError(
            f"{quantize} quantized nothing in {source}: the weights of {listed} stay float (ai-edge-quantizer has "
            f"no {quantize} rule for them); " + (f"try quantize {' or '.join(others)}, or " if others else "")
            + "convert the Keras model with quantize dynamic or int8 (TFLiteConverter's kernels for these ops "
            "take int8 weights)", settings=("quantize",))
    broken = [c for c in left if c.op in PROMISED.get(quantize, frozenset())]
    if broken and not allow_partial:
        raise UserError(
            f"{quantize} left float weights its kernels take as integers: "
            + ", ".join(f"{c.op} ({c.float} of {c.float + c.quantized})" for c in broken)
            + ": set allow_partial to keep the file as it is", settings=("allow_partial", "quantize"))
