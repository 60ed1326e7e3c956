"""`edgecompress benchmark`: latency and memory of .tflite files as TFLite's benchmark_model measures them.

Runtime side only (no TensorFlow): each model runs in its own child process; see edgecompress.measure.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edgecompress.tables import fmt, key_values, table, to_json
from edgecompress.cli.options import emit, input_shape_option, json_option

# benchmark_model's defaults (edgecompress.measure.phases), repeated here so --help needs no import.
DEFAULT_RUNS = 50
DEFAULT_MIN_SECS = 1.0
DEFAULT_WARMUP = 1


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{fmt(value)} ms"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{fmt(value)} MB"


def _inputs_line(inputs: list) -> str:
    return "; ".join(f"{u.name} {list(u.shape)} {u.dtype}: {u.source}" for u in inputs) or "-"


def _device_pairs(device) -> list[tuple[str, Any]]:
    """The device lines of one result (DEVICE is an edgecompress.benchmark.DeviceRunResult)."""
    threads = str(device.threads)
    if device.threads_capped:
        threads += f" (measured at {device.threads_used} host threads, all this host has"
        threads += f"; the estimate is moved to {device.threads} by Amdahl's law)" if device.estimate else ")"
    pairs: list[tuple[str, Any]] = [
        ("device", device.name),
        ("device threads", threads),
        ("memory budget", f"{device.memory_budget_mb} MB (hard limit)"),
    ]
    est = device.estimate
    if est is None:
        pairs.append(("estimated latency", f"unavailable ({device.unavailable or 'no calibration on this host'})"))
        return pairs
    pairs.append(("ESTIMATED p50 / p90", f"{fmt(est.p50_ms)} / {fmt(est.p90_ms)} ms at {est.threads} device threads "
                  "(estimate, not a measurement)"))
    pairs.append(("estimated p90", f"p50 x {est.spread:.2f}, the p90/p50 of a {device.spread_threads}-thread run "
                  "on this host"))
    pairs.append(("estimate calibrated by", ", ".join(est.references) + (" (derived)" if est.derived else "")))
    loo = est.leave_one_out_within_20pct
    pairs.append(("leave-one-out within 20%", "-" if loo is None else f"{loo:.0%}"))
    if est.outside_fit:
        pairs.append(("OUTSIDE THE FIT", est.outside_fit))
    return pairs


# What ended the timed runs: benchmark_model runs while run < runs OR elapsed < min seconds.
STOPPED_BY = {
    "runs": "the run count ({runs}) was reached after the minimum time ({min_secs:g} s)",
    "min_secs": "the minimum time ({min_secs:g} s) ran out after the run count ({runs})",
    "max_secs": "cut short at the maximum time ({max_secs:g} s)",
}


def _timed_runs(m) -> str:
    if m.timed is None or m.latency_ms is None:
        return "-"
    end = m.timed
    why = STOPPED_BY[end.stopped_by].format(runs=end.rule.runs, min_secs=end.rule.min_secs, max_secs=end.rule.max_secs)
    return f"{end.runs:,} in {end.seconds:.2f} s: {why}"


def render_one(result) -> str:
    m = result.measurement
    runtime = f"{m.runtime['name']} {m.runtime['version']}" if m.runtime else "-"
    pairs: list[tuple[str, Any]] = [
        ("runtime", runtime),
        ("threads", m.threads if not m.cpus else f"{m.threads} (pinned to CPUs {','.join(map(str, m.cpus))})"),
        ("XNNPACK", "on" if m.xnnpack else "off"),
        ("init", _ms(m.init_ms)),
        ("first inference", _ms(m.first_ms)),
        ("warm-up avg", f"{_ms(m.warmup_avg_ms)} ({m.warmup_count} runs)"),
        ("timed runs", _timed_runs(m)),
        ("peak RSS (process)", _mb(m.peak_rss_mb)),
        ("load RSS (model)", _mb(m.model_load_rss_mb)),
        ("size", f"{m.size_bytes:,} B"),
        ("gzip size", f"{m.gzip_bytes:,} B"),
        ("inputs", _inputs_line(m.inputs)),
    ]
    if result.device:
        pairs += _device_pairs(result.device)
    if m.error:
        pairs.append(("ERROR", m.error))
    parts = [key_values(pairs, title=f"== {m.model}")]
    if m.latency_ms is not None:
        s = m.latency_ms
        parts.append(
            table(
                ["count", "avg", "std", "min", "max", "p5", "p50", "p90", "p95", "p99"],
                [[s.count, s.avg, s.std, s.min, s.max, s.p5, s.p50, s.p90, s.p95, s.p99]],
                title="timed runs (ms)",
            )
        )
    return "\n".join(parts)


def render(results: list) -> str:
    out = [render_one(r) for r in results]
    if len(results) > 1:
        rows = []
        for r in results:
            m, s = r.measurement, r.measurement.latency_ms
            est = r.device.estimate if r.device else None
            rows.append(
                [
                    Path(m.model).name,
                    None if s is None else s.p50,
                    None if s is None else s.avg,
                    None if s is None else s.p90,
                    None if est is None else est.p50_ms,
                    r.speedup_vs_first,
                    m.peak_rss_mb,
                    m.size_bytes,
                    m.gzip_bytes,
                    m.error or "",
                ]
            )
        headers = ["model", "p50 ms", "avg ms", "p90 ms", "est. device p50", "speed-up", "peak RSS MB", "size B", "gzip B", "error"]
        out.append(table(headers, rows, title="Comparison (speed-up = first model's p50 / this model's p50)"))
    return "\n\n".join(out)


@click.command("benchmark")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--device", help="A device profile name (see `edgecompress devices list`) or a PROFILE.toml file. With --on ssh://: "
              "the profile the measurements are kept under (`devices calibrate NAME --from-measurements` refits it).")
@click.option("--threads", type=int, default=None,
              help="Interpreter threads (default 1). With --device: the device's threads (default the profile's), "
              "measured at as many as this host has.")
@click.option("--runs", type=int, default=DEFAULT_RUNS, show_default=True, help="Minimum timed runs.")
@click.option("--warmup", type=int, default=DEFAULT_WARMUP, show_default=True, help="Minimum warm-up runs.")
@click.option("--min-secs", type=float, default=DEFAULT_MIN_SECS, show_default=True, help="Minimum seconds of timed runs.")
@click.option("--inputs", type=click.Path(path_type=Path), help="A .npz with one array per input (or x) instead of random data.")
@click.option("--no-xnnpack", is_flag=True, help="Run without the XNNPACK delegate (the builtin kernels).")
@input_shape_option("The shape to run an input with free dimensions at (batch 1 first; repeat for several inputs). "
                    "Needed when a dimension other than the batch is free.")
@click.option("--on", "on", metavar="ssh://USER@HOST[:PORT]|adb[:SERIAL]", help="Measure on that device instead of this host.")
@click.option("--remote-python", default="python3", show_default=True, help="With --on ssh://: the device's Python that has edgecompress.")
@click.option("--ssh-config", type=click.Path(path_type=Path), help="With --on ssh://: an ssh_config file (as `ssh -F`).")
@click.option("--benchmark-binary", type=click.Path(path_type=Path), help="With --on adb: TFLite's benchmark_model for the phone's ABI.")
@json_option
def benchmark_command(
    models: tuple[Path, ...],
    device: str | None,
    threads: int | None,
    runs: int,
    warmup: int,
    min_secs: float,
    inputs: Path | None,
    no_xnnpack: bool,
    input_shape: tuple[str, ...],
    on: str | None,
    remote_python: str,
    ssh_config: Path | None,
    benchmark_binary: Path | None,
    as_json: bool,
) -> None:
    """Measure MODEL.tflite files like TFLite's benchmark_model: init, first inference, warm-up, timed runs.

    Each phase runs while run < N or elapsed < min seconds (the report says which ended later). With
    --device the run takes the device's threads, memory budget and an estimated device latency. Each
    model runs in its own process, so a model that crashes the runtime becomes an error row. Exit code 1
    when any model failed to run.
    """
    from edgecompress.benchmark import benchmark
    from edgecompress.errors import UserError
    from edgecompress.measure import MeasureOptions
    from edgecompress.shapes import parse_input_shapes

    options = MeasureOptions(
        threads=1 if threads is None else threads,
        runs=runs,
        warmup=warmup,
        min_secs=min_secs,
        use_xnnpack=not no_xnnpack,
        inputs=inputs,
        input_shapes=parse_input_shapes(input_shape),
    )
    if _language_models(models, device, on, inputs, input_shape):
        if on is not None:
            _benchmark_lm_on(on, list(models), threads, runs, device, remote_python, ssh_config, benchmark_binary,
                             as_json)
            return
        from edgecompress.benchmark import benchmark_lm

        lm_results = benchmark_lm(list(models), 1 if threads is None and device is None else threads, runs, device)
        emit(lm_results, as_json, render_lm)
        return
    if on is not None or ssh_config is not None or benchmark_binary is not None:
        if input_shape:
            raise UserError("--input-shape is for this host's runs: with --on, give the device a model with fixed "
                            "shapes (convert --input-shape)")
        _benchmark_on(on, list(models), options, device, remote_python, ssh_config, benchmark_binary, as_json)
        return
    results = benchmark(list(models), options, device, device_threads=threads)
    click.echo(to_json([r.to_dict() for r in results]) if as_json else render(results))
    _exit_if_failed(results, as_json)


def _language_models(models: tuple[Path, ...], device: str | None, on: str | None, inputs: Path | None,
                     input_shape: tuple[str, ...]) -> bool:
    """Whether MODELS are language models (prefill and decode signatures), which benchmark times by tokens."""
    from edgecompress.errors import UserError
    from edgecompress.generate import is_generative
    from edgecompress.runtime import check_tflite_file

    kinds = [is_generative(m) for m in models]
    if not any(kinds):
        return False
    for model, kind in zip(models, kinds):
        if not kind:  # a file that cannot be read says so first
            check_tflite_file(model)
    if not all(kinds):
        raise UserError("language models (prefill and decode signatures) and other models are timed differently: "
                        "benchmark them separately")
    for flag, value in (("--inputs", inputs), ("--input-shape", input_shape)):
        if value:
            raise UserError(f"{flag} is not for language models: they are timed on random prompts of their prefill "
                            "length; drop it")
    return True


def _benchmark_lm_on(on: str, models: list[Path], threads: int | None, runs: int, device: str | None,
                     remote_python: str, ssh_config: Path | None, benchmark_binary: Path | None, as_json: bool) -> None:
    """`benchmark LM.tflite --on ssh://...`: the device's own edgecompress times prefill and decode there."""
    from edgecompress.errors import UserError
    from edgecompress.remote.session import benchmark_lm_over_ssh
    from edgecompress.remote.ssh import parse_target

    if not on.startswith("ssh://"):
        raise UserError("language models are measured on a device over --on ssh:// only (TFLite's benchmark_model, "
                        "what --on adb runs, has no prefill and decode loop): use ssh://USER@HOST")
    for flag, value in (("--device", device), ("--benchmark-binary", benchmark_binary)):
        if value is not None:
            raise UserError(f"{flag} and --on conflict for language models: --on measures the device itself; drop {flag}")
    run = benchmark_lm_over_ssh(models, parse_target(on, ssh_config), remote_python, threads or 1, runs)
    if as_json:
        click.echo(to_json(run.to_dict()))
        return
    head = key_values(run.identity.pairs(), title=f"MEASURED on {run.target} (figures measured there, not estimated)")
    from edgecompress.benchmark import LMBenchmarkResult

    click.echo(head + "\n\n" + render_lm([LMBenchmarkResult(m) for m in run.measurements], where=run.target))


def render_lm(results: list, where: str = "this host") -> str:
    ms = [r.measurement for r in results]
    rows = [[Path(m.model).name, m.threads, m.prefill_length, m.context, m.prefill_ms.p50, m.prefill_tokens_per_s,
             m.decode_ms.p50, m.decode_tokens_per_s, m.time_to_first_token_ms, m.peak_rss_mb, m.size_bytes] for m in ms]
    parts = [table(["model", "threads", "prefill tokens", "context", "prefill p50 ms", "prefill tok/s", "decode p50 ms",
                    "decode tok/s", "first token ms", "peak RSS MB", "size B"], rows,
                   title=f"Language models on {where} ({ms[0].runtime}): a whole prefill call, then one decode step "
                         "at a time")]
    devices = [(Path(r.measurement.model).name, r.device) for r in results if r.device is not None]
    if devices:
        d0 = devices[0][1]
        rows = [[name, d.bytes_per_token, d.roofline_tokens_per_s, d.compute_tokens_per_s, d.estimated_tokens_per_s,
                 d.bound + (" (compute side OUTSIDE THE FIT)" if d.outside_fit else "")] for name, d in devices]
        limit = f"{d0.bandwidth_gbs:g} GB/s peak" if d0.bandwidth_gbs else "no bandwidth in the profile"
        parts.append(table(["model", "bytes per token", "roofline tok/s", "compute est. tok/s", "ESTIMATED tok/s",
                            "bound"], rows,
                           title=f"Decode on {d0.device} at {d0.threads} threads: the memory roofline ({limit}; every "
                                 "weight and the KV cache read per token) and the device fit's compute estimate"))
        parts += [f"note: {name}: no compute estimate: {d.unavailable}" for name, d in devices if d.unavailable]
    return "\n\n".join(parts)


def _benchmark_on(on: str | None, models: list[Path], options: Any, device: str | None, remote_python: str,
                  ssh_config: Path | None, benchmark_binary: Path | None, as_json: bool) -> None:
    """`benchmark --on DEVICE`: the SSH or adb path, its results labelled MEASURED."""
    from edgecompress.errors import UserError

    if on is None:
        raise UserError("--ssh-config and --benchmark-binary need --on DEVICE (ssh://USER@HOST or adb[:SERIAL])")
    if on == "adb" or on.startswith("adb:"):
        if device is not None:
            raise UserError("--device and --on adb conflict: --on measures the real device; drop --device")
        if ssh_config is not None:
            raise UserError("--ssh-config is for --on ssh://...; drop it with --on adb")
        from edgecompress.remote.adb import benchmark_over_adb

        run = benchmark_over_adb(models, options, on.partition(":")[2] or None, benchmark_binary)
    else:
        if benchmark_binary is not None:
            raise UserError("--benchmark-binary is for --on adb; over ssh the device runs edgecompress itself")
        from edgecompress.devices.profiles import load_profile
        from edgecompress.remote.session import benchmark_over_ssh
        from edgecompress.remote.ssh import parse_target

        # --device names the profile these measurements belong to (what `devices calibrate NAME
        # --from-measurements` refits): the figures themselves are the device's, never estimated
        name = None if device is None else load_profile(device).name
        run = benchmark_over_ssh(models, options, parse_target(on, ssh_config), remote_python, device_name=name)
    if as_json:
        click.echo(to_json(run.to_dict()))
    else:
        head = key_values(run.identity.pairs(), title=f"MEASURED on {run.target} (figures measured there, not estimated)")
        click.echo(head + "\n\n" + render(run.results))
    _exit_if_failed(run.results, as_json)


def _exit_if_failed(results: list, as_json: bool) -> None:
    """Exit 1 when any model failed to run, pointing at its error."""
    from edgecompress.progress import note

    failed = [r for r in results if r.measurement.error]
    if failed:
        note(f"{len(failed)} of {len(results)} model(s) failed to run: see the error {'field' if as_json else 'lines'}")
        sys.exit(1)


COMMANDS = [benchmark_command]
