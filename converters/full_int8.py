"""Full-integer int8 of an existing .tflite (int8 weights and activations), with no Keras source and no TensorFlow.

Models that exist only as .tflite (MediaPipe's, most hubs') could only be weight-quantized, while NPU and DSP
boards need integer activations. ai-edge-quantizer's static recipe does it, with three things added here:
- files without a SignatureDef (MediaPipe's detector: "Invalid signature_key") get one naming the subgraph's
  inputs and outputs, which its calibration needs;
- float16 (and sparse float16) weights are restored to float32 first (converters.float16_weights);
- activation ranges: its calibration keeps a moving average of per-sample ranges, narrower than the global
  min/max TFLiteConverter uses (on one-sample batches the average forgets the extremes: shared/FACTS.md). The
  ranges are replaced by each tensor's min and max over every calibration sample ("minmax", as TFLiteConverter),
  or its 0.01th and 99.99th percentiles ("percentile": rare extremes clipped, finer steps for the rest),
  measured here with the runtime (every tensor kept), in a child process. Measured on MediaPipe's full-range
  face detector: minmax 12.4 / 14.0 dB (boxes / scores) and the same face decision as float on 82% of 28
  images, percentile 15.6 / 9.3 dB and 89% (the decisions near the threshold move with small changes of the
  ranges: 96% with percentiles computed from every value instead of a histogram); on fer's CNN minmax 25.9 dB.
  Which serves a model is its task's call, so minmax, what the converter does, is the default.
Inputs and outputs stay float32 (a QUANTIZE and a DEQUANTIZE at the edges) unless io_type is int8.

An output head that int8 activations cannot carry (MediaPipe's short-range detector: score logits spread over
hundreds where the decision is at 0, 5.7 dB) can be quantized again with 16-bit activations on the ops only it
depends on (`head_ops`), int8 weights kept: the file stays integer, a little larger.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecompress.errors import UserError
from edgecompress.isolation import run_isolated
from edgecompress.quiet import quiet_native_stderr
from edgecompress.runner import clean_name
from edgecompress.converters.tflite_edit import flatbuffers, read, write

FULL_INT8_IO_TYPES = ("float32", "int8")
RANGE_METHODS = ("minmax", "percentile")
PERCENTILE = 99.99
HISTOGRAM_BINS = 1 << 14  # the percentiles' resolution: 1/16384 of each tensor's min-max span
SIGNATURE_KEY = "serving_default"


def with_signature(data: bytes) -> tuple[bytes, str, dict[int, str]]:
    """DATA with a SignatureDef for its main subgraph (added when it has none), the signature's key, and its input
    names by tensor index."""
    model = read(data)
    main = [sd for sd in (model.signatureDefs or []) if sd.subgraphIndex == 0]
    if main:
        key = main[0].signatureKey.decode() if isinstance(main[0].signatureKey, bytes) else main[0].signatureKey
        return data, key, {int(t.tensorIndex): _text(t.name) for t in main[0].inputs}
    schema = flatbuffers().schema_fb
    subgraph = model.subgraphs[0]

    def entry(index: int) -> Any:  # named as TFLiteRunner names a signature-less file's inputs and outputs
        tensor_map = schema.TensorMapT()
        tensor_map.name, tensor_map.tensorIndex = clean_name(_text(subgraph.tensors[index].name)).encode(), int(index)
        return tensor_map

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = SIGNATURE_KEY.encode(), 0
    signature.inputs = [entry(i) for i in subgraph.inputs]
    signature.outputs = [entry(i) for i in subgraph.outputs]
    model.signatureDefs = [*(model.signatureDefs or []), signature]
    return write(model), SIGNATURE_KEY, {int(i): clean_name(_text(subgraph.tensors[i].name)) for i in subgraph.inputs}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def head_ops(data: bytes, output_tensor: str) -> list[str]:
    """The names of the tensors computed by the ops that only the output tensor named OUTPUT_TENSOR depends on
    (its head: back from it to where the graph feeds other outputs too), the output itself included."""
    from edgecompress.tflite_reader import parse_model

    graph = parse_model(data).main
    output = next(i for i in graph.outputs if graph.tensors[i].name == output_tensor)
    producer = {t: op for op in graph.operators for t in op.outputs}
    consumers: dict[int, list[Any]] = {}
    for op in graph.operators:
        for t in op.inputs:
            consumers.setdefault(t, []).append(op)
    head, todo = {output}, [output]
    while todo:
        op = producer.get(todo.pop())
        if op is None:
            continue
        for t in op.inputs:
            if t in producer and t not in head and all(set(c.outputs) <= head for c in consumers[t]):
                head.add(t)
                todo.append(t)
    return sorted(graph.tensors[t].name for t in head if t in producer)


def quantize_full_int8(data: bytes, feeds: Sequence[dict[int, np.ndarray]], io_type: str = "float32",
                       method: str = "minmax", wide: Sequence[str] = (), bits: int = 8,
                       float_ops: Sequence[str] = ()) -> bytes:
    """DATA (float32 constants) quantized to full integer, int8 weights and BITS-bit activations (8, or 16 for
    int16x8), calibrated on FEEDS (one dict per sample: input tensor index -> a batch of one, float), activation
    ranges by METHOD (RANGE_METHODS); the ops computing the tensors named in WIDE get 16-bit activations
    (head_ops); the ops whose outputs are named in FLOAT_OPS stay float (converters.full_int8_fallback)."""
    from edgecompress.converters.litert_quantize import require_quantizer, scope_regex

    if method not in RANGE_METHODS:
        raise UserError(f"calibration_method {method} is not one of {', '.join(RANGE_METHODS)}",
                        settings=("calibration_method",))
    if io_type not in FULL_INT8_IO_TYPES:
        raise UserError(f"io_type {io_type} is not available for a .tflite: use {' or '.join(FULL_INT8_IO_TYPES)}",
                        settings=("io_type",))
    data, key, names = with_signature(data)
    aeq = require_quantizer()
    ops = aeq.qtyping.TFLOperationName
    quantizer = aeq.quantizer.Quantizer(bytearray(data))
    scopes = [".*"]
    quantizer.add_static_config(".*", ops.ALL_SUPPORTED, activation_num_bits=bits, weight_num_bits=8)
    if wide:
        # The graph's outputs are a pseudo-op whose scope names them all, so the edge rule below is set for this
        # scope too.
        scopes.append(scope_regex(wide))
        quantizer.add_static_config(scopes[-1], ops.ALL_SUPPORTED, activation_num_bits=16, weight_num_bits=8)
    AlgorithmName = aeq.algorithm_manager.AlgorithmName  # noqa: N806 (the quantizer's enum)
    if float_ops:
        quantizer.update_quantization_recipe(regex=scope_regex(float_ops), operation_name=ops.ALL_SUPPORTED,
                                             algorithm_key=AlgorithmName.NO_QUANTIZE)
    if io_type == "float32":
        for scope in scopes:
            for edge in (ops.INPUT, ops.OUTPUT):
                quantizer.update_quantization_recipe(regex=scope, operation_name=edge,
                                                     algorithm_key=AlgorithmName.NO_QUANTIZE)
    samples = [{names[index]: value for index, value in feed.items()} for feed in feeds]
    # It prints a size report on stdout, which must stay clean for --json, and a progress bar on stderr.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            quiet_native_stderr(replay_on_error=False):
        ranges = quantizer.calibrate({key: samples}, num_threads=1)
        _global_ranges(ranges, data, feeds, method)
        result = quantizer.quantize(ranges)
    return bytes(result.quantized_model)


def _global_ranges(ranges: dict[str, Any], data: bytes, feeds: Sequence[dict[int, np.ndarray]], method: str) -> None:
    """Replace each activation's moving-average range in RANGES by its range over all FEEDS, by METHOD."""
    with tempfile.TemporaryDirectory(prefix="edgecompress-ranges-") as folder:
        path = Path(folder) / "float.tflite"
        path.write_bytes(data)
        extremes = run_isolated(tensor_ranges, str(path), list(feeds), method,
                                what=f"the runtime, measuring the activation ranges of {path.name}")
    for name, qsv in ranges.items():
        if name in extremes and "min" in qsv and np.size(qsv["min"]) == 1:  # per-tensor: activations, not weights
            low, high = extremes[name]
            qsv["min"] = np.full_like(np.asarray(qsv["min"]), low)
            qsv["max"] = np.full_like(np.asarray(qsv["max"]), high)


def tensor_ranges(path: str, feeds: list[dict[int, np.ndarray]], method: str = "minmax") -> dict[str, tuple[float, float]]:
    """Every float activation's range over FEEDS, by tensor name: (min, max), or its (100 - PERCENTILE)th and
    PERCENTILEth percentiles, read from a histogram of HISTOGRAM_BINS bins over its min-max span (a second pass)."""
    from edgecompress.runtime import load_interpreter

    interpreter, _ = load_interpreter(path, num_threads=1, use_xnnpack=False, preserve_all_tensors=True)
    details = [d for d in interpreter.get_tensor_details() if d["dtype"] == np.float32]
    extremes: dict[str, tuple[float, float]] = {}
    for name, values in _activations(interpreter, details, feeds):
        low, high = float(values.min()), float(values.max())
        old = extremes.get(name)
        extremes[name] = (low, high) if old is None else (min(old[0], low), max(old[1], high))
    if method == "minmax":
        return extremes
    counts = {name: np.zeros(HISTOGRAM_BINS, np.int64) for name in extremes}
    for name, values in _activations(interpreter, details, feeds):
        low, high = extremes[name]
        if high > low:
            counts[name] += np.histogram(values, bins=HISTOGRAM_BINS, range=(low, high))[0]
    clipped = {}
    for name, (low, high) in extremes.items():
        total = counts[name].sum()
        if high <= low or total == 0:
            clipped[name] = (low, high)
            continue
        edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
        cumulative = np.cumsum(counts[name]) / total
        lower = edges[int(np.searchsorted(cumulative, (100 - PERCENTILE) / 100))]
        upper = edges[int(np.searchsorted(cumulative, PERCENTILE / 100)) + 1]
        clipped[name] = (float(min(lower, 0.0) if low <= 0 else lower), float(upper))
    return clipped


def signal_lost(path: str, feeds: list[dict[int, np.ndarray]], ranges: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Per float activation of PATH in RANGES: the RMS error of int8 with that range (asymmetric, 256 steps) over
    the RMS value, per channel (last axis) and averaged over the channels that carry signal, on FEEDS. The
    measure converters.diagnose ranks layers by, here without TensorFlow."""
    from edgecompress.runtime import load_interpreter

    interpreter, _ = load_interpreter(path, num_threads=1, use_xnnpack=False, preserve_all_tensors=True)
    details = [d for d in interpreter.get_tensor_details() if d["dtype"] == np.float32 and d["name"] in ranges]
    error: dict[int, Any] = {}
    signal: dict[int, Any] = {}
    for feed in feeds:
        for index, value in feed.items():
            interpreter.set_tensor(index, value)
        interpreter.invoke()
        for d in details:  # by index: two tensors may share a name (and not a shape)
            try:
                real = interpreter.get_tensor(d["index"]).astype(np.float64)
            except ValueError:  # no data behind it (a constant the runtime folded away)
                continue
            if not real.size or not np.isfinite(real).all():
                continue
            low, high = ranges[d["name"]]
            low, high = min(low, 0.0), max(high, 0.0)
            scale = (high - low) / 255 if high > low else 1.0
            zero = np.round(-128 - low / scale)
            restored = (np.clip(np.round(real / scale) + zero, -128, 127) - zero) * scale
            axes = tuple(range(real.ndim - 1))
            error[d["index"]] = error.get(d["index"], 0.0) + np.sum((restored - real) ** 2, axis=axes)
            signal[d["index"]] = signal.get(d["index"], 0.0) + np.sum(real ** 2, axis=axes)
    lost: dict[str, float] = {}
    names = {d["index"]: d["name"] for d in details}
    for index in error:
        live = np.atleast_1d(signal[index]) > 0
        if live.any():
            value = float(np.sqrt(np.atleast_1d(error[index])[live] / np.atleast_1d(signal[index])[live]).mean())
            lost[names[index]] = max(value, lost.get(names[index], 0.0))
    return lost


def _activations(interpreter: Any, details: list[dict[str, Any]], feeds: list[dict[int, np.ndarray]]) -> Any:
    """(tensor name, values) of every float tensor with finite data, after each run of FEEDS."""
    for feed in feeds:
        for index, value in feed.items():
            interpreter.set_tensor(index, value)
        interpreter.invoke()
        for d in details:
            try:
                values = interpreter.get_tensor(d["index"])
            except ValueError:  # no data behind it (a constant the runtime folded away)
                continue
            if values.size and np.isfinite(values).all():
                yield d["name"], values
