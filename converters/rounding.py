"""Error-compensating rounding of weights (GPTQ, Frantar et al. 2022) for CONV_2D and FULLY_CONNECTED, in numpy.

litert-quantizer has GPTQ for FULLY_CONNECTED only, and on a convolutional network (fer's CNN, basic-pitch: no
FULLY_CONNECTED worth the name) its GPTQ, OSCAR and Hadamard recipes change nothing (shared/FACTS.md). A
convolution is a matrix product over its input patches (im2col), so GPTQ applies to it unchanged: the Hessian
of the layer's squared output error is X^T X over the calibration patches, and each weight column's rounding
error is compensated by the columns not yet rounded.

The result reaches the file without a second quantizer: the float weights are replaced in place by their rounded
values (integers times a per-channel scale), and litert-quantizer's DEQUANTIZED_WEIGHT_RECOVERY algorithm (made
for QAT checkpoints) reads the integers and scales back out of them exactly. A channel whose values it could not
recover (its levels share a common factor that is not the scale) keeps the op out of the rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence

import numpy as np

from edgecompress.tflite_reader import Operator, Subgraph, parse_model

ROUNDED_OPS = ("CONV_2D", "FULLY_CONNECTED")
CLIP_RATIOS = np.linspace(0.5, 1.0, 21)  # the per-channel clipping ranges tried, as a share of max |w|
MAX_ROWS_PER_SAMPLE = 1024  # patches per calibration sample that enter a convolution's Hessian
DAMPING = 0.01  # of the mean Hessian diagonal, added to it: GPTQ's default
BLOCK = 128  # columns rounded between two lazy updates of the rest


@dataclass(frozen=True)
class RoundedLayer:
    tensor: str  # the op's output tensor: what the quantizer's recipe regex matches
    op: str  # CONV_2D or FULLY_CONNECTED
    weight: str
    columns: int  # inputs per output channel (im2col width)


def int_range(bits: int) -> tuple[int, int]:
    """The integer levels litert-quantizer uses for symmetric weights: full range below 8 bits, narrow at 8."""
    high = 2 ** (bits - 1) - 1
    return (-high - 1 if bits < 8 else -high), high


@dataclass(frozen=True)
class Rounding:
    """GPTQ's result for one model: per op output tensor, the layer and its rounded weights (float32, in the
    weight tensor's shape). Computed once, written into any selection of layers (apply)."""

    layers: dict[str, tuple[RoundedLayer, np.ndarray]]

    def apply(self, data: bytes, tensors: Collection[str] | None = None) -> tuple[bytes, list[RoundedLayer]]:
        """DATA (the file the rounding was made from) with the rounded weights of TENSORS (all when None)."""
        buffer = bytearray(data)
        graph = parse_model(buffer).main  # a bytearray: the weight arrays are writable views into it
        weights = {t.name: t for t in graph.tensors if t.is_constant}
        chosen = [name for name in self.layers if tensors is None or name in tensors]
        for name in chosen:
            layer, values = self.layers[name]
            weights[layer.weight].data[...] = values
        return bytes(buffer), [self.layers[name][0] for name in chosen]


def gptq_rounding(data: bytes, feeds: Sequence[dict[int, np.ndarray]], bits: int, source_path: str,
                  seed: int = 0, ops: Sequence[str] = ROUNDED_OPS) -> Rounding:
    """The GPTQ rounding of the weights of DATA's OPS (CONV_2D, FULLY_CONNECTED; float32 constants, SOURCE_PATH
    holds the same file, run to see the activations) to BITS-bit integers times a per-channel scale, the
    Hessians measured on FEEDS (input index -> one batch-1 array)."""
    graph = parse_model(data).main
    targets = [op for op in graph.operators if op.name in ops and _roundable(graph, op)]
    hessians = _hessians(source_path, graph, targets, feeds, seed) if targets else {}
    low, high = int_range(bits)
    layers = {}
    for op in targets:
        weight = graph.tensor(op.inputs[1])
        matrix = weight.data.reshape(weight.shape[0], -1).astype(np.float64)
        h = hessians[op.index]
        scale = _clip_scale(matrix, np.diag(h), low, high)
        levels = gptq(matrix, h, scale, low, high)
        if not _recoverable(levels):
            continue
        tensor = graph.tensor(op.outputs[0]).name
        values = (levels * scale[:, None]).reshape(weight.shape).astype(np.float32)
        layers[tensor] = (RoundedLayer(tensor, op.name, weight.name, matrix.shape[1]), values)
    return Rounding(layers)


def round_weights(data: bytes, feeds: Sequence[dict[int, np.ndarray]], bits: int, source_path: str,
                  seed: int = 0, ops: Sequence[str] = ROUNDED_OPS) -> tuple[bytes, list[RoundedLayer]]:
    """DATA with the weights of its OPS replaced by their GPTQ rounding (gptq_rounding), and the ops rounded."""
    return gptq_rounding(data, feeds, bits, source_path, seed, ops).apply(data)


def _roundable(graph: Subgraph, op: Operator) -> bool:
    if op.name not in ROUNDED_OPS or len(op.inputs) < 2:
        return False
    weight, source = graph.tensor(op.inputs[1]), graph.tensor(op.inputs[0])
    return (weight is not None and source is not None and weight.is_constant and weight.dtype == "float32"
            and weight.data is not None and not weight.sparse and len(weight.shape) in (2, 4)
            and weight.data.ndim == len(weight.shape) and not source.is_constant)


def _hessians(path: str, graph: Subgraph, targets: list[Operator], feeds: Sequence[dict[int, np.ndarray]],
              seed: int) -> dict[int, np.ndarray]:
    """Per op index: X^T X / rows over the inputs its weights multiply (im2col patches for a convolution)."""
    from edgecompress.runtime import load_interpreter

    interpreter, _ = load_interpreter(path, num_threads=1, use_xnnpack=False, preserve_all_tensors=True)
    rng = np.random.default_rng(seed)
    sums = {op.index: np.zeros((_columns(graph, op),) * 2) for op in targets}
    rows = dict.fromkeys(sums, 0)
    for feed in feeds:
        for index, value in feed.items():
            interpreter.set_tensor(index, value)
        interpreter.invoke()
        for op in targets:
            x = _patches(interpreter.get_tensor(op.inputs[0]), op, graph.tensor(op.inputs[1]).shape)
            if len(x) > MAX_ROWS_PER_SAMPLE:
                x = x[rng.choice(len(x), MAX_ROWS_PER_SAMPLE, replace=False)]
            x = x.astype(np.float32)  # the product in float32 (twice as fast), the sum over samples in float64
            sums[op.index] += x.T @ x
            rows[op.index] += len(x)
    return {index: total / max(rows[index], 1) for index, total in sums.items()}


def _columns(graph: Subgraph, op: Operator) -> int:
    shape = graph.tensor(op.inputs[1]).shape
    return int(np.prod(shape[1:]))


def _patches(x: np.ndarray, op: Operator, weight_shape: tuple[int, ...]) -> np.ndarray:
    """The rows the weights multiply: for FULLY_CONNECTED the input's last axis, for CONV_2D (NHWC input,
    [out, kh, kw, in] weights) every output position's receptive field, flattened in the weights' order."""
    if op.name == "FULLY_CONNECTED":
        return x.reshape(-1, weight_shape[-1])
    _, kh, kw, _ = weight_shape
    sh, sw = op.options.get("stride", (1, 1))
    dh, dw = op.options.get("dilation", (1, 1))
    n, h, w, c = x.shape
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if op.options.get("padding", "same") == "same":
        oh, ow = -(-h // sh), -(-w // sw)
        pad_h, pad_w = max((oh - 1) * sh + span_h - h, 0), max((ow - 1) * sw + span_w - w, 0)
        x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    else:
        oh, ow = (h - span_h) // sh + 1, (w - span_w) // sw + 1
    taps = [x[:, i * dh: i * dh + (oh - 1) * sh + 1: sh, j * dw: j * dw + (ow - 1) * sw + 1: sw, :]
            for i in range(kh) for j in range(kw)]
    return np.stack(taps, axis=3).reshape(n * oh * ow, kh * kw * c)


def _clip_scale(w: np.ndarray, importance: np.ndarray, low: int, high: int) -> np.ndarray:
    """Per output channel, the scale (clipping range / HIGH) among CLIP_RATIOS whose plain rounding has the least
    error, each input weighted by its mean squared activation (the Hessian's diagonal)."""
    peak = np.maximum(np.abs(w).max(axis=1), 1e-12)
    best, best_err = peak / high, np.full(len(w), np.inf)
    for ratio in CLIP_RATIOS:
        scale = peak * ratio / high
        q = np.clip(np.round(w / scale[:, None]), low, high) * scale[:, None]
        err = ((w - q) ** 2 * importance[None, :]).sum(axis=1)
        better = err < best_err
        best, best_err = np.where(better, scale, best), np.where(better, err, best_err)
    return best


def gptq(w: np.ndarray, hessian: np.ndarray, scale: np.ndarray, low: int, high: int) -> np.ndarray:
    """The integer levels (same shape as W, [out, columns]) of W rounded column by column, each column's error
    spread over the columns not yet rounded through the inverse Hessian's Cholesky factor; columns with the
    largest activations first (GPTQ's act-order)."""
    w = w.astype(np.float64).copy()
    h = hessian.astype(np.float64).copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices_from(h)] += DAMPING * np.mean(np.diag(h))
    order = np.argsort(-np.diag(h), kind="stable")
    w, h = w[:, order], h[np.ix_(order, order)]
    upper = np.linalg.cholesky(np.linalg.inv(h)).T  # H^-1 = U^T U
    s = scale[:, None]
    levels = np.zeros_like(w)
    columns = w.shape[1]
    for start in range(0, columns, BLOCK):
        end = min(start + BLOCK, columns)
        block, u = w[:, start:end].copy(), upper[start:end, start:end]
        errors = np.zeros_like(block)
        for i in range(end - start):
            q = np.clip(np.round(block[:, i:i + 1] / s), low, high)
            levels[:, start + i] = q[:, 0]
            err = (block[:, i:i + 1] - q * s) / u[i, i]
            block[:, i:] -= err * u[i:i + 1, i:]
            errors[:, i] = err[:, 0]
        w[:, end:] -= errors @ upper[start:end, end:]
    restored = np.empty_like(levels)
    restored[:, order] = levels
    return restored


def _recoverable(levels: np.ndarray) -> bool:
    """Does each channel's smallest gap between distinct |levels| (0 included) divide all of them? That gap is
    the scale DEQUANTIZED_WEIGHT_RECOVERY reads back; otherwise it could not return these integers."""
    magnitude = np.abs(levels).astype(np.int64)
    rows, top = len(magnitude), int(magnitude.max(initial=0)) + 1
    present = np.zeros((rows, top), dtype=bool)
    present[np.arange(rows)[:, None], magnitude] = True
    present[:, 0] = True
    position = np.arange(top)
    last = np.maximum.accumulate(np.where(present, position, -1), axis=1)  # last present value at or before
    before = np.concatenate([np.full((rows, 1), -1), last[:, :-1]], axis=1)  # ... strictly before
    gap = np.where(present & (before >= 0), position - before, top).min(axis=1)  # top: only 0 is present
    return bool(np.all(~present | (position[None, :] % gap[:, None] == 0)))