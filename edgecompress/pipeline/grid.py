"""The variants of a sweep: their settings, stable names, grid expansion and dedup of equivalents.

Pure data, no I/O: recipe.py validates values (with line numbers) and builds these; everything
downstream (cache keys, stages, report) reads only these dataclasses.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, make_dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from edgecompress.errors import UserError
from edgecompress.setting import Setting
from edgecompress.converters.precision_steps import check_fallback_options
from edgecompress.converters.litert_quantize import ALGORITHMS, CALIBRATED_ALGORITHMS, check_algorithm, check_block_size
from edgecompress.converters.modes import CALIBRATED_MODES, QUANTIZE_MODES, WEIGHT_MODES
from edgecompress.converters.quantize import IO_TYPES, options_conflict
from edgecompress.optimize import technique_classes, technique_settings, techniques_from_settings
from edgecompress.optimize.distill import DISTILLATION


# The conversion settings, then (after the techniques') distillation's and the per-variant training overrides.
# block_size and distill_student are parsed by the recipe (0 turns blocks off; a student is a model file).
CONVERSION_SETTINGS = (
    Setting("quantize", str, "How the .tflite is quantized.", off="none", choices=QUANTIZE_MODES,
            what="quantization mode"),
    Setting("io_type", str, "The .tflite's input and output type (int8 modes only).", off="float32", choices=IO_TYPES,
            what="io_type"),
    Setting("block_size", int, "int4: blockwise FULLY_CONNECTED weights, 0 for one scale per channel.", low=0),
    Setting("algorithm", str, "The weight modes' rounding.", off="auto", choices=ALGORITHMS, what="rounding algorithm"),
)
TRAINING_SETTINGS = (
    Setting("distill_student", str, "A student model file: trained on the baseline's soft targets."),
    Setting("temperature", float, "Distillation temperature T.", low=0, low_open=True),
    Setting("alpha", float, "Distillation: weight of the hard-label loss.", low=0, high=1),
    Setting("epochs", int, "The most epochs each training stage runs (overrides [training]).", low=1),
    Setting("learning_rate", float, "Adam's initial step (overrides [training]).", low=0, low_open=True),
    Setting("max_drop", float, "int8: keep layers float until the loss on data.val is at most this.", low=0),
)
TRAINING_NAMES = ("distillation", "epochs", "learning_rate")


def variant_settings() -> tuple[Setting, ...]:
    """Every field of a variant, in the order grids cross them and names list them."""
    return CONVERSION_SETTINGS + technique_settings() + TRAINING_SETTINGS


class _VariantMethods:
    """What a variant's settings say; its fields are the declared settings (variant_settings())."""

    def technique_values(self) -> dict[str, Any]:
        return {s.name: getattr(self, s.name) for s in technique_settings()}

    @property
    def techniques(self) -> list[str]:
        """The model optimizations (before conversion), in the order they apply (and the name lists them)."""
        chosen = [t.name for t in techniques_from_settings(self.technique_values())]
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
        try:  # the techniques' own rules (e.g. prune and prune_pattern exclude each other)
            chosen = techniques_from_settings(self.technique_values())
        except UserError as exc:  # on the setting it names, else on the first technique setting the variant sets
            given = [s.name for s in technique_settings() if getattr(self, s.name) != s.off]
            return (exc.settings or given[:1] or (technique_settings()[0].name,))[-1], str(exc)
        for technique in chosen:
            if (why := technique.conversion_conflict(self.quantize)) is not None:
                return technique.settings[0].name, why
        if self.distill_student is None:
            for name in ("temperature", "alpha"):
                if getattr(self, name) is not None:
                    return name, f"{name} is a distillation setting: it needs distill_student"
        for name in ("epochs", "learning_rate"):
            if getattr(self, name) is not None and not self.needs_training:
                every = ", ".join([s.name for s in technique_settings()] + [DISTILLATION])
                return name, f"{name} applies to training techniques ({every}), none is set"
        return None

    def auto_name(self) -> str:
        """A stable, file-safe name made of the settings that differ from the defaults."""
        parts = []
        if self.distill_student is not None:
            parts.append(f"distill-{Path(self.distill_student).stem}")
        values = self.technique_values()
        parts += [cls.label(values) for cls in technique_classes() if cls.from_settings(values) is not None]
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
        data = asdict(self)  # type: ignore[call-overload]
        data["distill_student"] = str(self.distill_student) if self.distill_student else None
        return data


# What one variant does to the model: a frozen dataclass with a field per declared setting, defaults "off".
VariantSettings = make_dataclass(
    "VariantSettings",
    [(s.name, Any, field(default=s.off)) for s in variant_settings()],
    bases=(_VariantMethods,),
    frozen=True,
    namespace={"__module__": __name__},  # for pickling (Ray ships variants to workers)
)


def _num(value: float) -> str:
    return f"{value:g}"


SETTINGS = {s.name: s for s in variant_settings()}
SETTING_FIELDS = tuple(SETTINGS)


@dataclass(frozen=True)
class Variant:
    name: str
    settings: VariantSettings


def normalized(settings: VariantSettings) -> VariantSettings:
    """Settings with equivalent spellings made equal (prune 0 is 0.0, ints as floats)."""
    return replace(settings, **{name: s.normalize(getattr(settings, name)) for name, s in SETTINGS.items()})


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
