"""A device's estimate refitted from the user's own measurements of it (the measurement store, store.py).

Which measurements belong to a device: those the store keeps under its name (a sweep's [devices.NAME] with
`on`, or `benchmark --on ssh://... --device NAME`), or, with ON, every measurement made at that address.
The latest measurement per model and thread count counts once.

Each model is timed again on this host (edgecompress.measure, at the device's threads capped at the host's
cores, the device run's XNNPACK setting) from the path the store recorded, when the file is still there with
the same sha256; other models are skipped and said so. The rule is the published fit's, by its functions (devices/estimate.py):
device ms = k x host ms^e x GMACs^(1-e), k the geometric mean of device ms / cost per precision (of the
other precision's points when a precision has none), e from the same EXPONENTS by leave-one-out. Host and
device are compared at the device run's thread count (the host's capped at its cores); unlike the published
fit, k is not moved across thread counts, so measure at the threads the estimates are for.

The leave-one-out is nested, as the published one: each measured point is predicted by a fit (e included) of
the other measured points only. "Before" is the published-figure fit predicting the same points. The refit is
saved per device and host (devices/measured_fit.py) and later estimates for the device use it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from edgecompress.devices.calibrate import current_host, host_cores
from edgecompress.devices.estimate import best_exponent, cost, errors_within, geomean
from edgecompress.devices.measured_fit import MeasuredFit, save_measured_fit
from edgecompress.devices.profiles import DeviceProfile, load_profile
from edgecompress.errors import UserError
from edgecompress.measure import MeasureOptions, measure
from edgecompress.progress import note
from edgecompress.remote.store import load_measurements

MIN_POINTS = 3  # a nested leave-one-out needs two points to fit each held-out one from (and e from)


@dataclass(frozen=True)
class RefitPoint:
    model: str
    precision: str  # "float" or "int8"
    threads: int  # the device's
    macs: int
    host_ms: float  # p50 on this host now
    device_ms: float  # p50 measured on the device
    before_ms: float | None  # the published-figure fit's prediction (None: it has none for this point)
    after_ms: float | None  # the nested leave-one-out prediction from the other measured points


@dataclass(frozen=True)
class Score:
    """How well a fit predicted the measured points (a point it could not predict counts as a miss)."""

    points: int
    within_20pct: float
    within_10pct: float
    median_abs_error: float | None  # over the points it predicted


@dataclass
class Refit:
    device: str
    published: bool  # the profile has published figures (else the refit is its only calibration)
    points: list[RefitPoint]
    skipped: list[tuple[str, str]]  # (model, why)
    before: Score | None  # None without published figures
    after: Score
    fit: MeasuredFit
    saved: Path

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "saved": str(self.saved)}


def _score(predicted: Sequence[float | None], actual: Sequence[float]) -> Score:
    errors = [None if p is None else p / a - 1.0 for p, a in zip(predicted, actual)]
    hits = [abs(e) for e in errors if e is not None]
    return Score(len(actual), errors_within(errors, 0.2) or 0.0, errors_within(errors, 0.1) or 0.0,
                 statistics.median(hits) if hits else None)


def _k(points: Sequence[RefitPoint], precision: str, exponent: float) -> float:
    same = [p for p in points if p.precision == precision] or list(points)
    return geomean([p.device_ms / cost(p.host_ms, p.macs, exponent) for p in same])


def _predict(point: RefitPoint, others: Sequence[RefitPoint], exponent: float) -> float:
    return _k(others, point.precision, exponent) * cost(point.host_ms, point.macs, exponent)


def choose_exponent(points: Sequence[RefitPoint]) -> float:
    """e by the published fit's rule (estimate.best_exponent), over a leave-one-out of POINTS."""
    return best_exponent(lambda e: [math.log(_predict(p, [q for q in points if q is not p], e) / p.device_ms)
                                    for p in points])


def _nested(points: list[RefitPoint]) -> list[float]:
    """Each point predicted by the fit of the others, e chosen on the others too."""
    out = []
    for p in points:
        others = [q for q in points if q is not p]
        out.append(_predict(p, others, choose_exponent(others)))
    return out


def _selected(profile: DeviceProfile, on: str | None) -> list[dict[str, Any]]:
    """The store's measurements of PROFILE (or at address ON): the latest per model file and thread count."""
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for entry in load_measurements():
        if (entry.get("target") == on) if on else (entry.get("device_name") == profile.name):
            latest[(entry["model"]["sha256"], entry["settings"]["threads"])] = entry
    return list(latest.values())


def _host_ms(entry: dict[str, Any], runs: int, min_secs: float) -> tuple[float | None, str]:
    """This host's p50 for ENTRY's model (same file, by sha256), or None and why not."""
    path = entry["model"].get("path")
    if not path or not Path(path).is_file():
        return None, f"the file is no longer at {path}" if path else "measured before the store kept model paths"
    if hashlib.sha256(Path(path).read_bytes()).hexdigest() != entry["model"]["sha256"]:
        return None, f"{path} changed since it was measured (its sha256 differs)"
    options = MeasureOptions(threads=min(entry["settings"]["threads"], host_cores()), runs=runs, min_secs=min_secs,
                             use_xnnpack=entry["settings"].get("xnnpack", True))
    m = measure(path, options)
    if m.error or m.latency_ms is None:
        return None, f"timing it on this host failed: {m.error}"
    return m.latency_ms.p50, ""


def _published_predictions(profile: DeviceProfile, points: list[RefitPoint]) -> list[float | None] | None:
    """The published-figure fit's predictions of POINTS (None when the profile has no published figures)."""
    from edgecompress.devices.estimate import fit_for
    from edgecompress.devices.references import CalibrationUnavailable

    if not profile.references:
        return None
    try:
        fit = dataclasses.replace(fit_for(profile), measured=None)  # the published figures alone, not an older refit
    except CalibrationUnavailable as exc:
        note(f"no published-figure fit to compare with: {exc}")
        return None
    out: list[float | None] = []
    for p in points:
        try:
            out.append(fit.estimate(p.host_ms, 1.0, p.precision == "int8", p.threads, p.macs).p50_ms)
        except UserError:
            out.append(None)
    return out


def refit_from_measurements(device: str, on: str | None = None, runs: int = 20, min_secs: float = 0.5) -> Refit:
    """Refit DEVICE (a profile name or PROFILE.toml) from its measurements in the store (see the module doc)."""
    profile = load_profile(device)
    entries = _selected(profile, on)
    which = f"at {on}" if on else f"of {profile.name}"
    points: list[RefitPoint] = []
    skipped: list[tuple[str, str]] = []
    for i, entry in enumerate(entries, 1):
        name = entry["model"]["name"]
        note(f"[{i}/{len(entries)}] timing {name} on this host")
        host_ms, why = _host_ms(entry, runs, min_secs)
        if host_ms is None:
            note(f"skipped {name}: {why}")
            skipped.append((name, why))
            continue
        points.append(RefitPoint(name, "int8" if entry["model"]["integer"] else "float", entry["settings"]["threads"],
                                 entry["model"]["macs"], host_ms, entry["figures_ms"]["p50"], None, None))
    if len(points) < MIN_POINTS:
        raise UserError(
            f"{len(points)} usable measurement(s) {which} ({len(skipped)} skipped), a refit needs {MIN_POINTS}: measure "
            f"more models with `edgecompress benchmark MODEL --on ssh://USER@HOST --device {profile.name}`")
    if any(not p.macs for p in points):
        raise UserError("a measured model has no MAC count (edgecompress inspect finds none): the rule needs it")
    before = _published_predictions(profile, points)
    after = _nested(points)
    points = [dataclasses.replace(p, before_ms=b, after_ms=a)
              for p, b, a in zip(points, before or [None] * len(points), after)]
    actual = [p.device_ms for p in points]
    score = _score(after, actual)
    exponent = choose_exponent(points)
    precisions = sorted({p.precision for p in points})
    fit = MeasuredFit(profile.name, current_host().slug, exponent, {pr: _k(points, pr, exponent) for pr in precisions},
                      {pr: sum(p.precision == pr for p in points) for pr in precisions}, score.within_20pct)
    saved = save_measured_fit(fit, current_host())
    return Refit(profile.name, bool(profile.references), points, skipped,
                 None if before is None else _score(before, actual), score, fit, saved)
