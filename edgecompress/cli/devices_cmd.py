"""`edgecompress devices list|show|calibrate`: the device profiles and the host calibration of their estimates."""
from __future__ import annotations

import dataclasses
from typing import Any

import click

from edgecompress.cli.options import emit, json_option
from edgecompress.errors import UserError


@click.group("devices")
def devices() -> None:
    """Device profiles (Raspberry Pi, Android) used by `benchmark --device`."""


def _profile_dict(profile: Any) -> dict[str, Any]:
    return {**dataclasses.asdict(profile), "memory_budget_mb": profile.memory_budget_mb}


def _published(profile: Any) -> str:
    if profile.derived_from:
        return f"derived from {profile.derived_from.profile}"
    return f"{len(profile.references)} published"


@devices.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """List the shipped device profiles."""
    from edgecompress.devices.profiles import list_profiles, load_profile
    from edgecompress.tables import table

    profiles = [load_profile(name) for name in list_profiles()]

    def render(_: Any) -> str:
        rows = [
            [p.name, p.arch, f"{p.cores} ({p.big_cores} big)", p.clock_mhz, p.ram_mb, p.memory_budget_mb, p.threads,
             f"{p.runtime.name} {p.runtime.version}", _published(p)]
            for p in profiles
        ]
        headers = ["name", "arch", "cores", "clock MHz", "RAM MB", "budget MB", "threads", "runtime", "reference latencies"]
        return table(headers, rows, title="Device profiles (edgecompress devices show NAME for details)")

    emit([_profile_dict(p) for p in profiles], as_json, render)


def _calibration_rows(profile: Any, timings: Any) -> list[list[Any]]:
    from edgecompress.devices.estimate import fit_for, share_within

    fit = fit_for(profile, timings)  # as benchmark --device fits it
    rows = []
    for precision in ("float", "int8"):
        factor = fit.factor(precision, profile.threads, fit.exponent)  # for a model with a MAC count
        rows.append([
            precision,
            factor.value if factor else None,
            factor.rule if factor else "not calibrated",
            "derived, not scored" if profile.is_derived else share_within([p for p in fit.loo if f"/{precision}/" in p.reference], 0.2),
        ])
    return rows


@devices.command("show")
@click.argument("device")
@json_option
def show_cmd(device: str, as_json: bool) -> None:
    """Show one profile: a shipped NAME or the PATH of your own .toml profile."""
    from edgecompress.devices.calibrate import load_timings
    from edgecompress.devices.profiles import load_profile
    from edgecompress.tables import key_values, table

    profile = load_profile(device)
    timings = load_timings()

    def render(_: Any) -> str:
        head = key_values(
            [
                ("name", profile.name),
                ("description", profile.description),
                ("arch", profile.arch),
                ("cores (big)", f"{profile.cores} ({profile.big_cores})"),
                ("clock MHz", profile.clock_mhz),
                ("RAM MB", profile.ram_mb),
                ("OS reserve MB", f"{profile.os_reserve_mb}: {profile.os_reserve_note}"),
                ("memory budget MB", profile.memory_budget_mb),
                ("threads", profile.threads),
                ("runtime", f"{profile.runtime.name} {profile.runtime.version}"),
            ]
            + ([("derived from", f"{profile.derived_from.profile} x {profile.derived_from.scale:g}: {profile.derived_from.reason}")]
               if profile.derived_from else []),
            title=f"Device {profile.name}" + (f" ({profile.path})" if profile.path else ""),
        )
        refs = table(
            ["model", "precision", "threads", "latency ms", "kind", "source"],
            [[r.model, r.precision, r.threads, r.latency_ms, "derived" if r.derived else "published", r.source]
             for r in profile.references],
            title="Reference latencies (calibrate the estimates)",
        )
        calib = table(
            ["precision", "k (see rule)", "rule", "leave-one-out within 20%"],
            _calibration_rows(profile, timings),
            title=f"Calibration on this host ({timings.host.cpu}, {timings.host.cores} cores; "
            "`edgecompress devices calibrate` to measure)",
        )
        return "\n\n".join([head, refs, calib])

    emit(_profile_dict(profile), as_json, render)


@devices.command("calibrate")
@click.argument("name", required=False)
@click.option("--device", "device", default=None, help="One profile (NAME or PATH); default: all shipped profiles.")
@click.option(
    "--reference", "models", multiple=True,
    help="Only these reference architectures (repeatable, e.g. mobilenet_v3_small); default: all the profiles cite.",
)
@click.option("--skip-large", is_flag=True,
              help="Leave out the large references (Inception V4, Inception-ResNet-V2): minutes quicker, rougher Pixel estimates.")
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Time the references round-robin N times and keep the fastest (steadier on a busy host).")
@click.option("--from-measurements", is_flag=True,
              help="Refit NAME's factor from the models you measured on it (benchmark --on ssh:// --device NAME, or a "
                   "recipe's [devices.NAME] on = ...) and print the leave-one-out error before and after.")
@click.option("--on", "on", metavar="ssh://USER@HOST[:PORT]", default=None,
              help="With --from-measurements: the measurements made at this address, whatever device they were named for.")
@json_option
def calibrate_cmd(name: str | None, device: str | None, models: tuple[str, ...], skip_large: bool, rounds: int,
                  from_measurements: bool, on: str | None, as_json: bool) -> None:
    """(Re)measure the reference models on this host: the host side of the device estimates.

    With --from-measurements: refit NAME (a profile or PROFILE.toml) from your own device measurements instead."""
    if name is not None and device is not None and name != device:
        raise UserError(f"two devices given ({name} and --device {device}): give one")
    device = name or device
    if from_measurements or on is not None:
        if on is not None and not from_measurements:
            raise UserError("--on selects measurements to refit from: add --from-measurements")
        if device is None:
            raise UserError("--from-measurements refits one device: name it (edgecompress devices calibrate NAME "
                            "--from-measurements)")
        if models or skip_large or rounds != 1:
            raise UserError("--reference, --skip-large and --rounds time the reference models: drop them with "
                            "--from-measurements")
        _refit(device, on, as_json)
        return
    from edgecompress.devices.calibrate import calibrate
    from edgecompress.devices.estimate import fit_for, share_within
    from edgecompress.devices.profiles import list_profiles, load_profile
    from edgecompress.tables import table

    profiles = [load_profile(device)] if device else [load_profile(n) for n in list_profiles()]
    run = calibrate(profiles, set(models) or None, force=True, large=not skip_large, rounds=rounds)
    summary = []
    for profile in profiles:
        loo = fit_for(profile, run.timings).loo
        summary.append({
            "name": profile.name,
            "derived": profile.is_derived,
            "leave_one_out_points": len(loo),
            "leave_one_out_within_10pct": share_within(loo, 0.1),
            "leave_one_out_within_20pct": share_within(loo, 0.2),
        })
    result = {
        "host": dataclasses.asdict(run.timings.host),
        "measured": [{"model": m, "precision": p, "threads": t, "min_ms": run.timings.ms[(m, p, t)]} for m, p, t in run.measured],
        "build_seconds": run.build_seconds,
        "measure_seconds": run.measure_seconds,
        "devices": summary,
    }

    def render(_: Any) -> str:
        measured = table(["reference", "precision", "host threads", "host min ms"],
                         [[m["model"], m["precision"], m["threads"], m["min_ms"]] for m in result["measured"]],
                         title=f"Host timings ({run.timings.host.cpu}, {run.timings.host.cores} cores, "
                         f"{run.timings.host.runtime} {run.timings.host.runtime_version}); measuring took {run.measure_seconds:.0f} s")
        devices_table = table(
            ["device", "points", "within 10%", "within 20%"],
            [[d["name"] + (" (derived)" if d["derived"] else ""), d["leave_one_out_points"],
              d["leave_one_out_within_10pct"], d["leave_one_out_within_20pct"]] for d in summary],
            title="Leave-one-out over the published reference latencies (share of points)",
        )
        return measured + "\n\n" + devices_table

    emit(result, as_json, render)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def _refit(device: str, on: str | None, as_json: bool) -> None:
    from edgecompress.remote.refit import refit_from_measurements
    from edgecompress.tables import table

    refit = refit_from_measurements(device, on)

    def render(_: Any) -> str:
        def err(predicted: float | None, actual: float) -> str:
            return "-" if predicted is None else f"{predicted / actual - 1:+.0%}"

        rows = [[p.model, p.precision, p.threads, p.macs, p.host_ms, p.device_ms,
                 p.before_ms, err(p.before_ms, p.device_ms), p.after_ms, err(p.after_ms, p.device_ms)]
                for p in refit.points]
        points = table(["model", "precision", "threads", "MACs", "host p50 ms", "device p50 ms",
                        "published fit ms", "error", "refit ms", "error"], rows,
                       title=f"Your measurements of {refit.device}: each predicted by a fit without it (nested leave-one-out)")
        scores = [(what, s) for what, s in (("before (published figures)", refit.before), ("after (your measurements)", refit.after))
                  if s is not None]
        summary = table(["fit", "points", "within 20%", "within 10%", "median abs error"],
                        [[what, s.points, _pct(s.within_20pct), _pct(s.within_10pct), _pct(s.median_abs_error)]
                         for what, s in scores], title="Leave-one-out error over your measured points")
        f = refit.fit
        lines = [points, "", summary, ""]
        if not refit.published:
            lines.append(f"{refit.device} has no published figures: it is calibrated from your measurements alone.")
        lines += [f"{refit.device} is now calibrated from {sum(f.points.values())} of your measurements: "
                  + "; ".join(f"{pr} k = {k:.3g}" for pr, k in f.k.items()) + f", e = {f.exponent:.2f} "
                  f"(saved in {refit.saved}; later estimates for {refit.device} use it)"]
        lines += [f"skipped {m}: {why}" for m, why in refit.skipped]
        return "\n".join(lines)

    emit(refit, as_json, render)


COMMANDS = [devices]
