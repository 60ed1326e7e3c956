"""`quantize`: an existing .tflite quantized without TensorFlow (the weight modes through litert-quantizer,
converters.litert_quantize; full int8 and int16x8 through converters.full_int8; int4 within an accuracy target
through converters.mixed_precision), validated against the file it came from, written only when sound."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecompress.errors import NativeCrash, UserError
from edgecompress.evaluate import evaluate, evaluate_bytes
from edgecompress.fileio import atomic_path, check_output, gzip_size
from edgecompress.models import KERAS_SUFFIXES
from edgecompress.probe_inputs import generated_feeds
from edgecompress.progress import note
from edgecompress.runner import RunFailed, TFLiteRunner
from edgecompress.runtime import check_tflite_file, first_line
from edgecompress.tflite_reader import TFLiteModel, parse_model
from edgecompress.converters.algorithm_choice import AlgorithmChoice
from edgecompress.converters.coverage import OpCoverage, describe_float, float_share, weight_coverage
from edgecompress.converters.float16_weights import restore_float32
from edgecompress.converters.litert_quantize import (
    WeightBytes, check_algorithm, check_block_size, float32_constants,
    quantize_weights,
)
from edgecompress.converters.edge_faults import EdgeGuard
from edgecompress.converters.full_int8_fallback import int8_within
from edgecompress.converters.modes import CALIBRATED_MODES, MODES
from edgecompress.converters.mixed_precision import int4_within
from edgecompress.converters.precision_steps import FallbackSearch, check_fallback_options
from edgecompress.converters.validate import Validation, check_finite_outputs, validate_tflite, validation_warnings


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
    algorithm: str | None = None  # how the weights were rounded (auto: the one it chose)
    algorithm_choice: AlgorithmChoice | None = None  # with auto: every algorithm tried, measured
    search: FallbackSearch | None = None  # int4 with max_drop: every step, and the layers it raised


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
    algorithm: str = "auto",
    max_drop: float | None = None,
    eval_data: str | Path | None = None,
    model_output: str | None = None,
) -> WeightQuantization:
    """Quantize the float32 .tflite MODEL into OUTPUT, validated against MODEL on INPUTS (.npz) or generated samples
    (int8: full integer, calibrated on NUM_SAMPLES of CALIBRATION, which also validates when INPUTS is not given;
    the heads of the outputs named in INT16_HEADS get 16-bit activations, their weights int8). The weight modes
    round by ALGORITHM, from CALIBRATION's activations where it needs them (gptq; auto tries it when given).
    MAX_DROP (int4): the layers int4 hurts most move to int8, then float, until the loss against MODEL on labelled
    EVAL_DATA (of MODEL_OUTPUT) is at most MAX_DROP (converters.mixed_precision).

    Outputs that turn NaN/Inf are a WrongResult and leave no OUTPUT, unless KEEP_FAILED (written, still raised).
    """
    start = time.perf_counter()
    path = Path(model)
    if path.suffix.lower() in KERAS_SUFFIXES or path.is_dir():
        raise UserError(
            f"{path} is a Keras model, not a .tflite: quantize it with `edgecompress convert --quantize {quantize}`"
        )
    check_block_size(quantize, block_size)
    check_algorithm(quantize, algorithm, calibration is not None)
    _check_max_drop(quantize, max_drop, eval_data, calibration, block_size, io_type, int16_heads)
    out = check_output(output, force)
    data = check_tflite_file(path)
    reference = TFLiteRunner(path)  # a file the runtime cannot run is refused before any work
    weights, search = None, None
    if quantize in CALIBRATED_MODES:
        if int16_heads and (io_type != "float32" or MODES[quantize].activation_bits != 8):
            raise UserError("int16_head is for --quantize int8 with float32 inputs and outputs (io_type float32)",
                            settings=("int16_head", "io_type"))
        if not MODES[quantize].integer_io and io_type != "float32":
            raise UserError(f"{quantize} keeps float32 inputs and outputs: drop io_type, or use --quantize int8",
                            settings=("io_type",))
        if max_drop is not None:
            assert eval_data is not None  # _check_max_drop
            search, quantized = _int8_within(data, path, reference, calibration, num_samples, seed, eval_data,
                                             model_output, max_drop, calibration_method)
        else:
            quantized = _full_int8(data, reference, calibration, num_samples, seed, io_type, str(path),
                                   allow_partial, calibration_method, _head_tensors(reference, int16_heads),
                                   quantize)
        inputs = inputs if inputs is not None else calibration
    else:
        if int16_heads:
            raise UserError(f"int16_head is for --quantize int8 (16-bit activations); {quantize} quantizes weights "
                            "only", settings=("int16_head",))
        samples = None
        if calibration is not None:
            from edgecompress.calibration import load_samples

            samples = load_samples(calibration, reference.inputs, num_samples, seed).batch(num_samples)
            inputs = inputs if inputs is not None else calibration
        if max_drop is not None:
            assert samples is not None and eval_data is not None  # _check_max_drop
            search, quantized, chosen = _int4_within(data, path, samples, eval_data, model_output, max_drop,
                                                     algorithm, seed)
            weights = WeightBytes(quantized, chosen)
        else:
            weights = quantize_weights(data, quantize, block_size, str(path), allow_partial, algorithm, samples, seed)
            quantized = weights.data
    coverage = weight_coverage(parse_model(quantized, str(path)))
    if describe_float(coverage):
        note(f"left float: {describe_float(coverage)}")
    note(f"quantized {path.name} ({quantize}" + (f", blocks of {block_size}" if block_size else "")
         + (f", {weights.algorithm} rounding" if weights else "") + f"): {len(data):,} -> {len(quantized):,} bytes")
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
        algorithm=weights.algorithm if weights else None,
        search=search,
        algorithm_choice=weights.choice if weights else None,
    )


def _check_max_drop(quantize: str, max_drop: float | None, eval_data: str | Path | None,
                    calibration: str | Path | None, block_size: int | None, io_type: str = "float32",
                    int16_heads: Sequence[str] = ()) -> None:
    """max_drop on a .tflite: int8 (float I/O, no 16-bit head) or int4 (per channel), with labelled eval_data and
    calibration samples; before any work."""
    check_fallback_options(quantize, io_type, max_drop, eval_data)
    if max_drop is None:
        return
    if block_size is not None or int16_heads:
        raise UserError("max_drop on a .tflite searches per-channel int4 or plain full int8: drop "
                        + ("block_size" if block_size is not None else "int16_head"),
                        settings=("max_drop", "block_size" if block_size is not None else "int16_head"))
    if calibration is None:
        raise UserError("max_drop on a .tflite measures each layer's loss on calibration samples: set calibration",
                        settings=("max_drop", "calibration"))


def _int4_within(data: bytes, path: Path, samples: dict[str, np.ndarray], eval_data: str | Path,
                 model_output: str | None, max_drop: float, algorithm: str,
                 seed: int) -> tuple[FallbackSearch, bytes, str]:
    reference = evaluate(path, eval_data, model_output=model_output)  # bad labels fail before the work
    made, search, chosen = int4_within(data, str(path), samples, lambda b: evaluate_bytes(b, eval_data, reference),
                                       reference, max_drop, algorithm, seed)
    return search, made, chosen


def _int8_within(data: bytes, path: Path, reference: TFLiteRunner, calibration: str | Path | None, count: int,
                 seed: int, eval_data: str | Path, model_output: str | None, max_drop: float,
                 method: str) -> tuple[FallbackSearch, bytes]:
    from edgecompress.calibration import load_samples

    score_reference = evaluate(path, eval_data, model_output=model_output)  # bad labels fail before the work
    assert calibration is not None  # _check_max_drop
    data, _ = float32_constants(data, str(path))
    batch = load_samples(calibration, reference.inputs, count, seed).batch(count)
    samples = len(next(iter(batch.values())))
    feeds = [{p.index: batch[p.spec.name][i:i + 1] for p in reference.in_ports} for i in range(samples)]
    made, search = int8_within(data, feeds, lambda b: evaluate_bytes(b, eval_data, score_reference),
                               score_reference, max_drop, EdgeGuard.of_file(path, batch), method)
    return search, made


def _full_int8(data: bytes, reference: TFLiteRunner, calibration: str | Path | None, count: int, seed: int,
               io_type: str, source: str, allow_partial: bool, method: str, wide: Sequence[str] = (),
               mode: str = "int8") -> bytes:
    """DATA to full integer (converters.full_int8) with MODE's activations (int8 or int16x8), calibrated on COUNT
    samples of CALIBRATION; ops it leaves in float need ALLOW_PARTIAL, and a file with no integer activation at
    all is refused."""
    from edgecompress.calibration import load_samples
    from edgecompress.converters.full_int8 import quantize_full_int8

    if calibration is None:
        raise UserError(f"{mode} quantizes the activations too, from their ranges on representative inputs: give "
                        "calibration samples (a .npz with one array per input, or x)", settings=("calibration",))
    data, _ = float32_constants(data, source)
    batch = load_samples(calibration, reference.inputs, count, seed).batch(count)
    samples = len(next(iter(batch.values())))
    feeds = [{p.index: batch[p.spec.name][i:i + 1] for p in reference.in_ports} for i in range(samples)]
    wider = f", 16-bit activations on {len(wide)} tensors of the heads asked for" if wide else ""
    note(f"quantizing {Path(source).name} to full {mode}, calibrated on {samples} samples ({method} ranges{wider})")
    quantized = quantize_full_int8(data, feeds, io_type, method, wide, MODES[mode].activation_bits)
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
