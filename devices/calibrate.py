"""Host timings of the reference architectures: the host half of every device factor.

A device factor is (published device ms / host ms) over the references, so the host side must be measured
on this machine, with the thread count of each published figure (capped at the host's cores). Timings are
cached in $EDGECOMPRESS_CACHE/calibration/<host>.json, keyed by the host's CPU model, core count and
runtime version: a different machine or runtime gets its own file.

What gets measured: a profile's own references, plus the float/int8 pairs of the published profiles
(MobileNet v1/v2, small and quick), which carry the int8 speed-up to devices without int8 figures.
Cost vs benefit of the large references (Inception V4, Inception-ResNet-V2, cited by Pixel 3 and 4 only),
measured here: building them took 113 and 165 CPU-seconds (170 and 223 MB .tflite, about 3.5 GB peak memory
while converting), once per host. With the MACs-scaled rule of estimate.py they do not help the other
models' points (leave-one-out within 20%: 75% with them, 80% without), but they are published points of
the Pixel 3 and 4 themselves, so those two profiles' factors average over six points instead of four.
They are therefore calibrated by default only for the profiles that cite them; `--skip-large`
(large=False) leaves them out.
`calibrate(..., models={...})` (CLI: `--reference NAME`) limits the work to a subset of architectures (the tests
calibrate Pixel 4 on SqueezeNet alone, the quickest to build, in a temporary EDGECOMPRESS_CACHE):
references without a host timing are left out of the fit, and the estimate names those it used.
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from edgecompress.fileio import write_text_atomic
from edgecompress.measure import MeasureOptions, measure
from edgecompress.progress import bar, note
from edgecompress.runtime import runtime_info
from edgecompress.devices import references
from edgecompress.devices.profiles import DeviceProfile, ReferenceLatency, measured_profiles, precision_pairs

# Fewer timed runs than benchmark_model's 50: the big Inception models would otherwise take a minute each.
# The host side of a factor is the FASTEST timed run, not the median: it is the run least disturbed by other
# processes (this project's hosts are shared), and on a quiet host it is within a few percent of the median.
CALIBRATION_RUNS = 10
CALIBRATION_MIN_SECS = 0.5

TimingKey = tuple[str, str, int]  # (model, precision, host threads)


@dataclass(frozen=True)
class Host:
    cpu: str
    cores: int
    runtime: str
    runtime_version: str

    @property
    def slug(self) -> str:
        text = f"{self.cpu}-{self.cores}c-{self.runtime}-{self.runtime_version}"
        return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


@dataclass(frozen=True)
class HostTimings:
    """Fastest host latency (ms) per (reference model, precision, host threads)."""

    host: Host
    ms: dict[TimingKey, float]

    def host_threads(self, device_threads: int) -> int:
        return min(device_threads, self.host.cores)

    def for_reference(self, ref: ReferenceLatency) -> float | None:
        return self.ms.get((ref.model, ref.precision, self.host_threads(ref.threads)))


def host_cores() -> int:
    """Cores this process may run on (what the benchmark caps threads at)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def current_host() -> Host:
    info = runtime_info()
    return Host(_cpu_model(), host_cores(), info.name, info.version)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_file(host: Host) -> Path:
    return references.cache_root() / "calibration" / f"{host.slug}.json"


def load_timings(host: Host | None = None) -> HostTimings:
    """The cached timings for this host (empty when it was never calibrated)."""
    host = host or current_host()
    path = _cache_file(host)
    if not path.exists():
        return HostTimings(host, {})
    rows = json.loads(path.read_text())["timings"]
    return HostTimings(host, {(r["model"], r["precision"], int(r["threads"])): float(r["min_ms"]) for r in rows})


def save_timings(timings: HostTimings) -> None:
    """Write TIMINGS to their host's cache file (atomically)."""
    path = _cache_file(timings.host)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"model": m, "precision": p, "threads": t, "min_ms": v} for (m, p, t), v in sorted(timings.ms.items())]
    write_text_atomic(path, json.dumps({"host": timings.host.__dict__, "timings": rows}, indent=2))


def needed_keys(
    profiles: Iterable[DeviceProfile], cores: int, models: set[str] | None = None, large: bool = True
) -> set[TimingKey]:
    """The host timings that estimates for PROFILES rely on: only the architectures MODELS if given, else
    all but the large ones unless LARGE."""

    def wanted(model: str) -> bool:
        return model in models if models is not None else large or not references.REFERENCE_MODELS[model].large

    refs = [r for p in profiles for r in p.references]
    refs += [r for pair in precision_pairs(measured_profiles()) for r in pair]
    return {(r.model, r.precision, min(r.threads, cores)) for r in refs if wanted(r.model)}


@dataclass(frozen=True)
class CalibrationRun:
    timings: HostTimings
    measured: list[TimingKey]
    build_seconds: dict[str, float]
    measure_seconds: float


def calibrate(
    profiles: Iterable[DeviceProfile],
    models: set[str] | None = None,
    force: bool = False,
    large: bool = True,
    rounds: int = 1,
) -> CalibrationRun:
    """Measure (force: re-measure) the host timings PROFILES need, building missing references first.

    With ROUNDS > 1 the references are timed round-robin that many times and the fastest is kept: on a
    shared host the load drifts, and interleaving exposes every reference to the same quiet moments.
    """
    for model in models or ():
        references.check_model_name(model, "calibrate")
    cached = load_timings()
    keys = needed_keys(list(profiles), cached.host.cores, models, large)
    todo = sorted(keys if force else keys - cached.ms.keys())
    if not todo:
        return CalibrationRun(cached, [], {}, 0.0)
    built = references.build({(m, p) for m, p, _ in todo})
    ms = dict(cached.ms)
    start = time.perf_counter()
    fastest: dict[TimingKey, float] = {}
    with bar(todo * rounds, label="timing reference models on this host") as items:
        for key in items:
            fastest[key] = min(fastest.get(key, math.inf), _time_reference(*key))
    ms.update(fastest)
    timings = HostTimings(cached.host, ms)
    save_timings(timings)
    return CalibrationRun(timings, todo, built, time.perf_counter() - start)


def ensure_timings(profile: DeviceProfile) -> HostTimings:
    """The host timings for PROFILE, calibrating on demand (once per host) when some are missing."""
    cached = load_timings()
    if needed_keys([profile], cached.host.cores) <= cached.ms.keys():
        return cached
    note(f"calibrating device estimates for {profile.name} on this host (once; cached in {references.cache_root()})")
    return calibrate([profile]).timings


def _time_reference(model: str, precision: str, threads: int) -> float:
    path = references.reference_path(model, precision)
    result = measure(path, MeasureOptions(threads=threads, runs=CALIBRATION_RUNS, min_secs=CALIBRATION_MIN_SECS, cpu_cores=threads))
    if result.error:
        raise references.CalibrationUnavailable(f"timing reference {path.name} failed: {result.error}")
    return float(result.latency_ms.min)
