"""int4 within an accuracy target: the weight layers int4 hurts most are raised (TIERS: float activations, then
int8 weights, then float), cumulatively, until the loss on labelled data is at most max_drop; each step is
measured and reported with its size. Within a tier the fewest layers are found by bisection.

Which layers hurt most is measured, not assumed (no fixed rule for first, last or depthwise layers): each layer
alone at int4, every other weight float, run on held-out calibration samples; its worst output's SQNR against
float ranks it. One file per layer, all run in one child process (a file that crashes the runtime is found by
running them one by one). The steps then cost one quantization and one evaluation each.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgecompress.errors import NativeCrash, UserError
from edgecompress.evaluate import EvalResult, drop_points
from edgecompress.progress import note
from edgecompress.runner import layer_name
from edgecompress.runtime import first_line
from edgecompress.tflite_reader import parse_model
from edgecompress.converters.algorithm_choice import worst_sqnr
from edgecompress.converters.litert_quantize import (
    float32_constants, gptq_rounding_of, held_out, quantize_layers, quantize_weights,
)
from edgecompress.converters.precision_steps import FallbackSearch, FallbackStep
from edgecompress.converters.validate import run_file, run_files_isolated


# Where a layer goes when int4 costs too much, cheapest first: int4 weights with float activations (the hybrid
# kernels quantize a layer's input on the fly, which a spectrogram's range does not survive: BirdNET's mel
# filterbanks), then int8 weights with float activations, then float.
TIERS: tuple[str | None, ...] = ("int4-weights", "int8-weights", None)


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str  # the Keras layer, read from the tensor name
    op: str
    tensor: str  # the op's output tensor (what a recipe scope names)
    sqnr_db: float | None  # the worst output's, with this layer alone at int4; None: the file did not run

    @property
    def signal_lost(self) -> float | None:
        """RMS error over RMS signal at the worst output: the SQNR as a share."""
        return None if self.sqnr_db is None else 10 ** (-self.sqnr_db / 20)


@dataclass
class Int4Diagnosis:
    model: str
    samples: int  # held-out calibration samples each layer was measured on
    algorithm: str  # the rounding the measures are for
    all_int4_sqnr_db: float | None  # every layer at int4 together
    layers: list[LayerSensitivity]  # most sensitive first
    seconds: float


def int4_layers(data: bytes) -> dict[str, tuple[str, str]]:
    """The ops whose weights are int4 in the quantized DATA, in graph order: output tensor (what a recipe scope
    names) -> (layer name, read from the weight tensor: the output's is often a fused activation's; op)."""
    graph = parse_model(data).main
    found = {}
    for op in graph.operators:
        weights = [t for i in op.inputs if (t := graph.tensor(i)) is not None and t.is_constant and t.dtype == "int4"]
        if weights:
            found[graph.tensor(op.outputs[0]).name] = (weights[0].name, op.name)
    names = [layer_name(weight) for weight, _ in found.values()]
    # one Keras layer can hold many weighted ops (basic-pitch's constant-Q layer: 26 convolutions): name those
    # by their own op too
    return {tensor: (name if names.count(name) == 1 else _op_path(weight), op)
            for (tensor, (weight, op)), name in zip(found.items(), names)}


def _op_path(tensor: str) -> str:
    """'model_1/cq/conv1d_4;model_1/cq/conv1d_4' -> 'cq/conv1d_4'."""
    return "/".join(tensor.split(";")[0].split("/")[1:])


def int4_within(data: bytes, source: str, calibration: dict[str, np.ndarray], score: Callable[[bytes], EvalResult],
                reference: EvalResult, max_drop: float, algorithm: str = "auto",
                seed: int = 0) -> tuple[bytes, FallbackSearch, str]:
    """The int4 model of the float .tflite DATA that loses at most MAX_DROP against REFERENCE (as SCORE measures
    a file) with the fewest layers at higher precision, or the best attempt (search.target_met says which);
    and the rounding algorithm used (auto: chosen on CALIBRATION, converters.algorithm_choice)."""
    data, _ = float32_constants(data, source)
    if algorithm == "auto":
        algorithm = quantize_weights(data, "int4", source=source, algorithm="auto", calibration=calibration,
                                     seed=seed).algorithm
    with tempfile.TemporaryDirectory(prefix="edgecompress-mixed-") as tmp:
        float_path = Path(tmp) / "float32.tflite"
        float_path.write_bytes(data)
        rounding = (gptq_rounding_of(data, "int4", None, float_path, calibration, seed)
                    if algorithm == "gptq" else None)

        def build(precision: dict[str, str | None]) -> bytes:
            return quantize_layers(data, "int4", algorithm, source, rounding=rounding, precision=precision).data

        search = FallbackSearch(reference.metric, reference.score,
                                max_drop)
        kept: dict[int, bytes] = {}
        layers: dict[str, tuple[str, str]] = {}

        def attempt(precision: dict[str, str | None]) -> bool:
            try:
                made = build(precision)
            except UserError as exc:  # seen: litert-quantizer 0.11 fails on some mixes of weight-only 4 and 8 bits
                note(f"  a mix the quantizer cannot build, counted as missing the target: {first_line(exc)}")
                return False
            result = score(made)
            names = {tier: [layers[t][0] for t, p in precision.items() if p == tier] for tier in TIERS}
            step = FallbackStep(names[None], len(made), result.score, drop_points(reference, result),
                                names["int8-weights"], names["int4-weights"])
            note(f"  {len(names['int4-weights'])} layer(s) with float activations, {len(names['int8-weights'])} at "
                 f"int8 weights, {len(names[None])} in float: {search.metric} {step.accuracy:.4g}, drop "
                 f"{step.drop:.2f} (max {max_drop:g}), {len(made):,} bytes")
            kept[len(search.steps)] = made
            return search.record(step)

        note(f"accuracy-driven int4 ({algorithm} rounding): original {search.metric} {reference.score:.4g}; all "
             "int4 first")
        if attempt({}):
            return kept[search.chosen], search, algorithm
        layers.update(int4_layers(build({})))
        ranking = rank_layers(layers, build, float_path, held_out(calibration), Path(tmp))
        search.reasons = {s.layer: f"alone at int4 the worst output keeps {_db(s.sqnr_db)}" for s in ranking}
        order = [s.tensor for s in ranking]
        below: str | None = "int4"  # what the layers not raised yet are
        for tier in TIERS:
            def raised(count: int) -> dict[str, str | None]:
                lower = {} if below == "int4" else {t: below for t in order[count:]}
                return {**lower, **{t: tier for t in order[:count]}}

            if not attempt(raised(len(order))):
                below = tier
                continue
            low, high = 0, len(order)  # raised(high) meets the target, raised(low) does not (low 0: known)
            while high - low > 1:  # fewest layers raised: bisection, the target taken as monotone in the count
                middle = (low + high) // 2
                low, high = (low, middle) if attempt(raised(middle)) else (middle, high)
            break
        return kept[search.chosen], search, algorithm


def diagnose_int4(data: bytes, source: str, calibration: dict[str, np.ndarray], algorithm: str = "auto",
                  seed: int = 0) -> Int4Diagnosis:
    """How much int4 weights cost each weight layer of the float .tflite DATA alone (the rest float), and all of
    them together, measured on held-out CALIBRATION samples; the layers most sensitive first."""
    start = time.perf_counter()
    data, _ = float32_constants(data, source)
    if algorithm == "auto":
        algorithm = quantize_weights(data, "int4", source=source, algorithm="auto", calibration=calibration,
                                     seed=seed).algorithm
    feeds = held_out(calibration)
    with tempfile.TemporaryDirectory(prefix="edgecompress-diagnose-") as tmp:
        float_path = Path(tmp) / "float32.tflite"
        float_path.write_bytes(data)
        rounding = (gptq_rounding_of(data, "int4", None, float_path, calibration, seed)
                    if algorithm == "gptq" else None)

        def build(precision: dict[str, str | None]) -> bytes:
            return quantize_layers(data, "int4", algorithm, source, rounding=rounding, precision=precision).data

        whole = build({})
        ranking = rank_layers(int4_layers(whole), build, float_path, feeds, Path(tmp))
        reference = run_file(float_path, feeds)
        together_path = Path(tmp) / "all.tflite"
        together_path.write_bytes(whole)
        together = run_files_isolated([str(together_path)], feeds, reference.names)[0]
    return Int4Diagnosis(source, len(next(iter(feeds.values()))), algorithm,
                         worst_sqnr(reference.outputs, together), ranking, time.perf_counter() - start)


def rank_layers(layers: dict[str, tuple[str, str]], build: Callable[[dict[str, str | None]], bytes],
                float_path: Path, feeds: dict[str, np.ndarray], folder: Path) -> list[LayerSensitivity]:
    """LAYERS (output tensor -> (layer name, op)), most sensitive first: each alone at int4 (BUILD with every
    other one float), measured against FLOAT_PATH on FEEDS."""
    paths = []
    for i, tensor in enumerate(layers):
        path = folder / f"alone-{i}.tflite"
        path.write_bytes(build({other: None for other in layers if other != tensor}))
        paths.append(str(path))
    note(f"measuring how much int4 costs each of {len(layers)} layers, alone, on {len(next(iter(feeds.values())))} "
         "held-out samples")
    reference = run_file(float_path, feeds)
    outputs = run_files_isolated(paths, feeds, reference.names)
    measured = [LayerSensitivity(name, op, t, None if isinstance(out, NativeCrash) else worst_sqnr(reference.outputs, out))
                for (t, (name, op)), out in zip(layers.items(), outputs)]
    return sorted(measured, key=lambda s: -math.inf if s.sqnr_db is None else s.sqnr_db)


def _db(value: float | None) -> str:
    if value is None:
        return "nothing (the file does not run)"
    return "all its signal" if math.isinf(value) else f"{value:.1f} dB"
