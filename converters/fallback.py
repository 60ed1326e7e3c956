"""Accuracy-driven int8: full int8 first; then, if the model has outlier channels, full int8 of the model with
them scaled into their readers' weights (converters.smoothing: the same function in float); while it loses more
than max_drop on labelled data, keep more layers' activations in float, cumulatively in the order diagnose ranks
them (Intel Neural Compressor's "basic" strategy), their weights int8 (weight-only), and stop at the first model
within the target.

The ranking is the per-tensor signal lost (converters.diagnose), not the accuracy impact of falling back each
layer alone: it costs one pass over the calibration samples instead of one conversion and one evaluation per
layer, and it names the tensor whose range is at fault rather than the layers downstream that inherit the damage.
"""
from __future__ import annotations

from pathlib import Path

from edgecompress.calibration import SampleSet
from edgecompress.evaluate import EvalResult, drop_points, evaluate_bytes
from edgecompress.models import LoadedModel
from edgecompress.progress import note
from edgecompress.converters.diagnose import Int8Debugger
from edgecompress.converters.litert_quantize import int8_weights
from edgecompress.converters.precision_steps import FallbackSearch, FallbackStep
from edgecompress.converters.smoothing import smooth_outliers


def accuracy_driven_int8(
    loaded: LoadedModel, samples: SampleSet, eval_data: str | Path, max_drop: float, reference: EvalResult,
    smooth: bool = True,
) -> tuple[bytes, FallbackSearch]:
    """The int8 model of LOADED that loses at most MAX_DROP against REFERENCE on EVAL_DATA with the fewest layers
    in float, or the best attempt when none does (search.target_met says which). Outlier channels are scaled into
    their readers' weights first (converters.smoothing) unless not SMOOTH, and the layers kept in float keep int8
    weights."""
    search = FallbackSearch("accuracy" if reference.task == "classification" else "mae", reference.score, max_drop)
    best: bytes = b""
    debugger = Int8Debugger(loaded, samples)
    changes: list = []

    def attempt(tensors: list[str]) -> bool:
        nonlocal best
        data = debugger.quantized(tensors)
        if tensors:
            data = int8_weights(data)
        result = evaluate_bytes(data, eval_data, reference)
        layers = list(dict.fromkeys(debugger.layer_name(op) for op in debugger.float_ops(tensors)))
        step = FallbackStep(layers, len(data), result.score, drop_points(reference, result), smoothed=bool(changes))
        note(f"  {len(layers)} layer(s) with float activations{': ' + ', '.join(layers) if layers else ''}: "
             f"{search.metric} {step.accuracy:.4g}, drop {step.drop:.2f} (max {max_drop:g}), {len(data):,} bytes")
        met = search.record(step)
        if search.steps[search.chosen] is step:
            best = data
        return met

    note(f"accuracy-driven int8: original {search.metric} {reference.score:.4g}; full int8 first")
    if attempt([]):
        return best, search
    smoothed, changes = smooth_outliers(loaded, samples) if smooth else (loaded, [])
    if changes:
        search.smoothed = [f"{c.layer} -> {c.reader}: {c.channels} channel(s) scaled down, up to {c.largest_scale:.3g}x"
                           for c in changes]
        note(f"outlier channels scaled into their readers' weights (float outputs unchanged): {'; '.join(search.smoothed)}")
        debugger = Int8Debugger(smoothed, samples)
        if attempt([]):
            return best, search
    errors = [layer for layer in debugger.layer_errors() if layer.signal_lost > 0]
    for layer in errors:  # the first (worst) measure of each layer is why it goes float
        search.reasons.setdefault(layer.name, f"its output loses {layer.signal_lost:.1%} of its signal at int8")
    ranking = [layer.tensor for layer in errors]
    kept: list[str] = []
    for tensor in ranking:
        before = set(debugger.float_ops(kept))
        kept.append(tensor)
        if set(debugger.float_ops(kept)) != before and attempt(kept):  # skip what an earlier layer made float
            break
    search.explain_float_layers()
    return best, search
