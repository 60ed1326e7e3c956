"""The common shape of a compression technique, and the registry that orders them.

Each technique is one small module holding a dataclass of validated parameters that subclasses Technique.
The pipeline applies them in ascending `order` (low-rank 10 -> prune 20 -> cluster 30 -> QAT 40), fine-tunes after each,
and strips the training wrappers before the next; distillation is not a stage but the loss every
fine-tuning stage uses when a teacher is given. Adding a technique: one module plus one `register` line.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgecompress.errors import UserError
from edgecompress.optimize.layers import SkippedLayer


@dataclass
class Context:
    """What a technique may need to know about the run: the others chosen and the training length."""

    techniques: frozenset[str]
    steps_per_epoch: int
    epochs: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


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
    # The fine-tuning after this technique runs at the training learning rate times this (QAT wants less).
    learning_rate_scale: ClassVar[float] = 1.0

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

    def strip(self, model: Any) -> Any:
        """The fine-tuned model without the training-only wrappers that the saved file must not keep."""
        return model


REGISTRY: dict[str, type[Technique]] = {}


def register(cls: type[Technique]) -> type[Technique]:
    REGISTRY[cls.name] = cls
    return cls


def ordered(techniques: list[Technique]) -> list[Technique]:
    return sorted(techniques, key=lambda t: t.order)


def from_spec(name: str, params: dict[str, Any]) -> Technique:
    """A technique from data (a recipe entry): its registered name and keyword parameters."""
    cls = REGISTRY.get(name)
    if cls is None:
        raise UserError(f"unknown technique {name!r}: choose one of {', '.join(sorted(REGISTRY))}")
    try:
        technique = cls(**params)
    except TypeError as exc:
        raise UserError(f"bad parameters for {name}: {exc}") from exc
    technique.validate()
    return technique
