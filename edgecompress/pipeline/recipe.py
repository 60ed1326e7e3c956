"""Recipes: a TOML file naming the model, the data, the variants to try, the devices and what to pick.

The file is parsed as data with tomllib (never executed) and every field is checked; a bad field is a
UserError naming the file, the line and the field, and saying how to fix it. Relative paths are read
from the recipe's folder. Format (all sections but `model`, `data` and the variants are optional):

    model = "model.keras"                  # the trained baseline (also the teacher for distillation)
    devices = ["raspberry-pi-4"]           # device profiles to estimate latency on
    objective = "smallest"                 # smallest (gzip size) | fastest | most_accurate

    [data]       train, val, test, calibration (.npz with x and y), calibration_samples
    [training]   epochs (the most per stage), patience, batch_size, learning_rate, seed
                 (for prune/cluster/qat/low_rank/distill; each stage stops once val accuracy stops improving)
    [benchmark]  runs, warmup, min_secs, threads               (host measurement)
    [constraints] max_accuracy_drop (points), max_size_kb, max_gzip_kb,
                 max_latency_ms (a number for every device, or a table device -> ms)
    [grid]       any variant field -> list of values (the cross product is tried)
    [[variants]] name, quantize, io_type, prune, prune_pattern, cluster, qat, low_rank,
                 distill_student, temperature, alpha, epochs, learning_rate
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgecompress.errors import UserError
from edgecompress.optimize.prune import SUPPORTED_PATTERNS
from edgecompress.pipeline.grid import IO_TYPES, QUANTIZE_MODES, SETTING_FIELDS, Variant, VariantSettings, dedupe, expand_grid, normalized

import tomllib

OBJECTIVES = ("smallest", "fastest", "most_accurate")
PRUNE_PATTERNS = tuple(f"{m}:{n}" for m, n in SUPPORTED_PATTERNS)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class DataFiles:
    train: Path | None
    val: Path | None
    test: Path | None
    calibration: Path | None  # defaults to train
    calibration_samples: int = 200

    @property
    def eval(self) -> Path:
        """The held-out data every variant is scored on: test, else val."""
        return self.test or self.val  # type: ignore[return-value]  # load_recipe requires one of them


@dataclass(frozen=True)
class Training:
    epochs: int | None = None  # the most per stage; None: edgecompress.optimize's defaults
    patience: int | None = None  # None: edgecompress.optimize's default
    batch_size: int = 32
    learning_rate: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class BenchmarkSettings:
    runs: int = 50
    warmup: int = 1
    min_secs: float = 1.0
    threads: int = 1


@dataclass(frozen=True)
class Constraints:
    max_accuracy_drop: float | None = None  # points (percent)
    max_size_kb: float | None = None
    max_gzip_kb: float | None = None
    max_latency_ms: dict[str, float] = field(default_factory=dict)  # device -> ms

    def is_empty(self) -> bool:
        return (
            self.max_accuracy_drop is None and self.max_size_kb is None
            and self.max_gzip_kb is None and not self.max_latency_ms
        )


@dataclass(frozen=True)
class Recipe:
    path: Path
    model: Path
    data: DataFiles
    training: Training
    benchmark: BenchmarkSettings
    devices: tuple[str, ...]
    constraints: Constraints
    objective: str
    variants: tuple[Variant, ...]
    notes: tuple[str, ...] = ()  # grid combinations left out, duplicates merged


# ---------------------------------------------------------------------------------------------- lines


class _Lines:
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


# -------------------------------------------------------------------------------------------- checks


class _Checker:
    """Reads typed values out of the parsed TOML, raising UserError with file, line and field name."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = _Lines(text)

    def fail(self, where: tuple[Any, ...], message: str) -> UserError:
        line = self.lines.find(where)
        at = f"{self.path.name} line {line}" if line else f"{self.path.name}"
        return UserError(f"recipe {at}: {_field_name(where)}: {message}")

    def table(self, data: Any, where: tuple[Any, ...], allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(where, f"must be a table, not {_type(data)}")
        for key in data:
            if key not in allowed:
                raise self.fail(
                    where + (key,), f"unknown field: use one of {', '.join(allowed)}"
                )
        return data

    def number(self, value: Any, where: tuple[Any, ...], *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False, integer: bool = False) -> Any:
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise self.fail(where, f"must be {'an integer' if integer else 'a number'}, not {_type(value)} {value!r}")
        too_low = low is not None and (value < low or (low_open and value == low))
        too_high = high is not None and (value > high or (high_open and value == high))
        if too_low or too_high:
            bounds = [f"{'>' if low_open else '>='} {low:g}"] if low is not None else []
            bounds += [f"{'<' if high_open else '<='} {high:g}"] if high is not None else []
            raise self.fail(where, f"{value!r} is out of range: it must be {' and '.join(bounds)}")
        return value

    def choice(self, value: Any, where: tuple[Any, ...], options: tuple[str, ...], what: str = "value") -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"must be a string, one of {', '.join(options)}; not {_type(value)}")
        if value not in options:
            raise self.fail(where, f"unknown {what} {value!r}: use one of {', '.join(options)}")
        return value

    def boolean(self, value: Any, where: tuple[Any, ...]) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"must be true or false, not {_type(value)} {value!r}")
        return value

    def file(self, value: Any, where: tuple[Any, ...], what: str) -> Path:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"must be the path of {what} (a string), not {_type(value)}")
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self.path.parent / path
        if not path.exists():
            raise self.fail(where, f"{what} {path} does not exist: check the path (relative paths are read "
                                   f"from the recipe's folder)")
        return path.resolve()


def _field_name(where: tuple[Any, ...]) -> str:
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "recipe"


def _type(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


# ------------------------------------------------------------------------------------------- parsing

TOP_KEYS = ("model", "devices", "objective", "data", "training", "benchmark", "constraints", "grid", "variants")
DATA_KEYS = ("train", "val", "test", "calibration", "calibration_samples")
TRAINING_KEYS = ("epochs", "patience", "batch_size", "learning_rate", "seed")
BENCHMARK_KEYS = ("runs", "warmup", "min_secs", "threads")
CONSTRAINT_KEYS = ("max_accuracy_drop", "max_size_kb", "max_gzip_kb", "max_latency_ms")
VARIANT_KEYS = ("name",) + SETTING_FIELDS


def load_recipe(path: str | Path, known_devices: Callable[[], list[str]] | None = None) -> Recipe:
    """Parse and validate the recipe at PATH. KNOWN_DEVICES lists the valid device names (the shipped profiles
    by default)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe {path} does not exist: check the path")
    text = path.read_bytes().decode("utf-8", "replace")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"recipe {path.name} is not valid TOML: {exc} (see https://toml.io for the syntax)") from None
    check = _Checker(path.resolve(), text)
    check.table(raw, (), TOP_KEYS)
    if "model" not in raw:
        raise check.fail(("model",), 'is missing: add model = "path/to/model.keras" at the top of the recipe')
    model = check.file(raw["model"], ("model",), "model")
    data = _data(check, raw.get("data", {}))
    devices = _devices(check, raw.get("devices", []), known_devices or _profile_names)
    variants, notes = _variants(check, raw, data)
    return Recipe(
        path=path.resolve(),
        model=model,
        data=data,
        training=_training(check, raw.get("training", {})),
        benchmark=_benchmark(check, raw.get("benchmark", {})),
        devices=devices,
        constraints=_constraints(check, raw.get("constraints", {}), devices),
        objective=check.choice(raw.get("objective", "smallest"), ("objective",), OBJECTIVES, "objective"),
        variants=tuple(variants),
        notes=tuple(notes),
    )


def _profile_names() -> list[str]:
    from edgecompress.devices import list_profiles

    return list_profiles()


def _data(check: _Checker, raw: Any) -> DataFiles:
    check.table(raw, ("data",), DATA_KEYS)
    files = {k: check.file(raw[k], ("data", k), f"{k} data file") if k in raw else None
             for k in ("train", "val", "test", "calibration")}
    if files["test"] is None and files["val"] is None:
        raise check.fail(("data",), "needs held-out data to score the variants: set test = \"test.npz\" (or val)")
    files["calibration"] = files["calibration"] or files["train"]  # representative inputs: the training set will do
    samples = check.number(raw.get("calibration_samples", 200), ("data", "calibration_samples"), low=1, integer=True)
    return DataFiles(calibration_samples=samples, **files)


def _training(check: _Checker, raw: Any) -> Training:
    check.table(raw, ("training",), TRAINING_KEYS)
    w = ("training",)
    lr = raw.get("learning_rate")

    def optional_count(key: str) -> int | None:
        return None if key not in raw else check.number(raw[key], w + (key,), low=1, integer=True)

    return Training(
        epochs=optional_count("epochs"),
        patience=optional_count("patience"),
        batch_size=check.number(raw.get("batch_size", 32), w + ("batch_size",), low=1, integer=True),
        learning_rate=None if lr is None else float(check.number(lr, w + ("learning_rate",), low=0, low_open=True)),
        seed=check.number(raw.get("seed", 0), w + ("seed",), low=0, integer=True),
    )


def _benchmark(check: _Checker, raw: Any) -> BenchmarkSettings:
    check.table(raw, ("benchmark",), BENCHMARK_KEYS)
    w = ("benchmark",)
    return BenchmarkSettings(
        runs=check.number(raw.get("runs", 50), w + ("runs",), low=1, integer=True),
        warmup=check.number(raw.get("warmup", 1), w + ("warmup",), low=0, integer=True),
        min_secs=float(check.number(raw.get("min_secs", 1.0), w + ("min_secs",), low=0)),
        threads=check.number(raw.get("threads", 1), w + ("threads",), low=1, integer=True),
    )


def _devices(check: _Checker, raw: Any, known: Callable[[], list[str]]) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(d, str) for d in raw):
        raise check.fail(("devices",), f'must be a list of device names such as ["raspberry-pi-4"], not {_type(raw)}')
    names = known() if raw else None
    for i, name in enumerate(raw):
        if names is not None and name not in names:
            raise check.fail(("devices",), f"unknown device {name!r}: use one of {', '.join(names)} "
                                           "(`edgecompress devices list` shows them)")
        if name in raw[:i]:
            raise check.fail(("devices",), f"device {name!r} is listed twice")
    return tuple(raw)


def _constraints(check: _Checker, raw: Any, devices: tuple[str, ...]) -> Constraints:
    check.table(raw, ("constraints",), CONSTRAINT_KEYS)
    w = ("constraints",)

    def opt(key: str) -> float | None:
        return None if key not in raw else float(check.number(raw[key], w + (key,), low=0, low_open=key != "max_accuracy_drop"))

    latency: dict[str, float] = {}
    lat = raw.get("max_latency_ms")
    if isinstance(lat, dict):
        for device, ms in lat.items():
            if device not in devices:
                raise check.fail(w + ("max_latency_ms", device),
                                 f"device {device!r} is not in the recipe's devices {list(devices)}: add it there")
            latency[device] = float(check.number(ms, w + ("max_latency_ms", device), low=0, low_open=True))
    elif lat is not None:
        ms = float(check.number(lat, w + ("max_latency_ms",), low=0, low_open=True))
        if not devices:
            raise check.fail(w + ("max_latency_ms",), "limits the estimated latency on the recipe's devices, "
                                                      "but devices is empty: add devices = [...]")
        latency = {d: ms for d in devices}
    return Constraints(
        max_accuracy_drop=opt("max_accuracy_drop"),
        max_size_kb=opt("max_size_kb"),
        max_gzip_kb=opt("max_gzip_kb"),
        max_latency_ms=latency,
    )


def _setting(check: _Checker, key: str, value: Any, where: tuple[Any, ...]) -> Any:
    """One variant field, type- and range-checked."""
    if key == "quantize":
        return check.choice(value, where, QUANTIZE_MODES, "quantization mode")
    if key == "io_type":
        return check.choice(value, where, IO_TYPES, "io_type")
    if key == "prune":
        return float(check.number(value, where, low=0, high=1, high_open=True))
    if key == "prune_pattern":
        return check.choice(value, where, PRUNE_PATTERNS, "pruning pattern")
    if key == "cluster":
        n = check.number(value, where, low=0, integer=True)
        if n == 1:
            raise check.fail(where, "1 cluster would make every weight equal: use 2 or more (0 turns clustering off)")
        return n
    if key == "qat":
        return check.boolean(value, where)
    if key == "low_rank":
        return float(check.number(value, where, low=0, high=1))
    if key == "distill_student":
        return check.file(value, where, "student model")
    if key == "temperature":
        return float(check.number(value, where, low=0, low_open=True))
    if key == "alpha":
        return float(check.number(value, where, low=0, high=1))
    if key == "epochs":
        return check.number(value, where, low=1, integer=True)
    if key == "learning_rate":
        return float(check.number(value, where, low=0, low_open=True))
    raise check.fail(where, f"unknown field: use one of {', '.join(VARIANT_KEYS)}")


def _variants(check: _Checker, raw: dict[str, Any], data: DataFiles) -> tuple[list[Variant], list[str]]:
    explicit: list[Variant] = []
    listed = raw.get("variants", [])
    if not isinstance(listed, list):
        raise check.fail(("variants",), "must be an array of tables: write each variant as [[variants]]")
    for i, item in enumerate(listed):
        where = ("variants", i)
        check.table(item, where, VARIANT_KEYS)
        settings = normalized(VariantSettings(**{
            k: _setting(check, k, v, where + (k,)) for k, v in item.items() if k != "name"
        }))
        problem = settings.conflict()
        if problem is not None:
            raise check.fail(where + (problem[0],), problem[1])
        name = item.get("name", settings.auto_name())
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise check.fail(where + ("name",), f"{name!r} is not a usable name: use letters, digits, '.', '_' or '-'")
        if any(v.name == name for v in explicit):
            raise check.fail(where + ("name",), f"two variants are named {name!r}: give each a different name")
        _check_data_needs(check, settings, data, where)
        explicit.append(Variant(name, settings))

    notes: list[str] = []
    grid: list[Variant] = []
    if "grid" in raw:
        axes_raw = check.table(raw["grid"], ("grid",), SETTING_FIELDS)
        axes = {}
        for key, values in axes_raw.items():
            values = values if isinstance(values, list) else [values]
            if not values:
                raise check.fail(("grid", key), "is an empty list: give at least one value")
            axes[key] = [_setting(check, key, v, ("grid", key)) for v in values]
        combos, skipped = expand_grid(axes)
        if not combos:
            raise check.fail(("grid",), f"every combination contradicts itself ({skipped[0]}): fix the grid's values")
        notes.extend(f"grid combination left out: {s}" for s in skipped)
        for settings in combos:
            _check_data_needs(check, settings, data, ("grid",))
            grid.append(Variant(settings.auto_name(), settings))

    if not explicit and not grid:
        raise check.fail(("variants",), "the recipe has no variants: add [[variants]] tables or a [grid]")
    variants = dedupe(explicit + grid)
    if len(variants) < len(explicit) + len(grid):
        notes.append(f"{len(explicit) + len(grid) - len(variants)} duplicate variant(s) merged")
    taken: set[str] = set()
    for v in variants:  # a grid name can collide with an explicit variant's chosen name
        if v.name in taken:
            raise check.fail(("variants",), f"variant name {v.name!r} is used by two different variants: rename one")
        taken.add(v.name)
    return variants, notes


def _check_data_needs(check: _Checker, settings: VariantSettings, data: DataFiles, where: tuple[Any, ...]) -> None:
    if settings.needs_training and data.train is None:
        technique = settings.techniques[0]
        raise check.fail(where, f"{technique} fine-tunes the model: set data.train to a training .npz file")
    if settings.needs_calibration and data.calibration is None:
        raise check.fail(where + ("quantize",), f"{settings.quantize} needs calibration data: set data.calibration")
