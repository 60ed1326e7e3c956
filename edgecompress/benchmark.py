"""benchmark(paths, options, device): measure .tflite files side by side, optionally under a device profile.

Each model runs in its own child process (edgecompress.measure). Under a device profile the run uses the
device's thread count (capped by this host's cores), is pinned to that many cores, gets the device's memory
budget as a hard limit, and carries an estimated device latency (devices.estimate). Runtime side only: no
TensorFlow is imported here.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Sequence

from edgecompress.devices.calibrate import host_cores
from edgecompress.devices.estimate import device_summary, estimate_for
from edgecompress.devices.profiles import DeviceProfile, load_profile
from edgecompress.errors import UserError
from edgecompress.inspect import total_macs
from edgecompress.measure import Measurement, MeasureOptions, measure
from edgecompress.measure.harness import check_model
from edgecompress.progress import note
from edgecompress.tflite_reader import TFLiteModel, is_integer_model


@dataclass
class BenchmarkResult:
    measurement: Measurement
    speedup_vs_first: float | None = None  # first model's p50 / this model's p50
    device: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON object of `benchmark --json`."""
        return {**dataclasses.asdict(self.measurement), "speedup_vs_first": self.speedup_vs_first, "device": self.device}


@dataclass(frozen=True)
class DeviceRun:
    """How a device profile shapes the run on this host."""

    profile: DeviceProfile
    threads_used: int
    threads_capped: bool

    def options(self, base: MeasureOptions) -> MeasureOptions:
        return dataclasses.replace(
            base,
            threads=self.threads_used,
            cpu_cores=self.threads_used,
            memory_limit_mb=float(self.profile.memory_budget_mb),
            budget_owner=self.profile.name,
        )


def device_run(name_or_path: str | os.PathLike) -> DeviceRun:
    profile = load_profile(name_or_path)
    cores = host_cores()
    return DeviceRun(profile, min(profile.threads, cores), profile.threads > cores)


def _device_object(run: DeviceRun, m: Measurement, model: TFLiteModel, with_estimate: bool) -> dict[str, Any]:
    estimate = None
    if with_estimate and m.ok and m.latency_ms is not None:
        try:
            # The MAC count is a feature of the estimate (devices.estimate), read from the file: no TensorFlow.
            estimate = estimate_for(run.profile, m.latency_ms.p50, m.latency_ms.p90, is_integer_model(model),
                                    macs=total_macs(model))
        except UserError as exc:  # no calibration possible here (e.g. no TensorFlow to build references)
            note(f"no latency estimate for {run.profile.name}: {exc}")
    return device_summary(run.profile, estimate, run.threads_used, run.threads_capped)


def _speedups(measurements: Sequence[Measurement]) -> list[float | None]:
    first = measurements[0].latency_ms if measurements else None
    return [
        first.p50 / m.latency_ms.p50 if first is not None and m.latency_ms is not None and m.latency_ms.p50 > 0 else None
        for m in measurements
    ]


def benchmark(
    paths: Sequence[str | os.PathLike],
    options: MeasureOptions = MeasureOptions(),
    device: str | os.PathLike | None = None,
    estimate: bool = True,
) -> list[BenchmarkResult]:
    """Measure each model in PATHS (in its own child process); every model is checked before any runs.

    With DEVICE (a profile name or .toml path) the run is shaped by the profile (see DeviceRun) and each
    result carries the `device` object; estimate=False leaves out the latency estimate and the one-time
    host calibration it may trigger.
    """
    if not paths:
        raise UserError("no model given: pass one or more .tflite files")
    options.validate()
    run = device_run(device) if device is not None else None
    if run is not None and run.threads_capped:
        note(f"{run.profile.name} has {run.profile.threads} threads; this host allows {run.threads_used}: capped")
    opts = run.options(options) if run is not None else options
    models = [check_model(p, opts.inputs) for p in paths]
    measurements = []
    for i, path in enumerate(paths, 1):
        note(f"[{i}/{len(paths)}] measuring {path} ({opts.threads} thread{'s' if opts.threads > 1 else ''})")
        m = measure(path, opts)
        if m.error:
            note(f"[{i}/{len(paths)}] {path}: {m.error}")
        measurements.append(m)
    results = [BenchmarkResult(m, s) for m, s in zip(measurements, _speedups(measurements))]
    if run is not None:
        for result, model in zip(results, models):
            result.device = _device_object(run, result.measurement, model, estimate)
    return results
