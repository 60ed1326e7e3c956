"""Keras model -> .tflite with a fixed batch of 1, in any quantization mode, validated before it is kept.

A fixed batch of 1 is what devices run, and it is what lets a tf-keras LSTM convert to full int8
(with a dynamic batch the converter fails on tensor-list ops).
"""
from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from edgecompress.calibration import InputStats, SampleSet, load_samples
from edgecompress.errors import NativeCrash, UserError
from edgecompress.fileio import atomic_path, check_output, gzip_size, path_size
from edgecompress.models import LoadedModel, import_tf, load_model
from edgecompress.quiet import quiet_native_stderr
from edgecompress.runner import RunFailed
from edgecompress.runtime import first_line
from edgecompress.shapes import fit_input_shapes
from edgecompress.probe_inputs import generated_feeds
from edgecompress.progress import note
from edgecompress.converters.int16x8 import make_runnable
from edgecompress.converters.algorithm_choice import AlgorithmChoice
from edgecompress.converters.litert_quantize import WeightBytes, check_algorithm, quantize_weights
from edgecompress.converters.precision_steps import check_fallback_options
from edgecompress.converters.modes import CALIBRATED_MODES, TFLITE_MODES, WEIGHT_MODES
from edgecompress.converters.quantize import check_options, configure
from edgecompress.converters.validate import (
    Validation, check_finite_outputs, validate, validation_warnings,
)
from edgecompress.evaluate import EvalResult, evaluate_bytes, evaluate_keras

DEFAULT_CALIBRATION_SAMPLES = 300  # TFLite's guide suggests a few hundred representative samples
VALIDATION_SAMPLES = 100
T = TypeVar("T")

# Flex ops are custom ops whose code is the TensorFlow op name prefixed with "Flex".
_FLEX_CODE = re.compile(rb"Flex([A-Z][A-Za-z0-9]+)")


@dataclass
class ConversionResult:
    output: str
    quantize: str
    io_type: str
    size_bytes: int
    gzip_bytes: int
    source: str
    source_size_bytes: int | None  # None for an in-memory model
    source_gzip_bytes: int | None
    source_weight_bytes: int  # the source's variables (no optimizer state, no file format overhead)
    ratio: float | None  # the source's size (ratio_base) / .tflite size
    ratio_base: str  # "weights" (a Keras model's variables) or "files" (a SavedModel keeps constants in its graph)
    validation: Validation | None  # None only for a Flex model, which no installed runtime can run
    calibration: list[InputStats] = field(default_factory=list)
    flex_ops: list[str] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # a validation that says the export is broken
    # With max_drop: the layers kept in float, the kept model's and the original's accuracy (MAE for
    # regression) on eval_data, every step tried, and whether the target was met.
    float_layers: list[str] = field(default_factory=list)
    metric: str | None = None  # what accuracy holds: "accuracy" (top-1) or "mae"
    accuracy: float | None = None
    source_accuracy: float | None = None
    drop: float | None = None  # top-1 points, or MAE increase in %
    steps: list[Any] = field(default_factory=list)  # converters.precision_steps.FallbackStep
    int8_layers: list[str] = field(default_factory=list)  # int4 with max_drop: layers at int8 weights
    weight_only_layers: list[str] = field(default_factory=list)  # int4 with max_drop: float activations
    smoothed: list[str] = field(default_factory=list)  # int8 with max_drop: outlier channels scaled, per layer
    chosen_step: int | None = None  # with max_drop: the step whose model was kept
    precision_reasons: dict[str, str] = field(default_factory=dict)  # int4 with max_drop: each layer's measure
    target_met: bool | None = None
    block_size: int | None = None  # int4 only: input channels per weight scale in FULLY_CONNECTED layers
    algorithm: str | None = None  # how the weights were rounded, in the weight modes (auto: the one it chose)
    algorithm_choice: AlgorithmChoice | None = None  # with auto: every algorithm tried, measured


def convert_model(
    model: str | Path | LoadedModel,
    output: str | Path,
    quantize: str = "none",
    calibration: str | Path | None = None,
    num_samples: int | None = DEFAULT_CALIBRATION_SAMPLES,
    io_type: str = "float32",
    force: bool = False,
    unsafe: bool = False,
    allow_flex: bool = False,
    image_scale: str = "unit",
    seed: int = 0,
    validation_samples: int = VALIDATION_SAMPLES,
    eval_data: str | Path | None = None,
    max_drop: float | None = None,
    block_size: int | None = None,
    keep_failed: bool = False,
    model_output: str | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    algorithm: str = "auto",
) -> ConversionResult:
    """Convert MODEL (a path or a LoadedModel) to OUTPUT, validate it, and keep it only if all went well.

    An export with NaN/Inf outputs where the original's are finite is a WrongResult, and OUTPUT is not written
    unless KEEP_FAILED (then it is written, and the WrongResult still raised).

    With MAX_DROP (int8 only): keep the fewest layers in float that bring the loss on labelled EVAL_DATA within
    MAX_DROP points (converters.fallback); the best attempt is written even when none does (target_met False).
    MODEL_OUTPUT: the output EVAL_DATA's labels are for (evaluate.pick_output).
    INPUT_SHAPES (input name, or "" for the only input -> shape with batch 1) fixes dimensions the model leaves
    free (a fully convolutional model), for one export per shape.
    ALGORITHM: how int4 and int8-weights round the weights (converters.litert_quantize; auto measures the
    algorithms on CALIBRATION when given); an explicit one sends dynamic through the quantizer too.
    """
    # fallback builds on this module's converter helpers, so it is imported here rather than at the top
    from edgecompress.converters.fallback import accuracy_driven_int8

    start = time.perf_counter()
    if not isinstance(model, LoadedModel) and Path(model).suffix.lower() == ".tflite":
        if max_drop is not None or io_type != "float32":
            raise UserError(f"{model} is a .tflite: max_drop and io_type need the Keras model it came from",
                            settings=("max_drop", "io_type"))
        return _from_tflite(Path(model), output, quantize, calibration, validation_samples, seed, block_size, force,
                            keep_failed, algorithm)
    check_options(quantize, io_type, calibration is not None, block_size)
    check_algorithm(quantize, algorithm, calibration is not None)
    check_fallback_options(quantize, io_type, max_drop, eval_data, allow_flex)
    out = check_output(output, force)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, unsafe=unsafe)
    if input_shapes:
        loaded = with_input_shapes(loaded, input_shapes)
    # bad labels fail first
    reference = evaluate_keras(loaded, eval_data, model_output) if eval_data is not None else None
    samples = None
    if calibration is not None:
        samples = load_samples(calibration, loaded.inputs, num_samples, seed, image_scale)
    note(f"converting {loaded.path.name} ({loaded.flavour}) to {quantize}"
         + (f", calibrating on {len(samples)} samples" if samples and quantize in CALIBRATED_MODES else ""))
    search, weights = None, None
    if reference is not None and max_drop is not None and quantize == "int4":
        data, search, chosen = _accuracy_driven_int4(loaded, samples, eval_data, max_drop, reference, algorithm, seed)
        weights = WeightBytes(data, chosen)
    elif reference is not None and samples is not None and max_drop is not None:
        data, search = accuracy_driven_int8(loaded, samples, eval_data, max_drop, reference)  # type: ignore[arg-type]
    else:
        exported = export_tflite(loaded, quantize, io_type, samples, allow_flex, block_size, algorithm)
        data, weights = exported.data, exported.weights
    flex = flex_ops(data)
    validation = None
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
        if flex:  # no pip runtime here links the Flex delegate (TensorFlow's own interpreter neither)
            note(f"warning: the model uses Flex ops ({', '.join(flex)}): stock TFLite runtimes cannot run it, "
                 "so it was not validated")
        else:
            validation = _validate(tmp, loaded, samples, validation_samples, seed, quantize)
            if not keep_failed:
                check_finite_outputs(validation, f"the {quantize} export", quantize)
    if validation is not None and keep_failed:
        check_finite_outputs(validation, f"the {quantize} export (kept as {out})", quantize)
    warnings = validation_warnings(validation, quantize) if validation is not None else []
    for warning in warnings:
        note(f"warning: {warning}")
    source_size, source_gzip = _source_sizes(loaded.path)
    # Keras files may hold optimizer state (two thirds of fer's .hdf5): the weights are the fair base. A
    # SavedModel keeps many constants in its graph rather than in variables: its files are.
    base, base_name = (loaded.weight_bytes, "weights") if loaded.is_keras else (source_size, "files")
    return ConversionResult(
        output=str(out),
        quantize=quantize,
        io_type=io_type,
        size_bytes=len(data),
        gzip_bytes=gzip_size(data),
        source=str(loaded.path),
        source_size_bytes=source_size,
        source_gzip_bytes=source_gzip,
        source_weight_bytes=loaded.weight_bytes,
        ratio=base / len(data) if base else None,
        ratio_base=base_name,
        validation=validation,
        calibration=samples.stats if samples else [],
        flex_ops=flex,
        seconds=time.perf_counter() - start,
        warnings=warnings,
        float_layers=search.kept.float_layers if search else [],
        int8_layers=search.kept.int8_layers if search else [],
        weight_only_layers=search.kept.weight_only_layers if search else [],
        precision_reasons=search.reasons if search else {},
        smoothed=search.smoothed if search else [],
        chosen_step=search.chosen if search else None,
        metric=search.metric if search else None,
        accuracy=search.kept.accuracy if search else None,
        source_accuracy=search.source_accuracy if search else None,
        drop=search.kept.drop if search else None,
        steps=search.steps if search else [],
        target_met=search.target_met if search else None,
        block_size=block_size,
        algorithm=weights.algorithm if weights else None,
        algorithm_choice=weights.choice if weights else None,
    )


def _accuracy_driven_int4(loaded: LoadedModel, samples: SampleSet | None, eval_data: str | Path, max_drop: float,
                          reference: EvalResult, algorithm: str, seed: int) -> tuple[bytes, Any, str]:
    """converters.mixed_precision on LOADED's float32 export, scored on EVAL_DATA; each layer's sensitivity is
    measured on the calibration SAMPLES, which it needs."""
    from edgecompress.converters.mixed_precision import int4_within

    if samples is None:
        raise UserError("max_drop with int4 measures what int4 costs each layer on representative samples: set "
                        "calibration", settings=("max_drop", "calibration"))
    return int4_within(to_tflite(loaded), loaded.path.name, samples.batch(len(samples)),
                       lambda made: evaluate_bytes(made, eval_data, reference), reference, max_drop, algorithm, seed)


def _from_tflite(path: Path, output: str | Path, quantize: str, calibration: str | Path | None, count: int,
                 seed: int, block_size: int | None, force: bool, keep_failed: bool, algorithm: str) -> ConversionResult:
    """A .tflite source (a MediaPipe or hub model with no Keras source): the weight modes need only the file, and
    go through converters.litert_quantize (float16 weights are restored first), validated on CALIBRATION."""
    from edgecompress.converters.quantize_file import quantize_tflite

    if quantize not in TFLITE_MODES:
        raise UserError(f"{path} is a .tflite: quantize {quantize} needs the Keras model it came from "
                        f"(TFLiteConverter); a .tflite takes quantize {', '.join(TFLITE_MODES)}", settings=("quantize",))
    r = quantize_tflite(path, output, quantize, block_size, force=force, seed=seed, validation_samples=count,
                        keep_failed=keep_failed, calibration=calibration, algorithm=algorithm)
    return ConversionResult(
        output=r.output, quantize=quantize, io_type="float32", size_bytes=r.size_bytes, gzip_bytes=r.gzip_bytes,
        source=r.input, source_size_bytes=r.source_size_bytes, source_gzip_bytes=r.source_gzip_bytes,
        source_weight_bytes=r.source_size_bytes, ratio=r.ratio, ratio_base="file", validation=r.validation,
        seconds=r.seconds, warnings=r.warnings, block_size=block_size, algorithm=r.algorithm,
        algorithm_choice=r.algorithm_choice)


def _validate(
    tflite: Path, loaded: LoadedModel, samples: SampleSet | None, count: int, seed: int, quantize: str
) -> Validation:
    if samples is not None:
        feeds, origin = samples.batch(count), "calibration"
    else:
        feeds, origin = generated_feeds(loaded.inputs, count, seed), "generated"
    note(f"validating against the original on {len(next(iter(feeds.values())))} {origin} samples")
    try:
        return validate(tflite, loaded, feeds, origin)
    except NativeCrash as crash:  # the file crashed the runtime in a child: it is not kept
        raise NativeCrash(f"{crash}; the {quantize} export was not kept: try another quantize mode (dynamic and "
                          "float16 run float kernels)") from crash
    # The converter can emit an op the runtime has no kernel for in that mode (int16x8 did: it quantizes every
    # op); the runtime says so only when the op runs, so the model is refused here instead of written.
    except RunFailed as exc:
        hint = "use quantize int8, whose kernels cover more ops" if quantize == "int16x8" else (
            "try another quantize mode")
        where = f" on {exc.where}" if exc.where else ""
        raise UserError(f"the {quantize} model converts but does not run{where} "
                        f"({first_line(exc.__cause__ or exc)}): {hint}", settings=("quantize",)) from exc


@dataclass(frozen=True)
class Export:
    data: bytes
    weights: WeightBytes | None = None  # the weight modes: how the quantizer rounded them


def to_tflite(
    loaded: LoadedModel,
    quantize: str = "none",
    io_type: str = "float32",
    samples: SampleSet | None = None,
    allow_flex: bool = False,
    block_size: int | None = None,
    algorithm: str = "auto",
) -> bytes:
    """The .tflite bytes of LOADED (fixed batch 1): export_tflite's file."""
    return export_tflite(loaded, quantize, io_type, samples, allow_flex, block_size, algorithm).data


def export_tflite(
    loaded: LoadedModel,
    quantize: str = "none",
    io_type: str = "float32",
    samples: SampleSet | None = None,
    allow_flex: bool = False,
    block_size: int | None = None,
    algorithm: str = "auto",
) -> Export:
    """LOADED as a .tflite (fixed batch 1); SAMPLES feed calibration in int8/int16x8, and the weight modes' rounding
    (ALGORITHM) where they are given."""
    check_options(quantize, io_type, samples is not None, block_size)
    check_algorithm(quantize, algorithm, samples is not None)
    through_quantizer = quantize in WEIGHT_MODES or (quantize == "dynamic" and algorithm != "auto")
    tf = import_tf("converting to TFLite")
    function, owner = fixed_batch_function(tf, loaded)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], owner)
    # Samples go in as {signature input name: value}: the converted model does not keep Keras's input order,
    # so a list in Keras order would feed one input's samples to another.
    representative = (lambda: samples.samples()) if samples else None
    configure(converter, tf, "none" if through_quantizer else quantize, io_type, representative, allow_flex)
    data = run_converter(converter.convert, quantize)
    if quantize == "int16x8":
        data, changes = make_runnable(data)
        if changes:
            note(f"int16x8 made runnable in LiteRT: {'; '.join(changes)}")
    if not through_quantizer:
        return Export(data)
    calibration = samples.batch(len(samples)) if samples is not None else None
    weights = quantize_weights(data, quantize, block_size, loaded.path.name, algorithm=algorithm,
                               calibration=calibration)
    return Export(weights.data, weights)


def run_converter(call: Callable[[], T], quantize: str, flex_option: bool = True) -> T:
    """CALL (a conversion) with the converter's stderr muted and its failures explained in one line
    (FLEX_OPTION: whether the caller offers Flex ops as a way out)."""
    # The converter prints pages of MLIR diagnostics on fd 2; its exception carries the same text, so the
    # captured output is dropped (the failure is caught inside the block, which keeps it from being replayed).
    with quiet_native_stderr():
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - ConverterError and friends; re-raised when not understood
            failure = exc
    raise _explain(failure, quantize, flex_option) from failure


def with_input_shapes(loaded: LoadedModel, shapes: dict[str, tuple[int, ...]]) -> LoadedModel:
    """LOADED with the free dimensions of its inputs fixed to SHAPES (shapes.fit_input_shapes checks them)."""
    fitted = fit_input_shapes(shapes, [(spec.name, (1, *spec.shape[1:])) for spec in loaded.inputs])
    return dataclasses.replace(loaded, inputs=[
        dataclasses.replace(spec, shape=(None, *fitted[spec.name][1:])) if spec.name in fitted else spec
        for spec in loaded.inputs])


def fixed_batch_function(tf: Any, loaded: LoadedModel) -> tuple[Any, Any]:
    """A concrete function taking one sample per input (batch 1), and the object that owns its variables."""
    for spec in loaded.inputs:
        if None in spec.sample_shape:
            example = "x".join(str(d or 224) for d in spec.sample_shape)
            raise UserError(
                f"input {spec.describe()} has a dimension of unknown size: devices need fixed shapes, so set "
                f"input_shape (for example {spec.name}=1x{example}; one export per shape) or re-save the model "
                "with a fixed input shape", settings=("input_shape",)
            )
    signature = [tf.TensorSpec([1, *s.sample_shape], tf.as_dtype(s.dtype), name=s.name) for s in loaded.inputs]
    names = [s.name for s in loaded.inputs]
    model = loaded.model
    if loaded.flavour == "savedmodel":
        out_names = [o.name for o in loaded.outputs]

        def call(*args: Any) -> Any:  # a dict: the .tflite's signature keeps the SavedModel's output names
            result = model(**dict(zip(names, args)))
            return {n: result[n] for n in out_names}

        owner = model._edgecompress_owner  # the loaded SavedModel keeps the variables alive
    else:
        def call(*args: Any) -> Any:
            return model(list(args) if len(args) > 1 else args[0], training=False)

        # The owner is a plain module holding the model's tf.Variables. With a Keras 3 model as the owner the
        # converter froze the wrong values (seen: NaN outputs); with a tf-keras model it spent 5.4x as long
        # (25.9 s against 4.8 s for EfficientNetB0, identical output: benchmarks/convert_owner.py).
        owner = tf.Module()
        owner.tf_variables = [v.value for v in model.variables] if loaded.flavour == "keras3" else list(
            model.variables)
    function = tf.function(call, input_signature=signature).get_concrete_function()
    return function, owner


def flex_ops(data: bytes) -> list[str]:
    """TensorFlow ops a .tflite runs through the Flex delegate (stock runtimes lack it)."""
    return sorted({m.decode() for m in _FLEX_CODE.findall(data)})


def _explain(exc: Exception, quantize: str, flex_option: bool = True) -> Exception:
    """Turn the converter's page-long message into one line that says what to do, when we understand it."""
    text = str(exc)
    select = re.search(r"TF Select ops: ([^\n]+)", text)
    if select and not flex_option:
        return UserError(
            f"the model needs TensorFlow ops that TFLite's built-in kernels lack ({select.group(1).strip()}): "
            f"{quantize} needs a built-in kernel for every op, so replace those layers with built-in ones"
        )
    if select:
        return UserError(
            f"the model needs TensorFlow ops that TFLite's built-in kernels lack ({select.group(1).strip()}): "
            "set allow_flex to export them as Flex ops (SELECT_TF_OPS), which stock runtimes such as "
            "ai-edge-litert cannot run", settings=("allow_flex",)
        )
    custom = re.search(r"Custom ops: ([^\n]+)", text)
    if custom:
        return UserError(
            f"the model needs ops with no TFLite kernel ({custom.group(1).strip()}): "
            "replace those layers with built-in ones before converting"
        )
    not_16x8 = re.search(r"Quantization to 16x8-bit not yet supported for op: '([^']+)'", text)
    if not_16x8:  # the converter's own refusal (seen: MobileNetV3's HARD_SWISH)
        return UserError(
            f"TFLite's int16x8 quantizer does not support {not_16x8.group(1)} yet: use quantize int8 (or dynamic)",
            settings=("quantize",)
        )
    unsupported = re.search(r"error: ('[^']+' op[^\n]*)", text)
    if unsupported and quantize in CALIBRATED_MODES:
        return UserError(
            f"{quantize} conversion failed: {unsupported.group(1).strip()}: "
            "try quantize dynamic or float16, which keep float kernels", settings=("quantize",)
        )
    return exc


def _source_sizes(path: Path) -> tuple[int | None, int | None]:
    if not path.exists():
        return None, None
    files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
    return path_size(path), sum(gzip_size(f.read_bytes()) for f in files)
