"""Accuracy-driven int8: full int8 first; then, if the model has outlier channels, full int8 of the model with
them scaled into their readers' weights (converters.smoothing: the same function in float); while it loses more
than max_drop on labelled data, keep layers' activations in float, their weights int8 (weight-only): the shortest
prefix of diagnose's ranking within the target (precision_steps.shortest_prefix: the first three one by one, as
Intel Neural Compressor's "basic" strategy does, then doubling and bisection). A candidate within the target is
also run on the edge inputs; what fails there is kept float too (converters.edge_faults).

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
from edgecompress.converters.edge_faults import EdgeGuard, edge_feeds, finite_per_edge
from edgecompress.converters.litert_quantize import int8_weights
from edgecompress.converters.precision_steps import FallbackSearch, FallbackStep, model_changing, shortest_prefix
from edgecompress.converters.smoothing import smooth_outliers
from edgecompress.converters.validate import reference_outputs


def accuracy_driven_int8(
    loaded: LoadedModel, samples: SampleSet, eval_data: str | Path, max_drop: float, reference: EvalResult,
    smooth: bool = True,
) -> tuple[bytes, FallbackSearch]:
    """The int8 model of LOADED that loses at most MAX_DROP against REFERENCE on EVAL_DATA with the fewest layers
    in float, or the best attempt when none does (search.target_met says which). Outlier channels are scaled into
    their readers' weights first (converters.smoothing) unless not SMOOTH, and the layers kept in float keep int8
    weights."""
    search = FallbackSearch(reference.metric, reference.score, max_drop)
    best: bytes = b""
    debugger = Int8Debugger(loaded, samples)
    changes: list = []
    edges = edge_feeds(samples.batch())
    guard = EdgeGuard(edges, finite_per_edge(reference_outputs(loaded, edges)))

    def attempt(tensors: list[str]) -> bool:
        nonlocal best
        tensors = list(dict.fromkeys([*tensors, *guard.forced]))
        data = debugger.quantized(tensors)
        if tensors:
            data = int8_weights(data)
        result = evaluate_bytes(data, eval_data, reference)
        layers = list(dict.fromkeys(debugger.layer_name(op) for op in debugger.float_ops(tensors)))
        step = FallbackStep(layers, len(data), result.score, drop_points(reference, result), smoothed=bool(changes))
        outcome = guard.record(search, step, data, debugger.layer_name)
        if search.chosen == len(search.steps) - 1:
            best = data
        return outcome == "met" or (outcome == "retry" and attempt(tensors))

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
    shortest_prefix(model_changing(ranking, debugger.float_ops), lambda n: attempt(ranking[:n]))
    search.explain_float_layers()
    return best, search
