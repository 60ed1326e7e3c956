"""The steps of an accuracy-driven search for a quantized model (int8 with layers in float, converters.fallback;
int4 with layers at int8 or float, converters.mixed_precision): what each step kept at higher precision and what
it measured, and the rules every such search shares."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgecompress.errors import UserError


@dataclass(frozen=True)
class FallbackStep:
    float_layers: list[str]
    size_bytes: int
    accuracy: float  # top-1 on the labelled data, or MAE for regression
    drop: float  # top-1 points, or MAE increase in %
    int8_layers: list[str] = field(default_factory=list)  # int4 searches: layers at int8 weights, float activations
    weight_only_layers: list[str] = field(default_factory=list)  # int4 searches: int4 weights, float activations
    smoothed: bool = False  # int8: made from the model with its outlier channels scaled (converters.smoothing)
    edge_fault: str | None = None  # within the target on labelled data, but fails an edge input (edge_faults)


@dataclass
class FallbackSearch:
    metric: str  # "accuracy" or "mae"
    source_accuracy: float  # the original model on the same data
    max_drop: float
    steps: list[FallbackStep] = field(default_factory=list)
    chosen: int = 0  # the step whose model was kept
    target_met: bool = False
    reasons: dict[str, str] = field(default_factory=dict)  # layer -> the measure that moved it first
    smoothed: list[str] = field(default_factory=list)  # int8: outlier channels scaled into their readers

    @property
    def kept(self) -> FallbackStep:
        return self.steps[self.chosen]

    def explain_float_layers(self) -> None:
        """Keep the reasons of the kept step's float layers only; a reader made float with its producer (or it
        would quantize the tensor again) has no measure of its own."""
        for layer in self.kept.float_layers:
            self.reasons.setdefault(layer, "reads a tensor kept float (it would quantize it again)")
        self.reasons = {layer: self.reasons[layer] for layer in self.kept.float_layers}

    def record(self, step: FallbackStep) -> bool:
        """Add STEP; keep it if it meets the target, is the first, or beats the kept one (a step that fails an
        edge input never beats one that does not). True when it meets the target."""
        self.steps.append(step)
        met = step.drop <= self.max_drop and step.edge_fault is None
        if met or len(self.steps) == 1 or _rank(step) < _rank(self.kept):
            self.chosen, self.target_met = len(self.steps) - 1, met
        return met


def _rank(step: FallbackStep) -> tuple[bool, float]:
    return step.edge_fault is not None, step.drop


MAX_DROP_MODES = ("int8", "int4")  # int4: converters.mixed_precision


def check_fallback_options(
    quantize: str, io_type: str, max_drop: float | None, eval_data: object, allow_flex: bool = False
) -> None:
    """max_drop and eval_data go together, with full-integer int8, float I/O and built-in ops; caught before any work."""
    if max_drop is None:
        if eval_data is not None:
            raise UserError("eval_data is only used with max_drop: set both", settings=("eval_data", "max_drop"))
        return
    if eval_data is None:
        raise UserError(
            "max_drop needs labelled data to measure the drop: set eval_data (a .npz with the inputs plus labels "
            "under 'y')", settings=("max_drop", "eval_data")
        )
    if quantize not in MAX_DROP_MODES:
        raise UserError(f"max_drop keeps layers of an int8 model in float, or of an int4 model at int8 or float: use "
                        f"quantize int8 or int4, not {quantize!r}", settings=("max_drop", "quantize"))
    if io_type != "float32":
        raise UserError(f"max_drop leaves some layers in float, so I/O stays float32: drop io_type {io_type}",
                        settings=("max_drop", "io_type"))
    if allow_flex:
        raise UserError("max_drop works on built-in ops only: drop allow_flex", settings=("max_drop", "allow_flex"))
    if not (max_drop >= 0 and math.isfinite(max_drop)):
        raise UserError(f"max_drop must be a number of points >= 0, not {max_drop}", settings=("max_drop",))
