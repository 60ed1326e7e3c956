"""The variants of a sweep: their settings, stable names, grid expansion and dedup of equivalents.

Pure data, no I/O: recipe.py validates values (with line numbers) and builds these; everything
downstream (cache keys, stages, report) reads only these dataclasses.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable

from edgecompress.errors import UserError
from edgecompress.converters.precision_steps import check_fallback_options
from edgecompress.converters.litert_quantize import CALIBRATED_ALGORITHMS, check_algorithm, check_block_size
from edgecompress.converters.modes import CALIBRATED_MODES, WEIGHT_MODES
from edgecompress.converters.quantize import options_conflict, qat_conflict
from edgecompress.optimize.base import techniques_from_settings
from edgecompress.optimize.distill import DISTILLATION


@dataclass(frozen=True)
class VariantSettings:
    """What one variant does to the model. Defaults mean "technique off"."""

    quantize: str = "none"
    io_type: str = "float32"
    block_size: int | None = None  # int4 only: blockwise FULLY_CONNECTED weights
    algorithm: str = "auto"  # the weight modes' rounding (converters.litert_quantize)
    prune: float = 0.0
    prune_pattern: str | None = None
    cluster: int = 0
    qat: bool = False
    low_rank: float = 0.0
    prune_heads: float = 0.0  # transformers: share of each attention layer's heads removed
    prune_ffn: float = 0.0  # and of each feed-forward layer's hidden units
    distill_student: Path | None = None
    temperature: float | None = None
    alpha: float | None = None
    epochs: int | None = None  # overrides [training] for this variant
    learning_rate: float | None = None
    max_drop: float | None = None  # int8: keep layers in float until the loss on data.val is at most this

    @property
    def techniques(self) -> list[str]:
        """The model optimizations (before conversion), in the order they apply (and the name lists them)."""
        chosen = [t.name for t in techniques_from_settings(self.as_dict())]
        return ([DISTILLATION] if self.distill_student is not None else []) + chosen

    @property
    def needs_training(self) -> bool:
        return bool(self.techniques)

    @property
    def needs_calibration(self) -> bool:
        return self.quantize in CALIBRATED_MODES or self.algorithm in CALIBRATED_ALGORITHMS

    @property
    def uses_calibration(self) -> bool:
        """Needs it, or is better for it: auto measures the rounding algorithms on it."""
        return self.needs_calibration or self.quantize in WEIGHT_MODES

    def conflict(self) -> tuple[str, str] | None:
        """(field, why) when the settings contradict each other, else None."""
        problem = options_conflict(self.quantize, self.io_type)
        if problem is not None:
            return problem
        try:  # int4's blocks
            check_block_size(self.quantize, self.block_size)
        except UserError as exc:
            return "block_size", str(exc)
        try:  # the data it needs is the recipe's to check
            check_algorithm(self.quantize, self.algorithm, has_calibration=True)
        except UserError as exc:
            return "algorithm", str(exc)
        try:  # the converter's rules for accuracy-driven int8 (its held-out data is the recipe's data.val)
            check_fallback_options(self.quantize, self.io_type, self.max_drop, "data.val" if self.max_drop is not None else None)
        except UserError as exc:
            return "max_drop", str(exc)
        if self.qat and (why := qat_conflict(self.quantize)) is not None:
            return "qat", why
        try:  # the techniques' own rules (e.g. prune and prune_pattern exclude each other)
            techniques_from_settings(self.as_dict())
        except UserError as exc:
            return (exc.settings or ("prune",))[-1], str(exc)
        if self.distill_student is None:
            for name in ("temperature", "alpha"):
                if getattr(self, name) is not None:
                    return name, f"{name} is a distillation setting: it needs distill_student"
        for name in ("epochs", "learning_rate"):
            if getattr(self, name) is not None and not self.needs_training:
                return name, f"{name} applies to training techniques (prune, prune_heads, prune_ffn, cluster, qat, low_rank, distillation), none is set"
        return None

    def auto_name(self) -> str:
        """A stable, file-safe name made of the settings that differ from the defaults."""
        parts = []
        if self.distill_student is not None:
            parts.append(f"distill-{self.distill_student.stem}")
        if self.prune_heads:
            parts.append(f"heads{_num(self.prune_heads)}")
        if self.prune_ffn:
            parts.append(f"ffn{_num(self.prune_ffn)}")
        if self.low_rank:
            parts.append(f"lowrank{_num(self.low_rank)}")
        if self.prune or self.prune_pattern:
            parts.append(f"prune{_num(self.prune)}" if not self.prune_pattern else f"prune{self.prune_pattern.replace(':', 'of')}")
        if self.cluster:
            parts.append(f"cluster{self.cluster}")
        if self.qat:
            parts.append("qat")
        parts.append("float32" if self.quantize == "none" else self.quantize)
        if self.algorithm != "auto":
            parts.append(self.algorithm)
        if self.block_size is not None:
            parts.append(f"b{self.block_size}")
        if self.io_type != "float32":
            parts.append(f"io{self.io_type}")
        if self.max_drop is not None:
            parts.append(f"maxdrop{_num(self.max_drop)}")
        if self.epochs is not None:
            parts.append(f"ep{self.epochs}")
        if self.learning_rate is not None:
            parts.append(f"lr{_num(self.learning_rate)}")
        return "-".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings (paths as strings), the form used in records and cache keys."""
        data = asdict(self)
        data["distill_student"] = str(self.distill_student) if self.distill_student else None
        return data


def _num(value: float) -> str:
    return f"{value:g}"


SETTING_FIELDS = tuple(f.name for f in fields(VariantSettings))


@dataclass(frozen=True)
class Variant:
    name: str
    settings: VariantSettings


def normalized(settings: VariantSettings) -> VariantSettings:
    """Settings with equivalent spellings made equal (prune 0 is 0.0, ints as floats)."""
    return replace(
        settings,
        prune=float(settings.prune),
        low_rank=float(settings.low_rank),
        prune_heads=float(settings.prune_heads),
        prune_ffn=float(settings.prune_ffn),
        temperature=None if settings.temperature is None else float(settings.temperature),
        alpha=None if settings.alpha is None else float(settings.alpha),
        learning_rate=None if settings.learning_rate is None else float(settings.learning_rate),
        max_drop=None if settings.max_drop is None else float(settings.max_drop),
    )


def expand_grid(axes: dict[str, list[Any]]) -> tuple[list[VariantSettings], list[str]]:
    """Every combination of the axes' values (in SETTING_FIELDS order, so names and order are stable).

    Contradictory combinations (e.g. qat with float16) are left out, not errors: a grid is a sweep, and
    crossing qat with every quantize mode is natural. They are returned as notes so the run can say so.
    """
    keys = [k for k in SETTING_FIELDS if k in axes]
    kept: list[VariantSettings] = []
    skipped: list[str] = []
    for combo in itertools.product(*(axes[k] for k in keys)):
        settings = normalized(VariantSettings(**dict(zip(keys, combo))))
        problem = settings.conflict()
        if problem is None:
            kept.append(settings)
        else:
            skipped.append(f"{settings.auto_name()}: {problem[1]}")
    return kept, skipped


def dedupe(variants: Iterable[Variant]) -> list[Variant]:
    """The first variant of each set of equal settings (explicit variants come before grid ones)."""
    seen: set[VariantSettings] = set()
    out = []
    for v in variants:
        key = normalized(v.settings)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out
