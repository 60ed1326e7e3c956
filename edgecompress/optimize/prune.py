"""Magnitude pruning (TF-MOT prune_low_magnitude): unstructured with a polynomial-decay schedule, or M:N."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from edgecompress.errors import UserError
from edgecompress.setting import Setting
from edgecompress.optimize.base import Applied, Context, Technique
from edgecompress.optimize.layers import import_tfmot, plan, prune_judge, wrap_layers

# M:N patterns (M zeros in every N consecutive weights) TF-MOT's mask generator handles; 2:4 is the one
# hardware and TFLite's sparse kernels target, 1:2 and 4:8 keep the same 50% density.
SUPPORTED_PATTERNS = ((2, 4), (1, 2), (4, 8))
PATTERNS = tuple(f"{m}:{n}" for m, n in SUPPORTED_PATTERNS)

# Share of the maximum epochs spent ramping sparsity up; the rest recovers accuracy at the final sparsity,
# under early stopping, which only compares epochs once the ramp is over.
RAMP_SHARE = 0.5
# Where the ramp starts, as a share of the final sparsity (TF-MOT's tutorial starts 80% at 50%).
INITIAL_SHARE = 0.0


def parse_pattern(text: str) -> tuple[int, int]:
    try:
        m, n = (int(part) for part in text.split(":"))
    except ValueError:
        m, n = -1, -1
    if (m, n) not in SUPPORTED_PATTERNS:
        raise UserError(f"prune_pattern {text!r} is not supported: use one of {', '.join(PATTERNS)}",
                        settings=("prune_pattern",))
    return m, n


@dataclass
class Prune(Technique):
    sparsity: float = 0.5
    pattern: tuple[int, int] | None = None  # M:N structured sparsity instead of a sparsity level

    name = "prune"
    order = 20
    settings = (
        Setting("prune", float, "Magnitude pruning to this final sparsity, in [0, 1).", off=0.0, low=0, high=1,
                high_open=True),
        Setting("prune_pattern", str, "Structured M:N sparsity instead: " + ", ".join(PATTERNS) + ".",
                choices=PATTERNS, what="pruning pattern"),
    )

    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        pattern = values.get("prune_pattern")
        return f"prune{pattern.replace(':', 'of')}" if pattern else f"prune{values['prune']:g}"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Prune | None:
        sparsity, pattern = settings.get("prune"), settings.get("prune_pattern")
        if sparsity and pattern:
            raise UserError("prune and prune_pattern exclude each other: an M:N pattern fixes the sparsity",
                            settings=("prune", "prune_pattern"))
        if pattern:
            return cls(pattern=parse_pattern(pattern))
        return cls(sparsity) if sparsity is not None and sparsity != 0 else None

    def validate(self) -> None:
        if self.pattern is not None:
            self.pattern = tuple(self.pattern)  # type: ignore[assignment]  # from JSON/TOML lists
            if self.pattern not in SUPPORTED_PATTERNS:
                parse_pattern(":".join(str(v) for v in self.pattern))
            self.sparsity = self.pattern[0] / self.pattern[1]
        if not (isinstance(self.sparsity, (int, float)) and 0 <= self.sparsity < 1):
            raise UserError(f"prune {self.sparsity!r} is outside [0, 1): give a share such as 0.8", settings=("prune",))

    def describe(self) -> str:
        if self.pattern:
            return f"prune {self.pattern[0]}:{self.pattern[1]} structured (M zeros in every N weights)"
        return f"prune to {self.sparsity:.0%} sparsity (magnitude, polynomial decay)"

    def ramp_epochs(self, ctx: Context) -> int:
        return 1 if self.pattern else max(1, math.floor(ctx.epochs * RAMP_SHARE))

    def first_compared_epoch(self, ctx: Context) -> int:
        return self.ramp_epochs(ctx)

    def schedule(self, ctx: Context) -> Any:
        tfmot = import_tfmot()

        if self.pattern:  # the M:N mask is set at the first step and kept; the schedule is not used
            return tfmot.sparsity.keras.ConstantSparsity(self.sparsity, begin_step=0)
        # Masks update every `frequency` steps and only up to `end`: end on a multiple of it, within the ramp's
        # last epoch, so that epoch ends at the final sparsity.
        frequency = max(1, ctx.steps_per_epoch // 4)
        ramp_steps = self.ramp_epochs(ctx) * ctx.steps_per_epoch
        end = max(frequency, ramp_steps // frequency * frequency)
        return tfmot.sparsity.keras.PolynomialDecay(INITIAL_SHARE * self.sparsity, self.sparsity, 0, end,
                                                    frequency=frequency)

    def apply(self, model: Any, ctx: Context) -> Applied:
        tfmot = import_tfmot()

        chosen, skipped = plan(model, prune_judge(self.pattern), self.name)
        schedule = self.schedule(ctx)
        wrapped = wrap_layers(
            model,
            chosen,
            lambda layer: tfmot.sparsity.keras.prune_low_magnitude(
                layer, pruning_schedule=schedule, sparsity_m_by_n=self.pattern
            ),
        )
        return Applied(wrapped, skipped, compressed=chosen)

    def callbacks(self) -> list[Any]:
        tfmot = import_tfmot()

        return [tfmot.sparsity.keras.UpdatePruningStep()]

    def strip(self, model: Any) -> Any:
        tfmot = import_tfmot()

        return tfmot.sparsity.keras.strip_pruning(model)
