"""Where full-integer int8 loses a model's accuracy, layer by layer; and int8 models with chosen layers in float.

TFLite's QuantizationDebugger compares each int8 op with the same op run in float on the same (int8) inputs.
That local error misses the commonest way int8 breaks: one tensor whose calibrated range is so wide (an outlier
channel) that its per-tensor scale rounds every other channel to zero. The layers after it then compare float
and int8 on inputs that carry no signal and look as bad as the culprit, while the culprit's own error is small
next to its huge range. So layers are ranked by the signal each tensor loses when it alone is quantized: its
calibrated scale applied to the float model's own activations, measured per channel and averaged.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecompress.calibration import SampleSet, load_samples
from edgecompress.evaluate import drop_points, evaluate_bytes, evaluate_keras
from edgecompress.models import LoadedModel, import_tf, load_model
from edgecompress.isolation import crash_for_tests
from edgecompress.progress import note, stage
from edgecompress.quiet import quiet_native_stderr
from edgecompress.runner import layer_name
from edgecompress.runtime import load_interpreter
from edgecompress.tflite_reader import parse_model
from edgecompress.converters.convert import DEFAULT_CALIBRATION_SAMPLES, fixed_batch_function, run_converter, to_tflite
from edgecompress.converters.mixed_precision import Int4Diagnosis
from edgecompress.converters.quantize import configure

_VERIFY_PREFIX = "NumericVerify/"


@dataclass(frozen=True)
class LayerError:
    name: str  # the Keras layer, read from the tensor name
    op: str
    tensor: str  # the op's output tensor in the converted model (what the converter's denylist takes)
    signal_lost: float  # per channel: RMS quantization error / RMS float activation, averaged over channels
    rmse: float | None  # the debugger's: int8 op against the same op in float, both on the same int8 inputs
    rmse_over_scale: float | None  # about 0.29 (1/sqrt(12)) is plain rounding; far above means clipping
    range: float  # the real interval the int8 tensor covers: 255 x scale


@dataclass(frozen=True)
class AccuracyComparison:
    metric: str  # "accuracy" (top-1) or "mae"
    float: float  # the original Keras model
    int8: float
    drop: float  # top-1 points, or MAE increase in %


@dataclass
class Diagnosis:
    model: str
    samples: int
    layers: list[LayerError]  # worst first
    accuracy: AccuracyComparison | None  # with labelled data only
    seconds: float


def diagnose(
    model: str | Path,
    calibration: str | Path,
    data: str | Path | None = None,
    num_samples: int | None = DEFAULT_CALIBRATION_SAMPLES,
    seed: int = 0,
    image_scale: str = "unit",
    unsafe: bool = False,
    model_output: str | None = None,
) -> Diagnosis:
    """Quantize MODEL to int8 on CALIBRATION and measure every layer's error; with DATA, float vs int8 accuracy
    (of MODEL_OUTPUT, for a model with several outputs: see evaluate.pick_output)."""
    start = time.perf_counter()
    loaded = load_model(model, unsafe=unsafe)
    # bad labels fail before the work
    reference = evaluate_keras(loaded, data, model_output) if data is not None else None
    samples = load_samples(calibration, loaded.inputs, num_samples, seed, image_scale)
    note(f"quantizing {loaded.path.name} to int8 and comparing every layer with float on {len(samples)} samples")
    stage("int8 conversion")
    debugger = Int8Debugger(loaded, samples)
    stage("layer-by-layer int8 run")  # where a file that corrupts the runtime dies (a full-int8 LSTM, seen)
    crash_for_tests(loaded.path)
    layers = debugger.layer_errors()
    accuracy = None
    if reference is not None:
        stage("int8 accuracy")
        int8 = evaluate_bytes(debugger.quantized(), data, reference)  # type: ignore[arg-type]
        accuracy = AccuracyComparison(
            reference.metric,
            reference.score, int8.score, drop_points(reference, int8),
        )
    return Diagnosis(str(loaded.path), len(samples), layers, accuracy, time.perf_counter() - start)


def diagnose_int4_file(
    model: str | Path,
    calibration: str | Path,
    num_samples: int | None = DEFAULT_CALIBRATION_SAMPLES,
    seed: int = 0,
    image_scale: str = "unit",
    unsafe: bool = False,
    algorithm: str = "auto",
) -> Int4Diagnosis:
    """What int4 weights cost each layer of MODEL (a float .tflite, read without TensorFlow, or a Keras model,
    exported to float32 first), measured on CALIBRATION (converters.mixed_precision.diagnose_int4)."""
    from edgecompress.converters.mixed_precision import diagnose_int4
    from edgecompress.runner import TFLiteRunner
    from edgecompress.runtime import check_tflite_file

    path = Path(model)
    if path.suffix.lower() == ".tflite":
        data, inputs = check_tflite_file(path), TFLiteRunner(path).inputs
    else:
        loaded = load_model(model, unsafe=unsafe)
        data, inputs = to_tflite(loaded), loaded.inputs
    samples = load_samples(calibration, inputs, num_samples, seed, image_scale)
    note(f"measuring int4 weights on each layer of {path.name} alone, against float")
    return diagnose_int4(data, path.name, samples.batch(len(samples)), algorithm, seed)


class Int8Debugger:
    """One int8 calibration of a model; then per-layer errors, and int8 models with chosen tensors kept in float."""

    def __init__(self, loaded: LoadedModel, samples: SampleSet) -> None:
        self._tf = import_tf("diagnosing int8 quantization")
        self._samples = samples
        function, owner = fixed_batch_function(self._tf, loaded)
        converter = self._tf.lite.TFLiteConverter.from_concrete_functions([function], owner)
        configure(converter, self._tf, "int8", "float32", samples.samples, allow_flex=False)
        debugger_cls = self._tf.lite.experimental.QuantizationDebugger
        self._debugger = run_converter(lambda: debugger_cls(converter=converter, debug_dataset=self._feeds), "int8",
                                       flex_option=False)
        # The calibrated model is the float model with each tensor's observed range: same ops, same names.
        self._calibrated = self._debugger.calibrated_model
        self._graph = parse_model(self._calibrated).main
        self._input_names = _input_names(self._calibrated)
        self._layers = frozenset(layer.name for layer in getattr(loaded.model, "layers", []))

    def layer_name(self, tensor: str) -> str:
        """The model's own name for the layer that made TENSOR."""
        return layer_name(tensor, self._layers)

    def quantized(self, float_tensors: Sequence[str] = ()) -> bytes:
        """The int8 model with every op that produces or reads FLOAT_TENSORS left in float."""
        options = self._tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=self.float_ops(float_tensors))

        def build() -> bytes:
            self._debugger.options = options  # re-quantizes the calibrated model with the new denylist
            return self._debugger.get_nondebug_quantized_model()

        return run_converter(build, "int8")

    def float_ops(self, tensors: Sequence[str]) -> list[str]:
        """The ops (by output tensor name) to keep in float so that TENSORS stay float: producer and readers.

        Keeping only the producer in float is not enough: a reader in int8 quantizes the tensor again
        with the same calibrated scale."""
        names = set(tensors)
        wanted = {t.index for t in self._graph.tensors if t.name in names}
        ops = [op for op in self._graph.operators if wanted & (set(op.outputs) | set(op.inputs))]
        return [self._graph.tensors[op.outputs[0]].name for op in ops]

    def layer_errors(self) -> list[LayerError]:
        """Every int8 activation of the model, worst first (by signal lost, then graph order)."""
        int8 = parse_model(self.quantized()).main  # also resets the debugger to full int8
        scales = {t.name: (t.quantization.scale[0], t.quantization.zero_point[0])
                  for t in int8.tensors if t.dtype == "int8" and t.quantization.is_quantized and not t.is_constant}
        with quiet_native_stderr():
            self._debugger.run()
        stats = {_verified_tensor(k): v for k, v in self._debugger.layer_statistics.items()}
        ops = [(op, self._graph.tensors[op.outputs[0]].name) for op in self._graph.operators]
        ops = [(op, name) for op, name in ops if name in scales]
        lost = self._signal_lost({name: scales[name] for _, name in ops})
        layers = []
        for op, name in ops:
            scale = scales[name][0]
            rmse = float(np.sqrt(stats[name]["mean_squared_error"])) if name in stats else None
            layers.append(LayerError(
                name=self.layer_name(name), op=op.name, tensor=name, signal_lost=lost[name], rmse=rmse,
                rmse_over_scale=rmse / scale if rmse is not None else None, range=255 * scale,
            ))
        # worst first; a tie (a pass-through op shares its input's scale) goes to the earlier op, the cause
        ranked = sorted(enumerate(layers), key=lambda item: (-np.nan_to_num(item[1].signal_lost, nan=-1.0), item[0]))
        return [layer for _, layer in ranked]

    def _feeds(self) -> Any:
        """Samples as the debugger takes them: a list in the converted model's input order."""
        return ([feed[n] for n in self._input_names] for feed in self._samples.samples())

    def _signal_lost(self, scales: dict[str, tuple[float, int]]) -> dict[str, float]:
        """Quantize each float activation with its int8 scale and zero point; per channel (last axis) the RMS
        error over the RMS signal, averaged over the channels that carry any signal."""
        index = {t.name: t.index for t in self._graph.tensors}
        error = {name: 0.0 for name in scales}
        signal = {name: 0.0 for name in scales}
        with tempfile.TemporaryDirectory(prefix="edgecompress-") as folder:
            path = Path(folder) / "calibrated.tflite"
            path.write_bytes(self._calibrated)
            interpreter, _ = load_interpreter(path, preserve_all_tensors=True)
            # each input in its own dtype: token ids stay int32 (the calibrated model keeps float I/O only for floats)
            ports = [(d["index"], d["dtype"]) for d in interpreter.get_input_details()]
            for feed in self._samples.samples():
                for (port, dtype), name in zip(ports, self._input_names):
                    interpreter.set_tensor(port, feed[name].astype(dtype))
                interpreter.invoke()
                for name, (scale, zero) in scales.items():
                    real = interpreter.get_tensor(index[name]).astype(np.float64)
                    stored = np.clip(np.round(real / scale) + zero, -128, 127)
                    axes = tuple(range(real.ndim - 1))
                    error[name] = error[name] + np.sum(((stored - zero) * scale - real) ** 2, axis=axes)
                    signal[name] = signal[name] + np.sum(real ** 2, axis=axes)
        lost = {}
        for name in scales:
            live = np.atleast_1d(signal[name]) > 0
            ratio = np.sqrt(np.atleast_1d(error[name])[live] / np.atleast_1d(signal[name])[live])
            lost[name] = float(ratio.mean()) if live.any() else float("nan")
        return lost


def _verified_tensor(key: str) -> str:
    """The debugger's key 'NumericVerify/<tensor><copy digit>:<index>' -> <tensor> (TFLite's own naming rule)."""
    name = key[len(_VERIFY_PREFIX):].rsplit(":", 1)[0] if key.startswith(_VERIFY_PREFIX) else key
    return name[:-1] if name[-1:].isdigit() else name


def _input_names(model: bytes) -> list[str]:
    """Signature input names in the order of the model's input tensors (which is not Keras's order)."""
    parsed = parse_model(model)
    by_tensor = {index: name for name, index in parsed.signatures[0].inputs.items()}
    return [by_tensor[i] for i in parsed.main.inputs]
