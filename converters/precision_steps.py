"""The steps of an accuracy-driven search for a quantized model (int8 with layers in float, converters.fallback;
int4 with layers at int8 or float, converters.mixed_precision): what each step kept at higher precision and what
it measured, and the rules every such search shares."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from edgecompress.errors import UserError
from edgecompress.converters.modes import MAX_DROP_MODES


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
        """Add STEP and say whether it meets the target. The kept step is the smallest file that meets it; until
        one does, the closest (a step that fails an edge input never beats one that does not)."""
        self.steps.append(step)
        met = step.drop <= self.max_drop and step.edge_fault is None
        if met:
            better = not self.target_met or step.size_bytes < self.kept.size_bytes
        else:
            better = not self.target_met and (len(self.steps) == 1 or _rank(step) < _rank(self.kept))
        if better:
            self.chosen, self.target_met = len(self.steps) - 1, met
        return met


def shortest_prefix(ends: Sequence[int], meets: Callable[[int], bool], linear: int = 3) -> None:
    """Call MEETS(n) (keep the first n tensors of a ranking at higher precision; True when the target holds) to
    find the shortest prefix that meets the target, among the prefix lengths ENDS (those that change the model).
    The first LINEAR are tried one by one (usually a culprit or two: the cheap, common case); then the length
    doubles until the target holds, and bisection finds the shortest, the target taken as monotone in the
    length: 2 log2 n attempts instead of n on a model of hundreds of tensors (basic-pitch)."""
    for end in ends[:linear]:
        if meets(end):
            return
    low, high, i = linear - 1, None, linear - 1  # positions in ENDS: low fails, high meets
    while i < len(ends) - 1:
        i = min(2 * i + 1, len(ends) - 1)
        if meets(ends[i]):
            high = i
            break
        low = i
    if high is None:
        return
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if meets(ends[middle]) else (middle, high)


def model_changing(ranking: Sequence[str], ops_of: Callable[[Sequence[str]], list[str]]) -> list[int]:
    """The prefix lengths of RANKING that keep more ops float than the prefix before (OPS_OF: the float ops a
    set of tensors takes along): a tensor an earlier one already made float changes nothing."""
    ends, seen = [], set()
    for n in range(1, len(ranking) + 1):
        ops = set(ops_of(ranking[:n]))
        if ops != seen:
            ends.append(n)
            seen = ops
    return ends


def _rank(step: FallbackStep) -> tuple[bool, float]:
    return step.edge_fault is not None, step.drop




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
