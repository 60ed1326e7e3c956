"""A float32 .tflite -> int4 or int8 weights with Google's litert-quantizer (ai-edge-quantizer renamed): no
TensorFlow, so it runs on a Raspberry Pi with the runtime side plus the [quantize] extra.

TFLiteConverter has no int4, so these modes quantize an existing .tflite (the quantizer rewrites the
flatbuffer). Activations stay float32 in all of them:
- int4: 4-bit weights, dynamic: the hybrid kernels quantize activations on the fly (FULLY_CONNECTED, CONV_2D,
  EMBEDDING_LOOKUP; DEPTHWISE_CONV_2D has no int4 kernel and stays float). Embedding tables, which the
  converter emits as GATHER, are first rewritten as EMBEDDING_LOOKUP (converters.embedding_lookup) so that
  every mode quantizes them. Dynamic rather than weight-only because only the dynamic kernels take blockwise
  int4, and weight-only adds DEQUANTIZE ops that give the runtime float copies of the weights. One scale per
  output channel (how it is chosen: `algorithm`, below). With block_size, FULLY_CONNECTED weights get one scale
  per block of input channels, convolutions stay per channel.
- int8-weights: 8-bit weights, weight-only: DEQUANTIZE ops restore float weights and every op computes in
  float, so outputs stay closest to float32.
- dynamic: 8-bit weights with the int8 hybrid kernels, as TFLiteConverter's dynamic-range mode.

How the weights are rounded (`algorithm`): minmax (one scale per channel from its largest weight), mse and octav
(the quantizer's searches for the clipping range with the least error), gptq (error-compensating rounding from
the calibration activations, converters.rounding: convolutions too, which the quantizer's own GPTQ skips), or
auto (each, measured against float on held-out calibration samples: converters.algorithm_choice; without
samples, the mode's auto_without_samples: converters.modes). Hadamard
rotation is not offered: it adds a custom op (`hadamard_rotation`) that stock Pi and Android runtimes may lack,
and its decomposed form stores float rotation matrices that outgrow the weights.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

import numpy as np

from edgecompress.errors import MissingExtraError, UserError
from edgecompress.progress import note
from edgecompress.quiet import quiet_native_stderr
from edgecompress.runner import TFLiteRunner
from edgecompress.runtime import first_line
from edgecompress.tflite_reader import Tensor, TFLiteModel, parse_model
from edgecompress.converters.algorithm_choice import AlgorithmChoice, choose
from edgecompress.converters.embedding_lookup import gathers_to_embedding_lookups
from edgecompress.converters.coverage import check_coverage, weight_coverage
from edgecompress.converters.modes import BLOCK_MODES, MODES, TFLITE_MODES
from edgecompress.converters.float16_weights import restore_float32
from edgecompress.converters.rounding import RoundedLayer, Rounding, gptq_rounding
from edgecompress.converters.tflite_edit import fill_builtin_codes

BLOCK_SIZES = (32, 64, 128, 256)  # the granularities ai-edge-quantizer and LiteRT's kernels support
WEIGHT_ALGORITHMS = ("minmax", "mse", "octav", "gptq")  # simplest first: auto prefers the earlier on a tie
ALGORITHMS = (*WEIGHT_ALGORITHMS, "auto")
CALIBRATED_ALGORITHMS = ("gptq",)  # rounding that needs the activations: calibration samples
AUTO_SAMPLES = 16  # held-out samples auto measures each algorithm on
GPTQ_SAMPLES = 32  # calibration samples GPTQ's Hessians are measured on, at most (a convolution gets up to
# rounding.MAX_ROWS_PER_SAMPLE rows from each)
EXTRA = "quantize"


@dataclass(frozen=True)
class WeightBytes:
    """What quantize_weights made: the file, the rounding algorithm used and, with auto, how it was chosen."""

    data: bytes
    algorithm: str
    choice: AlgorithmChoice | None = None
    rounded: list[RoundedLayer] = field(default_factory=list)  # gptq: the ops whose weights it rounded


def check_block_size(quantize: str, block_size: int | None) -> None:
    """block_size only means something for int4, and only in the sizes the kernels support."""
    if block_size is None:
        return
    if quantize not in BLOCK_MODES:
        raise UserError(f"block_size applies to int4 weights only, not to quantize {quantize!r}: drop it",
                        settings=("block_size", "quantize"))
    if block_size not in BLOCK_SIZES:
        raise UserError(f"block_size {block_size} is not supported: use one of {', '.join(map(str, BLOCK_SIZES))}",
                        settings=("block_size",))


def check_algorithm(quantize: str, algorithm: str, has_calibration: bool) -> None:
    """The rounding algorithm is for the weight modes, and gptq needs calibration samples; caught before work."""
    if algorithm not in ALGORITHMS:
        raise UserError(f"unknown algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}", settings=("algorithm",))
    if algorithm != "auto" and quantize not in TFLITE_MODES:
        raise UserError(f"algorithm {algorithm} rounds weights in quantize {', '.join(TFLITE_MODES)}, not {quantize}: "
                        "drop it", settings=("algorithm", "quantize"))
    if algorithm in CALIBRATED_ALGORITHMS and not has_calibration:
        raise UserError(f"algorithm {algorithm} rounds weights from the activations they multiply: give calibration "
                        "samples (a .npz with one array per input, or x)", settings=("algorithm", "calibration"))


def quantize_weights(data: bytes, quantize: str, block_size: int | None = None, source: str = "<bytes>",
                     allow_partial: bool = False, algorithm: str = "auto",
                     calibration: dict[str, np.ndarray] | None = None, seed: int = 0) -> WeightBytes:
    """DATA (a float32 .tflite, or one with float16 weights: converters.float16_weights) with its weights quantized
    in mode QUANTIZE (see the module docstring), rounded by ALGORITHM; CALIBRATION (input name -> stacked samples)
    feeds gptq and auto's measurements. What was quantized is counted (converters.coverage): nothing, or less than
    the mode's kernels take (unless ALLOW_PARTIAL), is a UserError, never a silent no-op."""
    if quantize not in TFLITE_MODES:
        raise UserError(f"unknown weight quantization {quantize!r}: use one of {', '.join(TFLITE_MODES)}")
    check_block_size(quantize, block_size)
    check_algorithm(quantize, algorithm, calibration is not None)
    data, model = float32_constants(data, source)
    if block_size is not None:
        _check_blocks(model, block_size, source)
    require_quantizer()
    with tempfile.TemporaryDirectory(prefix="edgecompress-weights-") as tmp:
        float_path = Path(tmp) / "float32.tflite"  # the runtime reads files: for the activations and the measures
        float_path.write_bytes(data)
        made: dict[str, WeightBytes] = {}

        def one(name: str) -> bytes:
            made[name] = _quantize_as(data, quantize, block_size, source, allow_partial, name, float_path,
                                      calibration, seed)
            return made[name].data

        if algorithm != "auto":
            one(algorithm)
            return made[algorithm]
        if calibration is None:  # random inputs would rank the algorithms on activations the model never sees
            fallback = MODES[quantize].auto_without_samples
            one(fallback)
            return WeightBytes(made[fallback].data, fallback, AlgorithmChoice(fallback, 0))
        _, choice = choose(WEIGHT_ALGORITHMS, one, float_path, held_out(calibration))
    return WeightBytes(made[choice.chosen].data, choice.chosen, choice, made[choice.chosen].rounded)


def held_out(calibration: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The samples auto measures on: the last AUTO_SAMPLES of CALIBRATION (gptq fits on the others, see
    _fit_samples), or all of them when there are fewer than 8."""
    count = len(next(iter(calibration.values())))
    return {k: v[count - _held_count(count):] for k, v in calibration.items()}


def _held_count(count: int) -> int:
    return min(AUTO_SAMPLES, max(count // 4, 1)) if count >= 8 else count


def _fit_samples(calibration: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The calibration samples gptq's Hessians come from: those auto does not measure on, when there are enough."""
    count = len(next(iter(calibration.values())))
    fit = count - _held_count(count) if count >= 8 else count
    return {k: v[:min(fit, GPTQ_SAMPLES)] for k, v in calibration.items()}


def _quantize_as(data: bytes, quantize: str, block_size: int | None, source: str, allow_partial: bool,
                 algorithm: str, float_path: Path, calibration: dict[str, np.ndarray] | None, seed: int) -> WeightBytes:
    rounding = None
    if algorithm == "gptq":
        assert calibration is not None
        rounding = gptq_rounding_of(data, quantize, block_size, float_path, calibration, seed)
        if not rounding.layers:
            raise UserError(f"gptq has no CONV_2D or FULLY_CONNECTED weights to round in {Path(source).name}: use "
                            "another algorithm", settings=("algorithm",))
    return quantize_layers(data, quantize, algorithm, source, block_size=block_size, rounding=rounding,
                           allow_partial=allow_partial)


def gptq_rounding_of(data: bytes, quantize: str, block_size: int | None, float_path: Path,
                     calibration: dict[str, np.ndarray], seed: int) -> Rounding:
    """GPTQ's rounding of DATA (written at FLOAT_PATH) for QUANTIZE, from the activations of CALIBRATION's fitting
    samples (_fit_samples); with block_size, FULLY_CONNECTED weights are the quantizer's (blockwise)."""
    runner = TFLiteRunner(float_path)
    fit = _fit_samples(calibration)
    missing = [p.spec.name for p in runner.in_ports if p.spec.name not in fit]
    if missing:
        raise UserError(f"the calibration samples lack the model's input(s) {', '.join(missing)} (found: "
                        f"{', '.join(fit)})", settings=("calibration",))
    feeds = [{p.index: fit[p.spec.name][i:i + 1] for p in runner.in_ports}
             for i in range(len(next(iter(fit.values()))))]
    ops = ("CONV_2D",) if block_size is not None else ("CONV_2D", "FULLY_CONNECTED")
    return gptq_rounding(data, feeds, MODES[quantize].weight_bits, str(float_path), seed, ops)


def quantize_layers(data: bytes, quantize: str, algorithm: str, source: str, block_size: int | None = None,
                    rounding: Rounding | None = None, precision: Mapping[str, str | None] | None = None,
                    allow_partial: bool = False) -> WeightBytes:
    """DATA (float32 constants) quantized in mode QUANTIZE by ALGORITHM (gptq: its ROUNDING, made beforehand), with
    the layers named in PRECISION (by output tensor) stored otherwise: "int4-weights" or "int8-weights" (weight-
    only: float activations), or float (None). A mixed-precision file, in which what stays float is chosen, so
    coverage is not checked."""
    precision = dict(precision or {})
    rounded: list[RoundedLayer] = []
    if rounding is not None:
        keep = [t for t in rounding.layers if precision.get(t, "int4-weights") == "int4-weights"]
        data, rounded = rounding.apply(data, keep)
    aeq = require_quantizer()
    blocked = blocked_layers(data, block_size) if block_size is not None else []
    recipe = _recipe(aeq, quantize, block_size, algorithm, rounded, precision, blocked)
    # It prints a size report (and sometimes more) on stdout, which must stay clean for --json.
    try:
        with contextlib.redirect_stdout(io.StringIO()), quiet_native_stderr(replay_on_error=False):
            quantizer = aeq.quantizer.Quantizer(bytearray(gathers_to_embedding_lookups(data)[0]))
            quantizer.load_quantization_recipe(recipe)
            result = quantizer.quantize(enable_progress_bar=False, enable_progress_report=False)
    # The rewrite and the quantizer read more of the flatbuffer than parse_model does: damaged files that got
    # past it fail here (seen when fuzzing: struct.error, TypeError, IndexError, ValueError, UnicodeDecodeError).
    except (struct.error, IndexError, TypeError, OverflowError, ValueError, RuntimeError) as exc:
        raise UserError(
            f"the quantizer cannot quantize {source} with algorithm {algorithm} ({first_line(exc)}): check that it "
            "is an undamaged float32 .tflite, or try another algorithm"
        ) from exc
    quantized = bytes(result.quantized_model)
    if not precision:  # with precision, what stays float was chosen (all of it, at the end of a search)
        check_coverage(weight_coverage(parse_model(quantized, source)), quantize, Path(source).name, allow_partial)
    return WeightBytes(quantized, algorithm, None, rounded)


def int8_weights(data: bytes) -> bytes:
    """DATA with the weights of its float ops stored as int8, weight-only (DEQUANTIZE, then float compute): their
    activations stay float, which is why an accuracy search kept them out of int8, and the file shrinks nearly to
    int8's size."""
    try:
        return quantize_layers(data, "int8-weights", "minmax", "the fallback model", allow_partial=True).data
    except UserError:  # no float weight left that the quantizer takes
        return data


def float32_constants(data: bytes, source: str) -> tuple[bytes, TFLiteModel]:
    """DATA with float16 (and sparse float16) constants restored to float32 and every operator code filled in,
    parsed; a file quantized already, or with weights that are not finite, is a UserError."""
    data, _ = fill_builtin_codes(data)
    model = parse_model(data, source)
    if any(t.is_constant and t.dtype == "float16" for sg in model.subgraphs for t in sg.tensors):
        data, folded, densified = restore_float32(data)
        if folded:
            note(f"{Path(source).name} has float16 weights: {folded} restored to float32 (exact) before quantizing")
        if densified:
            note(f"{densified} of them were stored sparse: the quantized file stores them dense, so it can be larger "
                 "than the input (the quantizer keeps no sparse format)")
        model = parse_model(data, source)
    _check_float(model, source)
    return data, model


def require_quantizer() -> ModuleType:
    """litert-quantizer (ai-edge-quantizer renamed: the same API), or the old name where only it is installed, or a
    one-line error naming the extra that installs it."""
    for name in ("litert_quantizer", "ai_edge_quantizer"):
        try:
            module = importlib.import_module(name)
            for part in ("qtyping", "quantizer", "recipe_manager", "algorithm_manager"):
                importlib.import_module(f"{name}.{part}")
        except ImportError:
            continue
        return module
    raise MissingExtraError("int4 and weight-only quantization", "litert-quantizer", EXTRA)


def scope_regex(tensors: Sequence[str]) -> str:
    """A recipe regex for the ops that output any of TENSORS: the quantizer matches (re.search) an op's scope,
    its output tensors' names each followed by ";"."""
    return "(?:^|;)(?:" + "|".join(re.escape(name) for name in tensors) + ");"


_ALGORITHM_KEYS = {"minmax": "MIN_MAX_UNIFORM_QUANT", "mse": "MSE", "octav": "OCTAV"}


def _recipe(aeq: ModuleType, quantize: str, block_size: int | None, algorithm: str,
            rounded: Sequence[RoundedLayer] = (), precision: Mapping[str, str | None] | None = None,
            blocked: Sequence[str] = ()) -> Any:
    """The quantizer's recipe: rules of (output-tensor regex, op, algorithm, config), later rules refining earlier
    ones. gptq's rounded layers are read back exactly (DEQUANTIZED_WEIGHT_RECOVERY); the ops it does not round
    (depthwise, embedding tables) get mse. Blockwise FULLY_CONNECTED weights take min/max: the quantizer has no
    search for blocks; BLOCKED names the dense layers the blocks divide. PRECISION's layers come last: weight-only
    at 4 bits (gptq's rounding kept) or 8, or no quantization."""
    names, ops, granularity = aeq.algorithm_manager.AlgorithmName, aeq.qtyping.TFLOperationName, aeq.qtyping.QuantGranularity
    manager = aeq.recipe_manager.RecipeManager()
    add = manager.add_weight_only_config if MODES[quantize].weight_only else manager.add_dynamic_config
    base = getattr(names, _ALGORITHM_KEYS.get(algorithm, "MSE"))
    add(".*", ops.ALL_SUPPORTED, num_bits=MODES[quantize].weight_bits, algorithm_key=base)
    if block_size is not None and blocked:
        blocks = base if algorithm == "octav" else names.MIN_MAX_UNIFORM_QUANT
        add(scope_regex(blocked), ops.FULLY_CONNECTED, num_bits=4, granularity=granularity(f"BLOCKWISE_{block_size}"),
            algorithm_key=blocks)
    precision = dict(precision or {})
    weight_only = {t for t, p in precision.items() if p == "int4-weights"}
    for op in sorted({layer.op for layer in rounded}):  # gptq's layers read back, in their own kind of kernel
        for tensors, adder in (([l.tensor for l in rounded if l.op == op and l.tensor not in weight_only], add),
                               ([l.tensor for l in rounded if l.op == op and l.tensor in weight_only],
                                manager.add_weight_only_config)):
            if tensors:
                adder(scope_regex(tensors), getattr(ops, op), num_bits=MODES[quantize].weight_bits,
                      algorithm_key=names.DEQUANTIZED_WEIGHT_RECOVERY)
    for tier, bits, key in (("int4-weights", 4, names.MSE), ("int8-weights", 8, names.MIN_MAX_UNIFORM_QUANT)):
        tensors = [t for t, p in precision.items() if p == tier and t not in {l.tensor for l in rounded}]
        if tensors:
            manager.add_weight_only_config(scope_regex(tensors), ops.ALL_SUPPORTED, num_bits=bits, algorithm_key=key)
    kept_float = [t for t, p in precision.items() if p is None]
    if kept_float:
        manager.add_quantization_config(scope_regex(kept_float), ops.ALL_SUPPORTED, algorithm_key=names.NO_QUANTIZE)
    return manager.get_quantization_recipe()


def _check_float(model: TFLiteModel, source: str) -> None:
    """Quantizing twice compounds the error, and the quantizer expects float weights: refuse a quantized file,
    and weights that are not finite (their scale would be inf, which the runtime then refuses to load)."""
    for sg in model.subgraphs:
        for t in sg.tensors:
            if t.quantization.is_quantized or (t.is_constant and t.dtype in ("float16", "bfloat16", "int8", "int4")):
                raise UserError(
                    f"model {source} is already quantized ({t.dtype} tensor {t.name!r}): quantize a float32 .tflite "
                    "(`edgecompress convert --quantize none` makes one)"
                )
            if t.dtype == "float32" and t.data is not None and not np.isfinite(t.data).all():
                raise UserError(f"model {source}: weight tensor {t.name!r} holds inf or NaN values: re-export the model")


def _check_blocks(model: TFLiteModel, block_size: int, source: str) -> None:
    """Blocks run along a FULLY_CONNECTED weight's input channels, so they must divide them: those whose channels
    BLOCK_SIZE does not divide stay per channel (and are named); none at all is a UserError."""
    weights = _fully_connected_weights(model)
    if not weights:
        raise UserError(
            f"block_size applies to FULLY_CONNECTED weights and {source} has none: drop block_size "
            "(its other layers are quantized per channel)"
        )
    left = [t for t in weights if t.shape[-1] % block_size]
    if len(left) == len(weights):
        fits = [str(b) for b in BLOCK_SIZES if any(w.shape[-1] % b == 0 for w in weights)]
        hint = f"use {' or '.join(fits)}" if fits else "drop block_size (no supported size divides any of them)"
        raise UserError(f"block_size {block_size} does not divide the input channels of any FULLY_CONNECTED weight "
                        f"({', '.join(str(t.shape[-1]) for t in weights)}): {hint}", settings=("block_size",))
    if left:
        note(f"block_size {block_size} does not divide the input channels of {len(left)} FULLY_CONNECTED weight(s) "
             f"({', '.join(f'{t.name} ({t.shape[-1]})' for t in left)}): they stay per channel")


def blocked_layers(data: bytes, block_size: int) -> list[str]:
    """The output tensors of the FULLY_CONNECTED ops whose input channels BLOCK_SIZE divides, in every subgraph: a
    language model's prefill and decode share their weights, and a layer blocked in one signature only was stored
    twice (blockwise and per channel; 1.9x the file) and left the other per channel. A weight that is also an
    embedding table (a tied output head) stays per channel: per row, as the lookup quantizes it, it is stored once."""
    model = parse_model(data)
    tables = {graph.tensor(op.inputs[0 if op.name == "GATHER" else 1]).buffer for graph in model.subgraphs
              for op in graph.operators if op.name in ("GATHER", "EMBEDDING_LOOKUP") and len(op.inputs) > 1}
    return [graph.tensor(op.outputs[0]).name for graph in model.subgraphs for op in graph.operators
            if op.name == "FULLY_CONNECTED" and len(op.inputs) > 1 and (w := graph.tensor(op.inputs[1])) is not None
            and w.is_constant and len(w.shape) == 2 and w.shape[-1] % block_size == 0 and w.buffer not in tables]


def _fully_connected_weights(model: TFLiteModel) -> list[Tensor]:
    found = []
    for sg in model.subgraphs:
        for op in sg.operators:
            weight = sg.tensor(op.inputs[1]) if op.name == "FULLY_CONNECTED" and len(op.inputs) > 1 else None
            if weight is not None and weight.is_constant and len(weight.shape) == 2:
                found.append(weight)
    return found
