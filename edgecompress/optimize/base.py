"""The common shape of a compression technique, and the registry that orders them.

Each technique is one small module holding a dataclass of validated parameters that subclasses Technique.
The pipeline applies them in ascending `order` (structured pruning 5 -> low-rank 10 -> prune 20 -> cluster 30 -> QAT 40), fine-tunes after each,
and strips the training wrappers before the next; distillation is not a stage but the loss every
fine-tuning stage uses when a teacher is given. Adding a technique: one module whose class is `register`ed
and says, in `from_settings`, which settings turn it on. A technique's `name` is its one spelling in data
(recipes, JSON, reports); the CLI flag is the same word with dashes.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

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
    name: ClassVar[str]  # also the setting that turns it on
    order: ClassVar[int]
    # The fine-tuning after this technique runs at the training learning rate times this (QAT wants less).
    learning_rate_scale: ClassVar[float] = 1.0

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Technique | None:
        """The technique SETTINGS (recipe/CLI setting names) ask for, or None when they leave it off."""

    @abstractmethod
    def validate(self) -> None:
        """Raise UserError for parameters that cannot work, naming the fix."""

    @abstractmethod
    def describe(self) -> str:
        """One line for the plan the CLI prints, e.g. 'prune to 80% sparsity (polynomial decay)'."""

    @abstractmethod
    def apply(self, model: Any, ctx: Context) -> Applied:
        """Wrap or rewrite MODEL (an independent copy the technique may modify) for fine-tuning."""

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


def register(cls: type[Technique]) -> type[Technique]:
    REGISTRY[cls.name] = cls
    return cls


def ordered(techniques: list[Technique]) -> list[Technique]:
    return sorted(techniques, key=lambda t: t.order)


def techniques_from_settings(settings: Mapping[str, Any]) -> list[Technique]:
    """The registered techniques SETTINGS turn on, validated, in the order they apply.

    SETTINGS use the setting names recipes and the CLI share (prune, prune_pattern, cluster, qat, low_rank):
    the one way both build techniques.
    """
    chosen = [t for cls in REGISTRY.values() if (t := cls.from_settings(settings)) is not None]
    for technique in chosen:
        technique.validate()
    return ordered(chosen)
