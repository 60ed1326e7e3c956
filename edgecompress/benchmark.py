"""benchmark(paths, options, device): measure .tflite files side by side, optionally under a device profile.

Each model runs in its own child process (edgecompress.measure). Under a device profile:
- the device's fit comes first, once (devices.fit_for: the host calibration when it is missing, then the fit),
  so its one-time work shows its progress before any model runs;
- each model runs with the device's threads (the profile's, or the caller's), capped at this host's cores and
  pinned to that many cores, with the device's memory budget as a hard limit;
- the estimate is for the device's threads: a run at fewer host threads is moved there by the fit's thread
  model (Amdahl's law), and the result says at how many threads it was measured;
- the estimated p90 is the estimated p50 times the p90/p50 of a one-thread run of the model (an extra run
  when the device's run is multi-threaded). A multi-threaded run of a model that takes microseconds has a
  slow mode: on the digits CNN at 2 threads here (p50 6.5-6.8 us), 0.3-7% of the runs took about 0.11 ms
  (waiting for a worker thread): the p99 was about 17x the p50 in 9 of 10 rounds, 1.1-1.8x at one thread. The p90 stays
  near the p50 while that share is under 10% and jumps into the slow mode above it: p90/p50 ranged 1.01-1.62
  over 10 rounds at 2 threads, 1.01-1.13 at one (benchmarks/estimate_spread.py), and a sweep's report showed 8.6.
  That share follows the host's load and scheduling, not the model or the device.
Runtime side only: no TensorFlow is imported here.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Sequence

from edgecompress.devices.calibrate import host_cores
from edgecompress.devices.estimate import DeviceEstimate, DeviceFit, fit_for
from edgecompress.devices.profiles import DeviceProfile, load_profile
from edgecompress.errors import UserError
from edgecompress.macs import op_macs, total_macs
from edgecompress.measure import Measurement, MeasureOptions, measure
from edgecompress.measure.harness import check_model
from edgecompress.shapes import resolve_shapes, tflite_input_shapes
from edgecompress.progress import note
from edgecompress.tflite_reader import TFLiteModel, is_integer_model, read_model


@dataclass(frozen=True)
class DeviceRunResult:
    """The device part of a benchmark result: how the profile shaped the run, and the estimate."""

    name: str
    threads: int  # the device's threads: what the estimate is for
    threads_used: int  # the host threads the model ran with (threads, capped at this host's cores)
    memory_budget_mb: int
    estimate: DeviceEstimate | None = None
    spread_threads: int | None = None  # host threads of the run the estimate's p90/p50 comes from
    unavailable: str | None = None  # why there is no estimate (no calibration on this host, a failed run)

    @property
    def threads_capped(self) -> bool:
        return self.threads_used < self.threads

    def to_dict(self) -> dict[str, Any]:
        """The `device` object of `benchmark --json`."""
        est = self.estimate
        return {
            "name": self.name,
            "threads": self.threads,
            "threads_used": self.threads_used,
            "threads_capped": self.threads_capped,
            "memory_budget_mb": self.memory_budget_mb,
            "estimated_latency_ms": None if est is None else {
                "p50": est.p50_ms, "p90": est.p90_ms, "kind": est.kind, "threads": est.threads,
                "host_threads": est.host_threads, "p90_over_p50": est.spread, "spread_threads": self.spread_threads,
            },
            "calibration": None if est is None else est.calibration(),
            "unavailable": self.unavailable,
        }


@dataclass
class BenchmarkResult:
    measurement: Measurement
    speedup_vs_first: float | None = None  # first model's p50 / this model's p50
    device: DeviceRunResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON object of `benchmark --json`."""
        return {
            **dataclasses.asdict(self.measurement),
            "speedup_vs_first": self.speedup_vs_first,
            "device": None if self.device is None else self.device.to_dict(),
        }


@dataclass(frozen=True)
class DeviceRun:
    """How a device profile shapes the run on this host."""

    profile: DeviceProfile
    threads: int  # the device's
    threads_used: int  # on this host

    def options(self, base: MeasureOptions, threads: int | None = None) -> MeasureOptions:
        threads = threads or self.threads_used
        return dataclasses.replace(
            base,
            threads=threads,
            cpu_cores=threads,
            memory_limit_mb=float(self.profile.memory_budget_mb),
            budget_owner=self.profile.name,
        )


def device_run(name_or_path: str | os.PathLike, threads: int | None = None) -> DeviceRun:
    """PROFILE's run at THREADS device threads (default: the profile's), capped at this host's cores."""
    profile = load_profile(name_or_path)
    if threads is not None and threads < 1:
        raise UserError(f"threads must be 1 or more (got {threads})")
    threads = threads or profile.threads
    return DeviceRun(profile, threads, min(threads, host_cores()))


def _device_fit(run: DeviceRun) -> tuple[DeviceFit | None, str | None]:
    """The device's fit, or why there is none (the benchmark still measures)."""
    try:
        return fit_for(run.profile), None
    except UserError as exc:  # no calibration possible here (e.g. no TensorFlow to build references)
        note(f"no latency estimate for {run.profile.name}: {exc}")
        return None, str(exc)


def _device_result(run: DeviceRun, fit: DeviceFit | None, unavailable: str | None, m: Measurement,
                   model: TFLiteModel, spread_run: Measurement | None) -> DeviceRunResult:
    result = DeviceRunResult(run.profile.name, run.threads, run.threads_used, run.profile.memory_budget_mb,
                             unavailable=unavailable)
    if fit is None or not m.ok or m.latency_ms is None:
        return result
    spread = spread_run if spread_run is not None and spread_run.latency_ms is not None else m
    try:
        # The MAC count is a feature of the estimate (devices.estimate), read from the file: no TensorFlow.
        estimate = fit.estimate(m.latency_ms.p50, spread.latency_ms.p90 / spread.latency_ms.p50,
                                is_integer_model(model), run.threads, macs=total_macs(model))
    except UserError as exc:  # e.g. no reference of the model's precision was calibrated
        note(f"no latency estimate for {run.profile.name}: {exc}")
        return dataclasses.replace(result, unavailable=str(exc))
    return dataclasses.replace(result, estimate=estimate, spread_threads=spread.threads)


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
    device_threads: int | None = None,
    one_thread_runs: Sequence[Measurement] | None = None,
) -> list[BenchmarkResult]:
    """Measure each model in PATHS (in its own child process); every model is checked before any runs.

    With DEVICE (a profile name or .toml path) the run is shaped by the profile (see the module docstring)
    and each result carries its DeviceRunResult; DEVICE_THREADS replaces the profile's thread count;
    estimate=False leaves out the latency estimate and the one-time host calibration it may need.
    ONE_THREAD_RUNS, one-thread measurements of PATHS made already, give the estimates' p90/p50 instead of
    an extra run each.
    """
    if not paths:
        raise UserError("no model given: pass one or more .tflite files")
    options.validate()
    run = device_run(device, device_threads) if device is not None else None
    opts = run.options(options) if run is not None else options
    models = [check_model(p, opts.inputs, opts.use_xnnpack) for p in paths]
    # A free dimension other than the batch needs the shape to run; MACs (for the estimates) come from the
    # shapes the runtime resolves.
    per_model = [dataclasses.replace(opts, input_shapes=tflite_input_shapes(model, opts.input_shapes, required=True))
                 for model in models]
    for path, model, model_opts in zip(paths, models, per_model):
        resolve_shapes(model, path, model_opts.input_shapes)
    fit, unavailable = _device_fit(run) if run is not None and estimate else (None, None)
    if run is not None and run.threads_used < run.threads:
        note(f"{run.profile.name} runs {run.threads} threads and this host has {host_cores()} cores: measured at "
             f"{run.threads_used} host threads" + (f", estimated for the device's {run.threads} by Amdahl's law" if fit else ""))
    measurements = [_measure(i, len(paths), path, o) for i, (path, o) in enumerate(zip(paths, per_model), 1)]
    results = [BenchmarkResult(m, s) for m, s in zip(measurements, _speedups(measurements))]
    if run is not None:
        for i, (result, path, model) in enumerate(zip(results, paths, models), 1):
            m = result.measurement
            # The estimate's p90/p50 comes from a one-thread run (module docstring): a second run when this one is not.
            spread_run = None
            if fit is not None and m.ok and m.threads > 1:
                spread_run = (one_thread_runs[i - 1] if one_thread_runs is not None
                              else _measure(i, len(paths), path, run.options(per_model[i - 1], threads=1),
                                            "for the estimate's p90/p50"))
            result.device = _device_result(run, fit, unavailable, m, model, spread_run)
    return results


def _measure(i: int, n: int, path: str | os.PathLike, opts: MeasureOptions, why: str = "") -> Measurement:
    note(f"[{i}/{n}] measuring {path} ({opts.threads} thread{'s' if opts.threads > 1 else ''}){' ' + why if why else ''}")
    m = measure(path, opts)
    if m.error:
        note(f"[{i}/{n}] {path}: {m.error}")
    return m


@dataclass
class LMDeviceEstimate:
    """A language model's decode speed on a device: the memory roofline and the compute estimate, the lower wins.

    A decode step reads every weight once and the whole KV cache, so the device's DRAM bandwidth caps it at
    bandwidth / those bytes tokens/s whatever its cores do: the roofline, a physical limit (at the memory's peak,
    which real code does not reach). The compute side is the device fit (devices/estimate.py) applied to the
    host's decode step and its MACs, as for any model."""

    device: str
    threads: int
    bytes_per_token: int  # weights plus KV cache read by one decode step
    bandwidth_gbs: float | None
    roofline_tokens_per_s: float | None
    compute_tokens_per_s: float | None
    estimated_tokens_per_s: float | None
    bound: str  # "memory", "compute", or "unknown" (neither side could be estimated)
    outside_fit: str | None = None  # the compute side extrapolates (devices.estimate)
    unavailable: str | None = None  # why the compute side has no figure


@dataclass
class LMBenchmarkResult:
    measurement: Any  # edgecompress.generate.LMMeasurement
    device: LMDeviceEstimate | None = None


def benchmark_lm(paths: Sequence[str | os.PathLike], threads: int | None = None, runs: int = 10,
                 device: str | os.PathLike | None = None) -> list[LMBenchmarkResult]:
    """Language-model .tflite files (prefill and decode signatures) timed on this host, each in its own child:
    prefill and decode tokens/s, time to first token, peak memory (edgecompress.generate.measure_lm). With DEVICE,
    at its threads (capped at this host's cores), with its decode tokens/s estimated (LMDeviceEstimate)."""
    from edgecompress.generate import measure_lm
    from edgecompress.isolation import run_isolated

    run = device_run(device, threads) if device is not None else None
    fit, unavailable = _device_fit(run) if run is not None else (None, None)
    used = run.threads_used if run is not None else threads
    results = []
    for i, path in enumerate(paths, 1):
        note(f"[{i}/{len(paths)}] measuring {path} (prefill and decode, {used or 'the runtime default'} thread(s))")
        m = run_isolated(measure_lm, str(path), used, runs, what=f"benchmark of {path}")
        results.append(LMBenchmarkResult(m, _lm_estimate(run, fit, unavailable, m) if run is not None else None))
    return results


def _lm_estimate(run: DeviceRun, fit: DeviceFit | None, unavailable: str | None, m: Any) -> LMDeviceEstimate:
    from edgecompress.inspect import inspect_model

    model = read_model(m.model)
    weights = inspect_model(m.model).weight_bytes
    bytes_per_token = weights + m.cache_bytes
    memory = run.profile.memory
    roofline = memory.gbs * 1e9 / bytes_per_token if memory is not None else None
    compute, outside = None, None
    if fit is not None:
        decode = next(s for s in model.signatures if s.key == "decode")
        macs = sum(op_macs(model.subgraphs[decode.subgraph], op) for op in model.subgraphs[decode.subgraph].operators)
        try:
            est = fit.estimate(m.decode_ms.p50, m.decode_ms.p90 / m.decode_ms.p50, False, run.threads, macs=macs)
            compute, outside = 1000 / est.p50_ms, est.outside_fit
        except UserError as exc:
            unavailable = str(exc)
    sides = {k: v for k, v in (("memory", roofline), ("compute", compute)) if v is not None}
    bound = min(sides, key=sides.get) if sides else "unknown"
    return LMDeviceEstimate(run.profile.name, run.threads, bytes_per_token, memory.gbs if memory else None, roofline,
                            compute, sides.get(bound), bound, outside, unavailable)
