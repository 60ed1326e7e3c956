"""A setting declared once: its name in recipes, JSON and records, its CLI flag, type, range and help.

Techniques declare theirs (optimize/<technique>.py) and the pipeline its conversion and training ones
(pipeline/grid.py); recipe checks, the CLI's options, variant fields and the docs' table are read from them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgecompress.tomlfields import FieldChecker


def flag_of(name: str) -> str:
    """Library errors and declarations name settings; a command's flag is the setting with dashes."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Setting:
    name: str  # recipes, JSON and records; the CLI flag is the same word with dashes
    kind: type  # bool, int, float or str
    help: str
    off: Any = None  # the value that leaves it unset (a technique off); a variant's default
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    what: str = "value"  # names the choices in errors, e.g. "pruning pattern"

    @property
    def flag(self) -> str:
        return flag_of(self.name)

    def parse(self, check: FieldChecker, value: Any, where: tuple[Any, ...]) -> Any:
        """VALUE read from a recipe, type- and range-checked (a UserError naming the field otherwise)."""
        if self.kind is bool:
            return check.boolean(value, where)
        if self.choices:
            return check.choice(value, where, self.choices, self.what)
        if self.kind is str:
            return check.text(value, where)
        number = check.number(value, where, low=self.low, high=self.high, low_open=self.low_open,
                              high_open=self.high_open, integer=self.kind is int)
        return self.normalize(number)

    def normalize(self, value: Any) -> Any:
        """One spelling per value (0 and 0.0 are the same float setting), so equal variants compare equal."""
        return float(value) if self.kind is float and value is not None else value

    def range_text(self) -> str:
        """The accepted values, for the docs' table: [0, 1), >= 2, 2:4, 1:2."""
        if self.kind is bool:
            return "true, false"
        if self.choices:
            return ", ".join(self.choices)
        if self.low is not None and self.high is not None:
            return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return "any"

    def off_text(self) -> str:
        """The default as a recipe writes it: false, "none", 0.0; '-' for unset."""
        if self.off is None:
            return "-"
        return str(self.off).lower() if self.kind is bool else (f'"{self.off}"' if self.kind is str else str(self.off))
