"""Device profiles: one TOML file per target, read as data (tomllib) and validated field by field.

A profile names the hardware (cores, clock, RAM), the memory an app may use (ram_mb less a documented
OS reserve), the thread count the benchmark uses, the runtime the device normally has, and the published
latencies that calibrate its estimates. A profile with no published figures may derive them from another
profile (`[derived_from] profile, scale, reason`): such references are labelled derived everywhere.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgecompress.errors import UserError
from edgecompress.tomlfields import FieldChecker, TomlLines, field_name
from edgecompress.devices.references import PRECISIONS, check_model_name

PROFILE_SUFFIX = ".toml"


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str


@dataclass(frozen=True)
class UserlandSpec:
    """The device's OS userland (see edgecompress.devices.userland): Debian release, architecture, Python."""

    os: str
    suite: str
    arch: str
    python: str


@dataclass(frozen=True)
class ReferenceLatency:
    """A device latency for a reference architecture: published (with its source) or derived from one."""

    model: str
    precision: str  # "float" or "int8"
    threads: int
    latency_ms: float
    source: str
    derived: bool = False

    @property
    def key(self) -> str:
        return f"{self.model}/{self.precision}/{self.threads}t"


@dataclass(frozen=True)
class MemoryBandwidth:
    """The device's DRAM bandwidth: the roofline of anything that streams its weights (a language model's decode)."""

    gbs: float  # GB/s, a theoretical peak from the memory's type, clock and bus width
    source: str


@dataclass(frozen=True)
class Derivation:
    profile: str
    scale: float
    reason: str


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    arch: str
    cores: int
    big_cores: int
    clock_mhz: int
    ram_mb: int
    os_reserve_mb: int
    os_reserve_note: str
    threads: int
    runtime: Runtime
    references: tuple[ReferenceLatency, ...]
    derived_from: Derivation | None = None
    userland: UserlandSpec | None = None  # optional: Android profiles have none
    memory: MemoryBandwidth | None = None  # optional: without it, language-model estimates have no roofline
    path: str = field(default="", compare=False)

    @property
    def memory_budget_mb(self) -> int:
        """What a model may use: the device's RAM less what the OS and its services keep."""
        return self.ram_mb - self.os_reserve_mb

    @property
    def is_derived(self) -> bool:
        return self.derived_from is not None


def _profiles_dir() -> Any:
    return resources.files("edgecompress.devices") / "profiles"


def list_profiles() -> list[str]:
    """Names of the shipped profiles, sorted."""
    return sorted(p.name[: -len(PROFILE_SUFFIX)] for p in _profiles_dir().iterdir() if p.name.endswith(PROFILE_SUFFIX))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A shipped profile by name, or a user's own TOML file by path; bad fields raise a one-line UserError."""
    text_arg = str(name_or_path)
    if text_arg in list_profiles():
        entry = _profiles_dir() / f"{text_arg}{PROFILE_SUFFIX}"
        return _parse(entry.read_text(encoding="utf-8"), f"profile {text_arg}")
    path = Path(text_arg)
    if path.suffix == PROFILE_SUFFIX or path.exists():
        if not path.is_file():
            problem = "is not a file" if path.exists() else "does not exist"
            raise UserError(f"device profile {path} {problem}: check the path, or use one of: {', '.join(list_profiles())}")
        return _parse(path.read_text(encoding="utf-8"), f"profile {path}", path)
    raise UserError(f"unknown device {text_arg!r}: use one of {', '.join(list_profiles())}, or the path of a .toml profile")


def _parse(text: str, where: str, path: Path | None = None) -> DeviceProfile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{where} is not valid TOML ({exc}): fix the file's syntax") from exc
    lines = TomlLines(text)
    get = _Fields(data, where, lines)
    name = get.text("name")
    cores = get.integer("cores")
    big_cores = get.integer("big_cores")
    ram_mb = get.integer("ram_mb")
    os_reserve_mb = get.integer("os_reserve_mb")
    threads = get.integer("threads")
    if big_cores > cores:
        raise UserError(f"{where}: field 'big_cores' ({big_cores}) exceeds 'cores' ({cores}): fix one of them")
    if threads > cores:
        raise UserError(f"{where}: field 'threads' ({threads}) exceeds 'cores' ({cores}): use at most {cores}")
    if os_reserve_mb >= ram_mb:
        raise UserError(f"{where}: field 'os_reserve_mb' ({os_reserve_mb}) must be below 'ram_mb' ({ram_mb})")
    runtime = _Fields(get.table("runtime"), f"{where}, [runtime]", lines, ("runtime",))
    derivation = _derivation(data, where, lines)
    references = _references(data, where, derivation, lines)
    return DeviceProfile(
        name=name,
        description=get.text("description"),
        arch=get.text("arch"),
        cores=cores,
        big_cores=big_cores,
        clock_mhz=get.integer("clock_mhz"),
        ram_mb=ram_mb,
        os_reserve_mb=os_reserve_mb,
        os_reserve_note=get.text("os_reserve_note"),
        threads=threads,
        runtime=Runtime(runtime.text("name"), runtime.text("version")),
        references=references,
        derived_from=derivation,
        userland=_userland(data, where, lines),
        memory=_memory(data, where, lines),
        path=str(path) if path else "",
    )


def _memory(data: dict[str, Any], where: str, lines: TomlLines) -> MemoryBandwidth | None:
    if "memory" not in data:
        return None
    get = _Fields(_Fields(data, where, lines).table("memory"), f"{where}, [memory]", lines, ("memory",))
    gbs = get.number("bandwidth_gbs")
    if gbs <= 0:
        raise UserError(f"{where}, [memory]: field 'bandwidth_gbs' ({gbs}) must be above 0: give GB/s")
    return MemoryBandwidth(gbs, get.text("source"))


def _userland(data: dict[str, Any], where: str, lines: TomlLines) -> UserlandSpec | None:
    if "userland" not in data:
        return None
    get = _Fields(_Fields(data, where, lines).table("userland"), f"{where}, [userland]", lines, ("userland",))
    return UserlandSpec(get.text("os"), get.text("suite"), get.text("arch"), get.text("python"))


def _derivation(data: dict[str, Any], where: str, lines: TomlLines) -> Derivation | None:
    if "derived_from" not in data:
        return None
    get = _Fields(_Fields(data, where, lines).table("derived_from"), f"{where}, [derived_from]", lines,
                  ("derived_from",))
    return Derivation(get.text("profile"), get.number("scale"), get.text("reason"))


def _references(data: dict[str, Any], where: str, derivation: Derivation | None,
                lines: TomlLines) -> tuple[ReferenceLatency, ...]:
    if derivation is not None:
        if "references" in data:
            raise UserError(f"{where}: give either [[references]] or [derived_from], not both")
        if derivation.profile not in list_profiles():
            raise UserError(
                f"{where}, [derived_from]: field 'profile' must name a shipped profile ({', '.join(list_profiles())})"
            )
        source = load_profile(derivation.profile)
        if source.is_derived:
            raise UserError(f"{where}, [derived_from]: {derivation.profile} is itself derived; derive from a measured profile")
        return tuple(
            ReferenceLatency(
                r.model, r.precision, r.threads, round(r.latency_ms * derivation.scale, 2),
                f"derived: {derivation.profile} {r.latency_ms:g} ms x {derivation.scale:g} ({derivation.reason})", True,
            )
            for r in source.references
        )
    entries = data.get("references")
    if entries == []:  # no published figures: estimates come from the user's measurements alone (a refit)
        return ()
    if not isinstance(entries, list):
        raise UserError(f"{where}: missing field 'references' (a list of [[references]] tables, or references = [] "
                        "for a board calibrated from your measurements alone) or a [derived_from] table")
    out = []
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise UserError(f"{where}: references #{i} must be a table ([[references]])")
        get = _Fields(entry, f"{where}, references #{i}", lines, ("references", i - 1))
        model = get.text("model")
        check_model_name(model, f"{where}, references #{i}, field 'model'")
        precision = get.text("precision")
        if precision not in PRECISIONS:
            raise UserError(f"{where}, references #{i}: field 'precision' must be float or int8, not {precision!r}")
        out.append(ReferenceLatency(model, precision, get.integer("threads"), get.number("latency_ms"), get.text("source")))
    return tuple(out)


class _Fields:
    """The required fields of one table of a profile; errors name the field and the file."""

    def __init__(self, data: dict[str, Any], where: str, lines: TomlLines, prefix: tuple[Any, ...] = ()) -> None:
        self.data, self.check = data, _ProfileChecker(where, lines, prefix)

    def _get(self, key: str, kind: str) -> Any:
        return self.check.required(self.data, (key,), kind)

    def text(self, key: str) -> str:
        return self.check.text(self._get(key, "a string"), (key,))

    def integer(self, key: str) -> int:
        return self.check.number(self._get(key, "a positive integer"), (key,), low=1, integer=True)

    def number(self, key: str) -> float:
        return float(self.check.number(self._get(key, "a positive number"), (key,), low=0, low_open=True))

    def table(self, key: str) -> dict[str, Any]:
        return self.check.table(self._get(key, "a table"), (key,))


class _ProfileChecker(FieldChecker):
    def fail(self, path: tuple[Any, ...], message: str) -> UserError:
        return UserError(f"{self.located(path)}: field '{field_name(path)}' {message}")


def measured_profiles() -> list[DeviceProfile]:
    """The shipped profiles whose references are published, not derived."""
    return [p for p in map(load_profile, list_profiles()) if not p.is_derived]


def precision_pairs(profiles: list[DeviceProfile]) -> list[tuple[ReferenceLatency, ReferenceLatency]]:
    """(float, int8) references of the same model and thread count on the same device: the int8 speed-ups."""
    pairs = []
    for profile in profiles:
        by_key = {(r.model, r.threads, r.precision): r for r in profile.references}
        for (model, threads, precision), ref in by_key.items():
            if precision == "float" and (model, threads, "int8") in by_key:
                pairs.append((ref, by_key[(model, threads, "int8")]))
    return pairs
