"""Typed values out of parsed TOML (recipes, device profiles): each bad value one UserError naming the field.

A field is a path into the parsed data, e.g. ("variants", 2, "quantize"), written variants[2].quantize.
`FieldChecker.fail` says where the field is; a recipe adds its file and line to it.
"""
from __future__ import annotations

from typing import Any

from edgecompress.errors import UserError


def field_name(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "top level"


def type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


class FieldChecker:
    """Checks the values of one TOML document; WHERE names it in every message (e.g. "profile my-board.toml")."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: tuple[Any, ...], message: str) -> UserError:
        return UserError(f"{self.where}: {field_name(path)}: {message}")

    def required(self, data: dict[str, Any], path: tuple[Any, ...], what: str) -> Any:
        """The value of the last key of PATH in DATA (its table), which must be there."""
        if path[-1] not in data:
            raise self.fail(path, f"is missing: add it ({what})")
        return data[path[-1]]

    def table(self, value: Any, path: tuple[Any, ...], allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a table, not {type_name(value)}")
        unknown = [key for key in value if allowed is not None and key not in allowed]
        if unknown:
            raise self.fail(path + (unknown[0],), f"unknown field: use one of {', '.join(allowed or ())}")
        return value

    def number(self, value: Any, path: tuple[Any, ...], *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False, integer: bool = False) -> Any:
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise self.fail(path, f"must be {'an integer' if integer else 'a number'}, not {type_name(value)} {value!r}")
        too_low = low is not None and (value < low or (low_open and value == low))
        too_high = high is not None and (value > high or (high_open and value == high))
        if too_low or too_high:
            bounds = [f"{'>' if low_open else '>='} {low:g}"] if low is not None else []
            bounds += [f"{'<' if high_open else '<='} {high:g}"] if high is not None else []
            raise self.fail(path, f"{value!r} is out of range: it must be {' and '.join(bounds)}")
        return value

    def choice(self, value: Any, path: tuple[Any, ...], options: tuple[str, ...], what: str = "value") -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, one of {', '.join(options)}; not {type_name(value)}")
        if value not in options:
            raise self.fail(path, f"unknown {what} {value!r}: use one of {', '.join(options)}")
        return value

    def boolean(self, value: Any, path: tuple[Any, ...]) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"must be true or false, not {type_name(value)} {value!r}")
        return value

    def text(self, value: Any, path: tuple[Any, ...]) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"must be a non-empty string, not {type_name(value)} {value!r}")
        return value
