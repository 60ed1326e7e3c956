"""The steps of an accuracy-driven search for a quantized model (int8 with layers in float, converters.fallback;
int4 with layers at int8 or float, converters.mixed_precision): what each step kept at higher precision and what
it measured."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FallbackStep:
    float_layers: list[str]
    size_bytes: int
    accuracy: float  # top-1 on the labelled data, or MAE for regression
    drop: float  # top-1 points, or MAE increase in %
    int8_layers: list[str] = field(default_factory=list)  # int4 searches: layers at int8 weights, float activations
    weight_only_layers: list[str] = field(default_factory=list)  # int4 searches: int4 weights, float activations
    smoothed: bool = False  # int8: made from the model with its outlier channels scaled (converters.smoothing)


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

    def record(self, step: FallbackStep) -> bool:
        """Add STEP; keep it if it meets the target, is the first, or beats the kept one. True when it meets it."""
        self.steps.append(step)
        met = step.drop <= self.max_drop
        if met or len(self.steps) == 1 or step.drop < self.kept.drop:
            self.chosen, self.target_met = len(self.steps) - 1, met
        return met
