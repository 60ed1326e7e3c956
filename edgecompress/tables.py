"""Readable tables for the terminal and JSON for scripts: the one place for output formatting."""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Sequence


def fmt(value: Any, digits: int = 3) -> str:
    """One cell: None as '-', floats to about `digits` significant places, ints with separators."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 10_000:
            return f"{value:,.0f}"
        return f"{value:.{digits + 1}g}" if abs(value) < 1 else f"{value:,.{digits - 1}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


class Figure(str):
    """A number already formatted with its unit ("7.1 us", "1.67"): text, aligned in tables like a number."""


def duration_unit(ms: float) -> tuple[float, str]:
    """(factor, unit) that show a duration of MS milliseconds as a number from 1 to 1000: us, ms or s."""
    return (1000.0, "us") if ms < 1 else (1.0, "ms") if ms < 1000 else (0.001, "s")


def fmt_duration(ms: float | None) -> str:
    """A duration given in milliseconds, in the unit that fits it: 7.1 us, 12.3 ms, 1.4 s."""
    if ms is None:
        return Figure("-")
    factor, unit = duration_unit(ms)
    value = ms * factor
    return Figure(f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}")


def fmt_points(drop: float | None) -> str:
    """An accuracy drop in percentage points below the source model, two decimals; negative means better."""
    if drop is None:
        return Figure("-")
    return Figure(f"{drop:.2f}" if round(drop, 2) != 0 else "0.00")


def fmt_metric(metric: str | None, value: float | None) -> str:
    """A score in one form per column: accuracy as a percentage with two decimals, F1 to three, MAE to four
    figures, perplexity to two decimals."""
    if value is None:
        return Figure("-")
    if metric == "perplexity":
        return Figure(f"{value:.2f}")
    return Figure(f"{value:.2%}" if metric == "accuracy" else f"{value:.3f}" if metric == "f1" else f"{value:.4g}")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> str:
    """A plain aligned table; numbers right-aligned, text left-aligned."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    numeric = [
        all(isinstance(r[i], (int, float, Figure)) or r[i] is None for r in rows) and bool(rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = []
    if title:
        out.append(title)
    out.append(line(list(headers)))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """ROWS as a Markdown table (for reports and the README)."""
    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def key_values(pairs: Sequence[tuple[str, Any]], title: str | None = None) -> str:
    width = max((len(k) for k, _ in pairs), default=0)
    out = [title] if title else []
    out.extend(f"{k.ljust(width)}  {fmt(v)}" for k, v in pairs)
    return "\n".join(out)


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def json_ready(obj: Any) -> Any:
    """OBJ with every NaN/Inf float as None: JSON has no such numbers, and a document must never fail on them
    (the counts of non-finite outputs say what they were)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if callable(getattr(obj, "to_dict", None)) and not isinstance(obj, type):  # a result's own JSON contract
        return json_ready(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_ready(dataclasses.asdict(obj))
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy scalars and arrays
        return json_ready(obj.tolist())
    return obj


def to_json(obj: Any) -> str:
    """OBJ (results with a to_dict(), dataclasses, dicts, lists, numpy values) as indented JSON; non-finite numbers
    become null."""
    return json.dumps(json_ready(obj), default=_default, indent=2, allow_nan=False)
