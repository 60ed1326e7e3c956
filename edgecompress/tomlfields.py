"""Typed values out of parsed TOML (recipes, device profiles): each bad value one UserError naming the field.

A field is a path into the parsed data, e.g. ("variants", 2, "quantize"), written variants[2].quantize.
`FieldChecker.fail` says where the field is, with its line when the checker has the document's text
(TomlLines: tomllib keeps no positions).
"""
from __future__ import annotations

import re
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

    def __init__(self, where: str, lines: TomlLines | None = None, prefix: tuple[Any, ...] = ()) -> None:
        """LINES: the document's text, to say each field's line; PREFIX: the path of the table checked."""
        self.where, self.lines, self.prefix = where, lines, prefix

    def located(self, path: tuple[Any, ...]) -> str:
        """WHERE, with the line of PATH (within the checked table) when it can be found."""
        line = self.lines.find(self.prefix + path) if self.lines is not None else None
        return f"{self.where} line {line}" if line else self.where

    def fail(self, path: tuple[Any, ...], message: str) -> UserError:
        return UserError(f"{self.located(path)}: {field_name(path)}: {message}")

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


class TomlLines:
    """Find the line of a key in the raw TOML text (tomllib keeps no positions).

    Understands [table] and [[array]] headers (the Nth occurrence for the Nth element), `key = value`
    lines with bare, quoted or dotted keys, and keys inside one-line inline tables. Falls back to the
    table's header, then to no line, so a message is never wrong, only less precise.
    """

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers = [(no, m.group(1), m.group(2).replace(" ", "").replace('"', "").replace("'", ""))
                        for no, line in enumerate(self.lines) if (m := _HEADER.match(line))]

    def _section(self, table: tuple[Any, ...]) -> tuple[int, int] | None:
        """(header index or -1, end index) of TABLE, e.g. () top level, ("data",), ("variants", 2)."""
        if not table:
            return -1, self.headers[0][0] if self.headers else len(self.lines)
        index = table[-1] if isinstance(table[-1], int) else None
        name = ".".join(str(p) for p in (table[:-1] if index is not None else table))
        matches = [i for i, (_, brackets, n) in enumerate(self.headers)
                   if n == name and (brackets == "[[") == (index is not None)]
        if not matches or (index is not None and index >= len(matches)):
            return None
        i = matches[index or 0]
        end = self.headers[i + 1][0] if i + 1 < len(self.headers) else len(self.lines)
        return self.headers[i][0], end

    def find(self, path: tuple[Any, ...]) -> int | None:
        """1-based line of PATH, e.g. ("variants", 2, "quantize") or ("constraints", "max_latency_ms")."""
        fallback = None
        for split in range(len(path), -1, -1):  # the deepest table header first
            table, rest = path[:split], path[split:]
            if rest and isinstance(rest[0], int):
                continue
            section = self._section(table)
            if section is None:
                continue
            head, end = section
            if not rest:
                if head >= 0:
                    return head + 1
                continue
            for no in range(head + 1, end):
                if _has_key(self.lines[no], rest):
                    return no + 1
            if fallback is None and head >= 0:
                fallback = head + 1
        return fallback


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")


def _has_key(line: str, keys: tuple[Any, ...]) -> bool:
    """Whether LINE sets the last of KEYS (the others, its tables, written on the same line)."""
    body = line.split("#", 1)[0]
    key = re.escape(str(keys[-1]))
    found = re.search(r'(^|[\s{,.])("' + key + r'"|\'' + key + r"\'|" + key + r")\s*=", body)
    return found is not None and all(str(k) in body for k in keys[:-1])
