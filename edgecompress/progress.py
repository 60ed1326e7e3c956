"""Progress for long work (training, calibration, benchmarks, sweeps), on stderr so --json stays clean."""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterable, Iterator, TypeVar

import click

T = TypeVar("T")
_stage_listeners: list[Callable[[str], None]] = []


@contextlib.contextmanager
def bar(items: Iterable[T], label: str, length: int | None = None) -> Iterator[Iterable[T]]:
    """A click progress bar on stderr; on a non-terminal it prints the label once, then a line at the end."""
    with click.progressbar(
        items, length=length, label=label, file=sys.stderr, show_pos=True, show_eta=True
    ) as it:
        yield it


def note(message: str) -> None:
    """A one-line status message on stderr."""
    click.echo(message, err=True)


def stage(name: str) -> None:
    """Say that a named stage of long work starts (a training stage): for whoever isolates the work."""
    for listener in _stage_listeners:
        listener(name)


def on_stage(listener: Callable[[str], None]) -> None:
    _stage_listeners.append(listener)
