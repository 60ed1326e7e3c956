"""Accuracy-driven full int8 of an existing .tflite (`quantize --quantize int8 --max-drop`): converters.fallback's
search, for models that exist only as .tflite, without TensorFlow.

Full int8 first; while the loss on labelled data is above max_drop, tensors of the ranking keep float
activations, with the ops that make them and read them (a reader left int8 would quantize them again), their
weights int8 (weight-only): the shortest prefix of the ranking within the target is kept
(precision_steps.shortest_prefix), and what fails an edge input is kept float too (converters.edge_faults).
The ranking is the signal each activation loses when it alone is int8 with its calibrated range
(full_int8.signal_lost), measured on the float model with the runtime: the tensor whose range is at fault comes
first, not the layers downstream that inherit the damage.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgecompress.evaluate import EvalResult, drop_points
from edgecompress.isolation import run_isolated
from edgecompress.progress import note
from edgecompress.runner import layer_name
from edgecompress.tflite_reader import Subgraph, parse_model
from edgecompress.converters.full_int8 import quantize_full_int8, signal_lost, tensor_ranges
from edgecompress.converters.litert_quantize import int8_weights
from edgecompress.converters.edge_faults import EdgeGuard
from edgecompress.converters.precision_steps import FallbackSearch, FallbackStep, model_changing, shortest_prefix


def int8_within(data: bytes, feeds: Sequence[dict[int, np.ndarray]], score: Callable[[bytes], EvalResult],
                reference: EvalResult, max_drop: float, guard: EdgeGuard,
                method: str = "minmax") -> tuple[bytes, FallbackSearch]:
    """The full-int8 model of the float .tflite DATA (float32 constants), calibrated on FEEDS with METHOD ranges,
    that loses at most MAX_DROP against REFERENCE (as SCORE measures a file) and runs GUARD's edge inputs, with
    the fewest tensors kept float, or the best attempt (search.target_met says which)."""
    graph = parse_model(data).main
    search = FallbackSearch(reference.metric, reference.score, max_drop)
    kept: dict[int, bytes] = {}

    def attempt(tensors: Sequence[str]) -> bool:
        tensors = list(dict.fromkeys([*tensors, *guard.forced]))
        ops = float_ops(graph, tensors)
        made = quantize_full_int8(data, feeds, "float32", method, float_ops=ops)
        if ops:
            made = int8_weights(made)
        result = score(made)
        layers = list(dict.fromkeys(layer_name(op) for op in ops))
        step = FallbackStep(layers, len(made), result.score, drop_points(reference, result))
        kept[len(search.steps)] = made
        outcome = guard.record(search, step, made, layer_name)
        return outcome == "met" or (outcome == "retry" and attempt(tensors))

    note(f"accuracy-driven int8: original {search.metric} {reference.score:.4g}; full int8 first")
    if attempt([]):
        return kept[search.chosen], search
    lost = _signal_lost(data, list(feeds), method)
    outputs = {graph.tensor(o).name for op in graph.operators for o in op.outputs if graph.tensor(o) is not None}
    ranking = sorted((name for name in lost if name in outputs and lost[name] > 0), key=lambda n: -lost[n])
    for tensor in ranking:
        search.reasons.setdefault(layer_name(tensor), f"its output loses {lost[tensor]:.1%} of its signal at int8")
    shortest_prefix(model_changing(ranking, lambda ts: float_ops(graph, ts)), lambda n: attempt(ranking[:n]))
    search.explain_float_layers()
    return kept[search.chosen], search


def float_ops(graph: Subgraph, tensors: Sequence[str]) -> list[str]:
    """The ops (by output tensor name, what a recipe scope names) that make or read TENSORS."""
    wanted = {t.index for t in graph.tensors if t.name in set(tensors)}
    return [graph.tensor(op.outputs[0]).name for op in graph.operators
            if op.outputs and wanted & (set(op.outputs) | set(op.inputs))]


def _signal_lost(data: bytes, feeds: list[dict[int, np.ndarray]], method: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="edgecompress-int8-") as folder:
        path = Path(folder) / "float.tflite"
        path.write_bytes(data)
        ranges = run_isolated(tensor_ranges, str(path), feeds, method, what="the runtime, measuring ranges")
        return run_isolated(signal_lost, str(path), feeds, ranges, what="the runtime, measuring each tensor's loss")
