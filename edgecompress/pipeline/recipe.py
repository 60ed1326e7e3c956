"""Recipes: a TOML file naming the model, the data, the variants to try, the devices and what to pick.

The file is parsed as data with tomllib (never executed) and every field is checked; a bad field is a
UserError naming the file, the line and the field, and saying how to fix it. Relative paths are read
from the recipe's folder. Format (all sections but `model`, `data` and the variants are optional):

    model = "model.keras"                  # the trained baseline (also the teacher for distillation)
    devices = ["raspberry-pi-4"]           # device profiles to estimate latency on, or a table per device:
    [devices.raspberry-pi-4]               #   with `on`, measured there over SSH instead of estimated:
    on = "ssh://pi@raspberrypi.local"      #   on = "ssh://USER@HOST[:PORT]", remote_python, ssh_config
    objective = "smallest"                 # smallest (gzip size) | fastest | most_accurate

    [data]       train, val, test, calibration (.npz with x and y), calibration_samples, eval_output
    [training]   epochs (the most per stage), patience, batch_size, learning_rate, seed
                 (for the training techniques; each stage stops once val accuracy stops improving)
    [benchmark]  runs, warmup, min_secs, threads               (host measurement)
    [constraints] max_accuracy_drop (points), max_perplexity_rise (%, language models), max_size_kb, max_gzip_kb,
                 max_latency_ms (a number for every device, or a table device -> ms)
    [grid]       any variant field -> list of values (the cross product is tried)
    [[variants]] name and any declared setting (pipeline.grid.variant_settings(); docs/settings.md lists them)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgecompress.errors import UserError
from edgecompress.models import keras_flavour
from edgecompress.specs import LABEL_KEY
from edgecompress.tomlfields import FieldChecker, TomlLines, field_name, type_name
from edgecompress.converters.litert_quantize import BLOCK_SIZES
from edgecompress.converters.modes import CALIBRATED_MODES
from edgecompress.pipeline.grid import SETTING_FIELDS, SETTINGS, Variant, VariantSettings, dedupe, expand_grid, normalized

import tomllib

OBJECTIVES = ("smallest", "fastest", "most_accurate")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class DataFiles:
    train: Path | None
    val: Path | None
    test: Path | None
    calibration: Path | None  # defaults to train
    calibration_samples: int = 200
    eval_output: str | None = None  # the output the labels are for (a name or a position; evaluate.pick_output)

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
class Execution:
    """Where the builds run: local worker processes, or Ray tasks (a private local instance when address is
    None, else the cluster at address: "auto" or "ray://HOST:PORT")."""

    executor: str = "local"
    address: str | None = None


@dataclass(frozen=True)
class SearchSettings:
    """How the variants are explored (search.py): all of them in order (grid), or a budget of `trials`
    chosen at random or by TPE; stop_when = "met" ends at the first batch with a variant meeting everything."""

    strategy: str = "grid"
    trials: int | None = None
    stop_when: str | None = None
    seed: int = 0

    @property
    def exhaustive(self) -> bool:
        return self.strategy == "grid" and self.trials is None and self.stop_when is None


@dataclass(frozen=True)
class DeviceAccess:
    """A device the sweep measures on over SSH (its figures are measured there, not estimated)."""

    on: str  # ssh://USER@HOST[:PORT]
    remote_python: str = "python3"  # the device's Python that has edgecompress
    ssh_config: Path | None = None  # an ssh_config file (as `ssh -F`)


@dataclass(frozen=True)
class Constraints:
    max_accuracy_drop: float | None = None  # points (percent)
    max_perplexity_rise: float | None = None  # percent above the source model's (language models)
    max_size_kb: float | None = None
    max_gzip_kb: float | None = None
    max_latency_ms: dict[str, float] = field(default_factory=dict)  # device -> ms

    def is_empty(self) -> bool:
        return (
            self.max_accuracy_drop is None and self.max_perplexity_rise is None and self.max_size_kb is None
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
    execution: Execution = Execution()
    search: SearchSettings = SearchSettings()
    measured: dict[str, DeviceAccess] = field(default_factory=dict)  # devices measured over SSH, by name


# -------------------------------------------------------------------------------------------- checks


class _Checker(FieldChecker):
    """The field checks, with the recipe's file and the field's line in every message."""

    def __init__(self, path: Path, text: str) -> None:
        super().__init__(f"recipe {path.name}", TomlLines(text))
        self.path = path

    def fail(self, where: tuple[Any, ...], message: str) -> UserError:
        return UserError(f"{self.located(where)}: {field_name(where) if where else 'recipe'}: {message}")

    def file(self, value: Any, where: tuple[Any, ...], what: str) -> Path:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"must be the path of {what} (a string), not {type_name(value)}")
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self.path.parent / path
        if not path.exists():
            raise self.fail(where, f"{what} {path} does not exist: check the path (relative paths are read "
                                   f"from the recipe's folder)")
        return path.resolve()

    def model(self, value: Any, where: tuple[Any, ...], what: str) -> Path:
        """A Keras model file or SavedModel folder (told by its contents, without loading it)."""
        path = self.file(value, where, what)
        try:
            keras_flavour(path)
        except UserError as exc:
            raise self.fail(where, str(exc)) from None
        return path

    def data(self, value: Any, where: tuple[Any, ...], what: str, kinds: tuple[str, ...]) -> Path:
        """A data file of one of KINDS (".npz", ".npy", "folder"); a labelled .npz must hold `y`."""
        path = self.file(value, where, what)
        kind = "folder" if path.is_dir() else path.suffix.lower()
        if kind not in kinds:
            raise self.fail(where, f"{what} {path} is not {' or '.join(_KIND_TEXT[k] for k in kinds)}: "
                                   f"save the arrays with numpy.savez(path, x=..., y=...)")
        if kind == ".npz":
            try:
                with np.load(path, allow_pickle=False) as arrays:
                    keys = list(arrays.files)
            except (OSError, ValueError) as exc:
                raise self.fail(where, f"{what} {path} is not a readable .npz file ({exc}): save it with "
                                       "numpy.savez") from None
            if kinds == (".npz",) and LABEL_KEY not in keys:
                raise self.fail(where, f"{what} {path} has no labels `{LABEL_KEY}` (keys: {', '.join(keys) or 'none'})"
                                       f": add them as {LABEL_KEY}=...")
        return path


_KIND_TEXT = {".npz": "a .npz file", ".npy": "a .npy file", "folder": "an image folder"}


# ------------------------------------------------------------------------------------------- parsing

TOP_KEYS = ("model", "devices", "objective", "data", "training", "benchmark", "execution", "search", "constraints",
            "grid", "variants")
DATA_KEYS = ("train", "val", "test", "calibration", "calibration_samples", "eval_output")
TRAINING_KEYS = ("epochs", "patience", "batch_size", "learning_rate", "seed")
BENCHMARK_KEYS = ("runs", "warmup", "min_secs", "threads")
EXECUTION_KEYS = ("executor", "address")
EXECUTORS = ("local", "ray")
SEARCH_KEYS = ("strategy", "trials", "stop_when", "seed")
STRATEGIES = ("grid", "random", "tpe")
DEVICE_KEYS = ("on", "remote_python", "ssh_config")
CONSTRAINT_KEYS = ("max_accuracy_drop", "max_perplexity_rise", "max_size_kb", "max_gzip_kb", "max_latency_ms")
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
    model = check.model(raw["model"], ("model",), "model")
    data = _data(check, raw.get("data", {}))
    devices, measured = _devices(check, raw.get("devices", []), known_devices or _profile_names)
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
        execution=_execution(check, raw.get("execution", {})),
        search=_search(check, raw.get("search", {})),
        measured=measured,
    )


def _profile_names() -> list[str]:
    from edgecompress.devices import list_profiles

    return list_profiles()


def _data(check: _Checker, raw: Any) -> DataFiles:
    check.table(raw, ("data",), DATA_KEYS)
    kinds = {"train": (".npz",), "val": (".npz",), "test": (".npz",), "calibration": (".npz", ".npy", "folder")}
    files = {k: check.data(raw[k], ("data", k), f"{k} data", kinds[k]) if k in raw else None for k in kinds}
    if files["test"] is None and files["val"] is None:
        raise check.fail(("data",), "needs held-out data to score the variants: set test = \"test.npz\" (or val)")
    files["calibration"] = files["calibration"] or files["train"]  # representative inputs: the training set will do
    samples = check.number(raw.get("calibration_samples", 200), ("data", "calibration_samples"), low=1, integer=True)
    output = raw.get("eval_output")
    if output is not None and (isinstance(output, bool) or not isinstance(output, (str, int))):
        raise check.fail(("data", "eval_output"), "must be an output's name or position, e.g. \"face\" or 0")
    return DataFiles(calibration_samples=samples, eval_output=None if output is None else str(output), **files)


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


def _execution(check: _Checker, raw: Any) -> Execution:
    check.table(raw, ("execution",), EXECUTION_KEYS)
    executor = check.choice(raw.get("executor", "local"), ("execution", "executor"), EXECUTORS, "executor")
    address = raw.get("address")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise check.fail(("execution", "address"), 'must be "auto" or "ray://HOST:PORT"')
    if address is not None and executor != "ray":
        raise check.fail(("execution", "address"), 'is the Ray cluster to join: it needs executor = "ray"')
    return Execution(executor, address)


def _search(check: _Checker, raw: Any) -> SearchSettings:
    check.table(raw, ("search",), SEARCH_KEYS)
    w = ("search",)
    trials = raw.get("trials")
    stop_when = raw.get("stop_when")
    return SearchSettings(
        strategy=check.choice(raw.get("strategy", "grid"), w + ("strategy",), STRATEGIES, "strategy"),
        trials=None if trials is None else check.number(trials, w + ("trials",), low=1, integer=True),
        stop_when=None if stop_when is None else check.choice(stop_when, w + ("stop_when",), ("met",), "stop_when"),
        seed=check.number(raw.get("seed", 0), w + ("seed",), low=0, integer=True),
    )


def _devices(check: _Checker, raw: Any, known: Callable[[], list[str]]) -> tuple[tuple[str, ...], dict[str, DeviceAccess]]:
    """The device names, and those measured over SSH (a table per device with `on`)."""
    measured: dict[str, DeviceAccess] = {}
    if isinstance(raw, dict):
        for name, entry in raw.items():
            access = _device_access(check, entry, ("devices", name))
            if access is not None:
                measured[name] = access
        raw = list(raw)
    elif not isinstance(raw, list) or not all(isinstance(d, str) for d in raw):
        raise check.fail(("devices",), f'must be a list of device names such as ["raspberry-pi-4"] or a table '
                                       f'[devices.NAME], not {type_name(raw)}')
    names = known() if len(measured) < len(raw) else None
    for i, name in enumerate(raw):
        if name in measured:  # measured, not estimated: any board will do, its name labels the figures
            if not NAME_RE.match(name):
                raise check.fail(("devices", name), "is not a usable device name: use letters, digits, '.', '_' or '-'")
        elif names is not None and name not in names:
            raise check.fail(("devices", name) if measured or isinstance(raw, dict) else ("devices",),
                             f"unknown device {name!r}: use one of {', '.join(names)} (`edgecompress devices list` "
                             'shows them), or measure it: on = "ssh://USER@HOST" in its [devices.NAME] table')
        if name in raw[:i]:
            raise check.fail(("devices",), f"device {name!r} is listed twice")
    return tuple(raw), measured


def _device_access(check: _Checker, entry: Any, where: tuple[Any, ...]) -> DeviceAccess | None:
    """A [devices.NAME] table: with `on`, how to reach the device; without, None (the device is estimated)."""
    from edgecompress.remote.ssh import parse_target

    check.table(entry, where, DEVICE_KEYS)
    if "on" not in entry:
        for key in ("remote_python", "ssh_config"):
            if key in entry:
                raise check.fail(where + (key,), 'is for a measured device: add on = "ssh://USER@HOST[:PORT]"')
        return None
    on = check.text(entry["on"], where + ("on",))
    python = check.text(entry.get("remote_python", "python3"), where + ("remote_python",))
    config = check.file(entry["ssh_config"], where + ("ssh_config",), "ssh config") if "ssh_config" in entry else None
    try:
        parse_target(on, config)
    except UserError as exc:
        raise check.fail(where + ("on",), str(exc)) from None
    return DeviceAccess(on, python, config)


def _constraints(check: _Checker, raw: Any, devices: tuple[str, ...]) -> Constraints:
    check.table(raw, ("constraints",), CONSTRAINT_KEYS)
    w = ("constraints",)

    def opt(key: str) -> float | None:
        return None if key not in raw else float(check.number(raw[key], w + (key,), low=0,
                                                                 low_open=key not in ("max_accuracy_drop", "max_perplexity_rise")))

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
        max_perplexity_rise=opt("max_perplexity_rise"),
        max_size_kb=opt("max_size_kb"),
        max_gzip_kb=opt("max_gzip_kb"),
        max_latency_ms=latency,
    )


def _setting(check: _Checker, key: str, value: Any, where: tuple[Any, ...]) -> Any:
    """One variant field, type- and range-checked against its declaration (pipeline.grid.SETTINGS)."""
    if key == "distill_student":
        return check.model(value, where, "student model")
    if key == "block_size":  # 0 turns blocks off (one scale per channel), so a grid can cross both
        size = SETTINGS[key].parse(check, value, where)
        if size and size not in BLOCK_SIZES:
            raise check.fail(where, f"block size {size} is not supported: use 0 (per channel) or one of "
                                    f"{', '.join(map(str, BLOCK_SIZES))}")
        return size or None
    if key not in SETTINGS:
        raise check.fail(where, f"unknown field: use one of {', '.join(VARIANT_KEYS)}")
    return SETTINGS[key].parse(check, value, where)


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
        what = settings.quantize if settings.quantize in CALIBRATED_MODES else f"algorithm {settings.algorithm}"
        raise check.fail(where + ("quantize",), f"{what} needs calibration data: set data.calibration")
    if settings.max_drop is not None and data.val is None:
        raise check.fail(where + ("max_drop",), "max_drop measures the loss on labelled validation data (the test "
                                                "split stays for scoring): set data.val")
