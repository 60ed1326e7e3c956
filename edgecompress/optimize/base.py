"""The common shape of a compression technique, and the registry that orders them.

Each technique is one small module holding a dataclass of validated parameters that subclasses Technique
(subclassing registers it; tests/test_techniques_registered.py checks every technique module is imported).
The pipeline applies them in ascending `order` (structured pruning 5 -> low-rank 10 -> prune 20 -> cluster 30 -> QAT 40), fine-tunes after each,
and strips the training wrappers before the next; distillation is not a stage but the loss every
fine-tuning stage uses when a teacher is given. Adding a technique: one module whose class declares its
`settings` (edgecompress.setting.Setting: recipe field, CLI flag, type, range, help), says in `from_settings`
which values turn it on and in `label` how a variant's name shows it; the recipes' fields, `optimize`'s flags,
the variants' fields and names are read from those declarations. A technique's `name` is its one spelling in
results and reports.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from edgecompress.setting import Setting
from edgecompress.optimize.data import Labeled
from edgecompress.optimize.layers import SkippedLayer


@dataclass
class Context:
    """What a technique may need to know about the run: the others chosen and the training length."""

    techniques: frozenset[str]
    steps_per_epoch: int
    epochs: int  # the most this stage may train; early stopping may end it sooner
    data: Labeled | None = None  # the training data, for techniques that measure what to remove


@dataclass
class Applied:
    """A model prepared for fine-tuning by one technique."""

    model: Any
    skipped: list[SkippedLayer] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the rank chosen per layer
    compressed: set[str] = field(default_factory=set)  # names of the layers whose weights it constrains


class Technique(ABC):
    name: ClassVar[str]
    order: ClassVar[int]
    settings: ClassVar[tuple[Setting, ...]]  # the recipe fields and CLI flags that turn it on and tune it
    # The fine-tuning after this technique runs at the training learning rate times this (QAT wants less).
    learning_rate_scale: ClassVar[float] = 1.0
    # The quantize mode this technique trains for (QAT: int8), or None when any conversion may follow it.
    trains_for: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.name] = cls

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Technique | None:
        """The technique SETTINGS (recipe/CLI setting names) ask for, or None when they leave it off."""

    @classmethod
    @abstractmethod
    def label(cls, values: Mapping[str, Any]) -> str | None:
        """This technique's part of a variant's name for VALUES (all settings, the technique on), e.g. prune0.8."""

    @abstractmethod
    def validate(self) -> None:
        """Raise UserError for parameters that cannot work, naming the fix."""

    @abstractmethod
    def describe(self) -> str:
        """One line for the plan the CLI prints, e.g. 'prune to 80% sparsity (polynomial decay)'."""

    @abstractmethod
    def apply(self, model: Any, ctx: Context) -> Applied:
        """Wrap or rewrite MODEL (an independent copy the technique may modify) for fine-tuning."""

    @classmethod
    def conversion_conflict(cls, quantize: str) -> str | None:
        """Why this technique cannot go with the .tflite's QUANTIZE mode, else None."""
        if cls.trains_for is None or quantize == cls.trains_for:
            return None
        return f"{cls.name} trains for {cls.trains_for}: it needs quantize {cls.trains_for}, not {quantize}"

    def callbacks(self) -> list[Any]:
        return []

    def first_compared_epoch(self, ctx: Context) -> int:
        """The first epoch (1-based) at whose end the technique is at full strength: early stopping keeps and
        counts epochs from there on, so a kept model never has, say, less than the final sparsity."""
        return 1

    def strip(self, model: Any) -> Any:
        """The fine-tuned model without the training-only wrappers that the saved file must not keep."""
        return model


REGISTRY: dict[str, type[Technique]] = {}


def ordered(techniques: list[Technique]) -> list[Technique]:
    return sorted(techniques, key=lambda t: t.order)


def techniques_from_settings(settings: Mapping[str, Any]) -> list[Technique]:
    """The registered techniques SETTINGS turn on, validated, in the order they apply.

    SETTINGS map the techniques' setting names (recipes and the CLI share them) to values: the one way both
    build techniques.
    """
    chosen = [t for cls in REGISTRY.values() if (t := cls.from_settings(settings)) is not None]
    for technique in chosen:
        technique.validate()
    return ordered(chosen)


def technique_classes() -> list[type[Technique]]:
    """The registered techniques in the order they apply."""
    return sorted(REGISTRY.values(), key=lambda cls: cls.order)


def technique_settings() -> tuple[Setting, ...]:
    """Every registered technique's settings, in the order the techniques apply."""
    return tuple(s for cls in technique_classes() for s in cls.settings)
