"""The variants of a sweep: their settings, stable names, grid expansion and dedup of equivalents.

Pure data, no I/O: recipe.py validates values (with line numbers) and builds these; everything
downstream (cache keys, stages, report) reads only these dataclasses.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable

# The converter's own vocabulary, re-exported for recipe.py (those modules import no TensorFlow).
from edgecompress.converters.litert_quantize import BLOCK_MODES, BLOCK_SIZES  # noqa: F401
from edgecompress.converters.quantize import CALIBRATED_MODES as INTEGER_MODES  # they need calibration data
from edgecompress.converters.quantize import IO_TYPES, QUANTIZE_MODES  # noqa: F401


@dataclass(frozen=True)
class VariantSettings:
    """What one variant does to the model. Defaults mean "technique off"."""

    quantize: str = "none"
    io_type: str = "float32"
    block_size: int | None = None  # int4 only: blockwise FULLY_CONNECTED weights
    prune: float = 0.0
    prune_pattern: str | None = None
    cluster: int = 0
    qat: bool = False
    low_rank: float = 0.0
    distill_student: Path | None = None
    temperature: float | None = None
    alpha: float | None = None
    epochs: int | None = None  # overrides [training] for this variant
    learning_rate: float | None = None

    @property
    def techniques(self) -> list[str]:
        """The model optimizations (before conversion), in the order the name lists them."""
        out = []
        if self.distill_student is not None:
            out.append("distillation")
        if self.low_rank:
            out.append("low_rank")
        if self.prune or self.prune_pattern:
            out.append("prune")
        if self.cluster:
            out.append("cluster")
        if self.qat:
            out.append("qat")
        return out

    @property
    def needs_training(self) -> bool:
        return bool(self.techniques)

    @property
    def needs_calibration(self) -> bool:
        return self.quantize in INTEGER_MODES

    def conflict(self) -> tuple[str, str] | None:
        """(field, why) when the settings contradict each other, else None."""
        if self.io_type != "float32" and self.quantize != "int8":
            return "io_type", f"io_type {self.io_type} needs quantize = \"int8\" (full-integer model), not {self.quantize!r}"
        if self.block_size is not None and self.quantize not in BLOCK_MODES:
            return "block_size", f"block_size applies to quantize = \"int4\" only, not {self.quantize!r}"
        if self.qat and self.quantize != "int8":
            return "qat", f"qat trains for int8: it needs quantize = \"int8\", not {self.quantize!r}"
        if self.prune and self.prune_pattern:
            return "prune_pattern", f"prune_pattern {self.prune_pattern} sets the sparsity itself (M of every N weights): drop prune"
        if self.distill_student is None:
            for name in ("temperature", "alpha"):
                if getattr(self, name) is not None:
                    return name, f"{name} is a distillation setting: it needs distill_student"
        for name in ("epochs", "learning_rate"):
            if getattr(self, name) is not None and not self.needs_training:
                return name, f"{name} applies to training techniques (prune, cluster, qat, low_rank, distillation), none is set"
        return None

    def auto_name(self) -> str:
        """A stable, file-safe name made of the settings that differ from the defaults."""
        parts = []
        if self.distill_student is not None:
            parts.append(f"distill-{self.distill_student.stem}")
        if self.low_rank:
            parts.append(f"lowrank{_num(self.low_rank)}")
        if self.prune or self.prune_pattern:
            parts.append(f"prune{_num(self.prune)}" if not self.prune_pattern else f"prune{self.prune_pattern.replace(':', 'of')}")
        if self.cluster:
            parts.append(f"cluster{self.cluster}")
        if self.qat:
            parts.append("qat")
        parts.append("float32" if self.quantize == "none" else self.quantize)
        if self.block_size is not None:
            parts.append(f"b{self.block_size}")
        if self.io_type != "float32":
            parts.append(f"io{self.io_type}")
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
        temperature=None if settings.temperature is None else float(settings.temperature),
        alpha=None if settings.alpha is None else float(settings.alpha),
        learning_rate=None if settings.learning_rate is None else float(settings.learning_rate),
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
