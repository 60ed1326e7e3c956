"""A float32 .tflite -> int4 or int8 weights with Google's ai-edge-quantizer: no TensorFlow, so it runs on a
Raspberry Pi with the runtime side plus the [quantize] extra.

TFLiteConverter has no int4, so these modes quantize an existing .tflite (ai-edge-quantizer rewrites the
flatbuffer). Activations stay float32 in all of them:
- int4: 4-bit weights, dynamic: the hybrid kernels quantize activations on the fly (FULLY_CONNECTED, CONV_2D,
  EMBEDDING_LOOKUP; DEPTHWISE_CONV_2D has no int4 kernel and stays float). Embedding tables, which the
  converter emits as GATHER, are first rewritten as EMBEDDING_LOOKUP (converters.embedding_lookup) so that
  every mode quantizes them. Dynamic rather than weight-only because only the dynamic kernels take blockwise
  int4, and weight-only adds DEQUANTIZE ops that give the runtime float copies of the weights. One scale per
  output channel, chosen by a search that minimises the squared error (with 16 levels, clipping outliers
  matters: on the digits CNN min/max lost 1.3 points of held-out accuracy, the search none). With block_size,
  FULLY_CONNECTED weights get one scale per block of input channels (min/max: the quantizer has no search for
  blocks), convolutions stay per channel.
- int8-weights: 8-bit weights, weight-only: DEQUANTIZE ops restore float weights and every op computes in
  float, so outputs stay closest to float32.
- dynamic: 8-bit weights with the int8 hybrid kernels, as TFLiteConverter's dynamic-range mode.
"""
from __future__ import annotations

import contextlib
import io
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from edgecompress.errors import MissingExtraError, NativeCrash, UserError
from edgecompress.fileio import atomic_path, check_output, gzip_size
from edgecompress.probe_inputs import generated_feeds
from edgecompress.progress import note
from edgecompress.quiet import quiet_native_stderr
from edgecompress.runner import RunFailed, TFLiteRunner
from edgecompress.runtime import check_tflite_file, first_line
from edgecompress.tflite_reader import Tensor, TFLiteModel, parse_model
from edgecompress.converters.embedding_lookup import gathers_to_embedding_lookups
from edgecompress.converters.coverage import OpCoverage, check_coverage, describe_float, float_share, weight_coverage
from edgecompress.converters.float16_weights import restore_float32
from edgecompress.converters.tflite_edit import fill_builtin_codes
from edgecompress.converters.validate import (
    Validation, check_finite_outputs, validate_tflite, validation_warnings,
)

TFLITE_MODES = ("int4", "int8-weights", "dynamic")  # weights only, through quantize_weights
FULL_INT8 = "int8"  # weights and activations, calibrated: converters.full_int8
FULL_INT16X8 = "int16x8"  # the same with 16-bit activations, where the runtime has the kernels
ACTIVATION_BITS = {FULL_INT8: 8, FULL_INT16X8: 16}  # the calibrated modes
QUANTIZE_MODES = (*TFLITE_MODES, *ACTIVATION_BITS)  # what `quantize` takes
BLOCK_MODES = ("int4",)
BLOCK_SIZES = (32, 64, 128, 256)  # the granularities ai-edge-quantizer and LiteRT's kernels support
EXTRA = "quantize"
_KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass
class WeightQuantization:
    input: str
    output: str
    quantize: str
    block_size: int | None
    size_bytes: int
    gzip_bytes: int
    source_size_bytes: int
    source_gzip_bytes: int
    ratio: float  # input size / output size
    validation: Validation
    seconds: float
    warnings: list[str] = field(default_factory=list)  # outputs the validation says no longer compute the same
    coverage: list[OpCoverage] = field(default_factory=list)  # per op type: weights quantized and left float
    float_share: float = 0.0  # the share of the weights left float


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


def quantize_weights(data: bytes, quantize: str, block_size: int | None = None, source: str = "<bytes>",
                     allow_partial: bool = False) -> bytes:
    """DATA (a float32 .tflite, or one with float16 weights: converters.float16_weights) with its weights quantized
    in mode QUANTIZE (see the module docstring). What was quantized is counted (converters.coverage): nothing, or
    less than the mode's kernels take (unless ALLOW_PARTIAL), is a UserError, never a silent no-op."""
    if quantize not in TFLITE_MODES:
        raise UserError(f"unknown weight quantization {quantize!r}: use one of {', '.join(TFLITE_MODES)}")
    check_block_size(quantize, block_size)
    data, model = float32_constants(data, source)
    if block_size is not None:
        _check_blocks(model, block_size, source)
    aeq = require_quantizer()
    recipe = _recipe(aeq, quantize, block_size)
    # It prints a size report (and sometimes more) on stdout, which must stay clean for --json.
    try:
        with contextlib.redirect_stdout(io.StringIO()), quiet_native_stderr(replay_on_error=False):
            quantizer = aeq.quantizer.Quantizer(bytearray(gathers_to_embedding_lookups(data)[0]))
            quantizer.load_quantization_recipe(recipe)
            result = quantizer.quantize(enable_progress_bar=False, enable_progress_report=False)
    # The rewrite and the quantizer read more of the flatbuffer than parse_model does: damaged files that got
    # past it fail here (seen when fuzzing: struct.error, TypeError, IndexError, ValueError, UnicodeDecodeError).
    except (struct.error, IndexError, TypeError, OverflowError, ValueError) as exc:
        raise UserError(
            f"ai-edge-quantizer cannot quantize {source} ({first_line(exc)}): check that it is an undamaged "
            "float32 .tflite, or re-export it"
        ) from exc
    quantized = bytes(result.quantized_model)
    check_coverage(weight_coverage(parse_model(quantized, source)), quantize, Path(source).name, allow_partial)
    return quantized


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


def quantize_tflite(
    model: str | Path,
    output: str | Path,
    quantize: str,
    block_size: int | None = None,
    inputs: str | Path | None = None,
    force: bool = False,
    seed: int = 0,
    validation_samples: int = 100,
    keep_failed: bool = False,
    allow_partial: bool = False,
    stream: bool = False,
    calibration: str | Path | None = None,
    num_samples: int = 100,
    io_type: str = "float32",
    calibration_method: str = "minmax",
    int16_heads: Sequence[str] = (),
) -> WeightQuantization:
    """Quantize the float32 .tflite MODEL into OUTPUT, validated against MODEL on INPUTS (.npz) or generated samples
    (int8: full integer, calibrated on NUM_SAMPLES of CALIBRATION, which also validates when INPUTS is not given;
    the heads of the outputs named in INT16_HEADS get 16-bit activations, their weights int8).

    Outputs that turn NaN/Inf are a WrongResult and leave no OUTPUT, unless KEEP_FAILED (written, still raised).
    """
    start = time.perf_counter()
    path = Path(model)
    if path.suffix.lower() in _KERAS_SUFFIXES or path.is_dir():
        raise UserError(
            f"{path} is a Keras model, not a .tflite: quantize it with `edgecompress convert --quantize {quantize}`"
        )
    check_block_size(quantize, block_size)
    out = check_output(output, force)
    data = check_tflite_file(path)
    reference = TFLiteRunner(path)  # a file the runtime cannot run is refused before any work
    if quantize in ACTIVATION_BITS:
        if int16_heads and (io_type != "float32" or quantize != FULL_INT8):
            raise UserError("int16_head is for --quantize int8 with float32 inputs and outputs (io_type float32)",
                            settings=("int16_head", "io_type"))
        if quantize == FULL_INT16X8 and io_type != "float32":
            raise UserError("int16x8 keeps float32 inputs and outputs: drop io_type, or use --quantize int8",
                            settings=("io_type",))
        quantized = _full_int8(data, reference, calibration, num_samples, seed, io_type, str(path), allow_partial,
                               calibration_method, _head_tensors(reference, int16_heads), ACTIVATION_BITS[quantize])
        inputs = inputs if inputs is not None else calibration
    else:
        if int16_heads:
            raise UserError(f"int16_head is for --quantize int8 (16-bit activations); {quantize} quantizes weights "
                            "only", settings=("int16_head",))
        if calibration is not None:
            raise UserError(f"calibration samples are for --quantize int8 or int16x8; {quantize} quantizes weights "
                            "only: drop "
                            "them, or give validation samples with inputs", settings=("calibration",))
        quantized = quantize_weights(data, quantize, block_size, str(path), allow_partial)
    coverage = weight_coverage(parse_model(quantized, str(path)))
    if describe_float(coverage):
        note(f"left float: {describe_float(coverage)}")
    note(f"quantized {path.name} ({quantize}" + (f", blocks of {block_size}" if block_size else "")
         + f"): {len(data):,} -> {len(quantized):,} bytes")
    with atomic_path(out) as tmp:
        tmp.write_bytes(quantized)
        validation = _validate(tmp, reference, inputs, validation_samples, seed, stream)
        if not keep_failed:
            check_finite_outputs(validation, f"the {quantize} file", quantize)
    if keep_failed:
        check_finite_outputs(validation, f"the {quantize} file (kept as {out})", quantize)
    warnings = validation_warnings(validation, quantize)
    for warning in warnings:
        note(f"warning: {warning}")
    return WeightQuantization(
        input=str(path),
        output=str(out),
        quantize=quantize,
        block_size=block_size,
        size_bytes=len(quantized),
        gzip_bytes=gzip_size(quantized),
        source_size_bytes=len(data),
        source_gzip_bytes=gzip_size(data),
        ratio=len(data) / len(quantized),
        validation=validation,
        seconds=time.perf_counter() - start,
        warnings=warnings,
        coverage=coverage,
        float_share=float_share(coverage),
    )


def _full_int8(data: bytes, reference: TFLiteRunner, calibration: str | Path | None, count: int, seed: int,
               io_type: str, source: str, allow_partial: bool, method: str, wide: Sequence[str] = (),
               bits: int = 8) -> bytes:
    """DATA to full integer (converters.full_int8) with BITS-bit activations, calibrated on COUNT samples of
    CALIBRATION; ops it leaves in float need ALLOW_PARTIAL, and a file with no integer activation at all is
    refused."""
    from edgecompress.calibration import load_samples
    from edgecompress.converters.full_int8 import quantize_full_int8

    mode = FULL_INT8 if bits == 8 else FULL_INT16X8
    if calibration is None:
        raise UserError(f"{mode} quantizes the activations too, from their ranges on representative inputs: give "
                        "calibration samples (a .npz with one array per input, or x)", settings=("calibration",))
    data, _ = float32_constants(data, source)
    batch = load_samples(calibration, reference.inputs, count, seed).batch(count)
    samples = len(next(iter(batch.values())))
    feeds = [{p.index: batch[p.spec.name][i:i + 1] for p in reference.in_ports} for i in range(samples)]
    wider = f", 16-bit activations on {len(wide)} tensors of the heads asked for" if wide else ""
    note(f"quantizing {Path(source).name} to full {mode}, calibrated on {samples} samples ({method} ranges{wider})")
    quantized = quantize_full_int8(data, feeds, io_type, method, wide, bits)
    left = _float_ops(parse_model(quantized, source))
    if left and not any(op_type for op_type in _integer_ops(parse_model(quantized, source))):
        raise UserError(f"{mode} quantized nothing in {Path(source).name}: every op stays float ({', '.join(left)})")
    if left:
        said = f"ops left in float by the quantizer: {', '.join(left)}"
        if not allow_partial:
            raise UserError(f"{said}; an integer-only accelerator cannot run them: accept it with allow_partial, or "
                            "use --quantize dynamic", settings=("allow_partial",))
        note(said)
    return quantized


def _head_tensors(reference: TFLiteRunner, outputs: Sequence[str]) -> list[str]:
    """The tensors of the heads of OUTPUTS (as the runner names them; full_int8.head_ops), for 16-bit
    activations; an output the file does not have is a UserError naming those it has."""
    from edgecompress.converters.full_int8 import head_ops

    have = [p.spec.name for p in reference.out_ports]
    unknown = [name for name in outputs if name not in have]
    if unknown:
        raise UserError(f"int16_head {', '.join(unknown)}: {reference.path.name} has no such output; its outputs: "
                        f"{', '.join(have)}", settings=("int16_head",))
    source = reference.path.read_bytes()
    tensors = parse_model(source).main.tensors  # the runner's ports index the source's tensors
    float_data = restore_float32(source)[0]  # the graph full int8 is made from (its op codes aside)
    return sorted({name for p in reference.out_ports if p.spec.name in outputs
                   for name in head_ops(float_data, tensors[p.index].name)})


def _float_ops(model: TFLiteModel) -> list[str]:
    """Op types that compute in float (a float32 output), the QUANTIZE/DEQUANTIZE at the edges left aside."""
    counts: dict[str, int] = {}
    for op in model.main.operators:
        outs = [model.main.tensor(i) for i in op.outputs]
        if op.name not in ("QUANTIZE", "DEQUANTIZE") and any(t is not None and t.dtype == "float32" for t in outs):
            counts[op.name] = counts.get(op.name, 0) + 1
    return [f"{name} ({n})" for name, n in sorted(counts.items())]


def _integer_ops(model: TFLiteModel) -> list[str]:
    return [op.name for op in model.main.operators
            if any((t := model.main.tensor(i)) is not None and t.dtype in ("int8", "int16") for i in op.outputs)]


def _validate(tflite: Path, reference: TFLiteRunner, inputs: str | Path | None, count: int, seed: int,
              stream: bool) -> Validation:
    from edgecompress.calibration import load_samples

    if inputs is not None:
        feeds, origin = load_samples(inputs, reference.inputs, count, seed).batch(count), "given"
    else:
        feeds, origin = generated_feeds(reference.inputs, count, seed), "generated"
    note(f"validating against {reference.path.name} on {len(next(iter(feeds.values())))} {origin} samples")
    try:
        return validate_tflite(tflite, reference, feeds, origin, stream)
    except NativeCrash as crash:  # a file crashed the runtime in a child: nothing is kept
        raise NativeCrash(f"{crash}; the quantized file was not kept: try another quantize mode") from crash
    except RunFailed as exc:  # which file, and on which input (an edge input finds what samples miss)
        which = "the input file" if Path(exc.path) == reference.path else "the quantized file"
        where = f" on {exc.where}" if exc.where else ""
        raise RunFailed(f"{which} does not run{where} ({first_line(exc.__cause__ or exc)}): try another quantize "
                        "mode", settings=("quantize",), path=exc.path) from exc


def require_quantizer() -> ModuleType:
    """ai-edge-quantizer, or a one-line error naming the extra that installs it."""
    try:
        import ai_edge_quantizer
        from ai_edge_quantizer import qtyping, quantizer, recipe_manager  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("int4 and weight-only quantization", "ai-edge-quantizer", EXTRA) from exc
    return ai_edge_quantizer


def _recipe(aeq: ModuleType, quantize: str, block_size: int | None) -> Any:
    """The quantizer's recipe: rules of (layer-name regex, op, algorithm, config), later rules refining earlier ones."""
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ops, granularity = aeq.qtyping.TFLOperationName, aeq.qtyping.QuantGranularity
    manager = aeq.recipe_manager.RecipeManager()
    if quantize == "int8-weights":
        manager.add_weight_only_config(".*", ops.ALL_SUPPORTED, num_bits=8)
    elif quantize == "dynamic":
        manager.add_dynamic_config(".*", ops.ALL_SUPPORTED, num_bits=8)
    else:
        manager.add_dynamic_config(".*", ops.ALL_SUPPORTED, num_bits=4, algorithm_key=AlgorithmName.MSE)
        if block_size is not None:
            manager.add_dynamic_config(".*", ops.FULLY_CONNECTED, num_bits=4,
                                       granularity=granularity(f"BLOCKWISE_{block_size}"))
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
    """Blocks run along a FULLY_CONNECTED weight's input channels, so they must divide them."""
    weights = _fully_connected_weights(model)
    if not weights:
        raise UserError(
            f"block_size applies to FULLY_CONNECTED weights and {source} has none: drop block_size "
            "(its other layers are quantized per channel)"
        )
    for t in weights:
        channels = t.shape[-1]
        if channels % block_size:
            fits = [str(b) for b in BLOCK_SIZES if all(w.shape[-1] % b == 0 for w in weights)]
            hint = f"use {' or '.join(fits)}" if fits else "drop block_size (no supported size divides every layer)"
            raise UserError(
                f"block_size {block_size} does not divide the {channels} input channels of FULLY_CONNECTED "
                f"weight {t.name!r}: {hint}"
            )


def _fully_connected_weights(model: TFLiteModel) -> list[Tensor]:
    found = []
    for sg in model.subgraphs:
        for op in sg.operators:
            weight = sg.tensor(op.inputs[1]) if op.name == "FULLY_CONNECTED" and len(op.inputs) > 1 else None
            if weight is not None and weight.is_constant and len(weight.shape) == 2:
                found.append(weight)
    return found
