"""Estimated device latency: the host measurement scaled by a per-device, per-precision factor.

factor = geometric mean over the device's references of (device ms / host ms), taken in this order:
  1. references of the same precision at the device thread count the estimate is for;
  2. else references of the same precision at other thread counts;
  3. else the device's factor for the other precision times the int8-vs-float shift, the geometric mean of
     (int8 ratio / float ratio) over same-model float/int8 pairs of the published profiles
     (e.g. a phone with only float figures gets its int8 factor from the Pi and Pixel int8 pairs).
The geometric mean because ratios multiply: one slow outlier should not dominate. Every estimate says which
rule and which references made it, and carries the device's leave-one-out score (calibrate without each
published point, predict it): the measured accuracy, not a claimed one. It is always an estimate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import UserError
from .calibrate import HostTimings, ensure_timings
from .profiles import DeviceProfile, ReferenceLatency, measured_profiles, precision_pairs

OTHER = {"float": "int8", "int8": "float"}


@dataclass(frozen=True)
class Factor:
    value: float
    rule: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class LooPoint:
    device: str
    reference: str
    published_ms: float
    predicted_ms: float | None
    rule: str

    @property
    def error(self) -> float | None:
        return None if self.predicted_ms is None else self.predicted_ms / self.published_ms - 1.0


@dataclass(frozen=True)
class DeviceEstimate:
    device: str
    precision: str
    threads: int
    p50_ms: float
    p90_ms: float
    factor: float
    rule: str
    references: tuple[str, ...]
    derived: bool  # the references are derived from another device, not published for this one
    leave_one_out_within_20pct: float | None  # None for derived profiles: nothing published to check against
    leave_one_out_points: int
    kind: str = "estimate"


def _geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _ratios(refs: Sequence[ReferenceLatency], timings: HostTimings, exclude: ReferenceLatency | None) -> list[tuple[ReferenceLatency, float]]:
    out = []
    for ref in refs:
        host_ms = timings.for_reference(ref)
        if ref != exclude and host_ms:
            out.append((ref, ref.latency_ms / host_ms))
    return out


def precision_shift(
    precision: str, profiles: Sequence[DeviceProfile], timings: HostTimings, exclude: ReferenceLatency | None = None
) -> Factor | None:
    """How much PRECISION's device/host ratio differs from the other precision's, from same-model pairs."""
    shifts, used = [], []
    for f_ref, i_ref in precision_pairs(list(profiles)):
        f_host, i_host = timings.for_reference(f_ref), timings.for_reference(i_ref)
        if exclude in (f_ref, i_ref) or not (f_host and i_host):
            continue
        int8_over_float = (i_ref.latency_ms / i_host) / (f_ref.latency_ms / f_host)
        shifts.append(int8_over_float if precision == "int8" else 1.0 / int8_over_float)
        used.append(f"{f_ref.model}/{f_ref.threads}t")
    if not shifts:
        return None
    return Factor(_geomean(shifts), f"{precision}/{OTHER[precision]} shift from {len(shifts)} float/int8 pair(s)", tuple(used))


def fit_factor(
    profile: DeviceProfile,
    precision: str,
    threads: int,
    timings: HostTimings,
    pair_profiles: Sequence[DeviceProfile],
    exclude: ReferenceLatency | None = None,
) -> Factor | None:
    """The device/host factor for PRECISION at THREADS device threads, by the rules in the module docstring."""
    own = _ratios(profile.references, timings, exclude)
    same = [(r, x) for r, x in own if r.precision == precision]
    at_threads = [(r, x) for r, x in same if r.threads == threads]
    if at_threads or same:
        chosen = at_threads or same
        where = f"at {threads} threads" if at_threads else "at other thread counts"
        return Factor(
            _geomean([x for _, x in chosen]),
            f"geometric mean of {len(chosen)} {precision} reference(s) {where}",
            tuple(r.key for r, _ in chosen),
        )
    if not any(r.precision == OTHER[precision] for r, _ in own):
        return None
    base = fit_factor(profile, OTHER[precision], threads, timings, pair_profiles, exclude)
    shift = precision_shift(precision, [p for p in pair_profiles if p.name != profile.name], timings, exclude)
    if base is None or shift is None:
        return None
    return Factor(base.value * shift.value, f"{base.rule}, times the {shift.rule}", base.references + shift.references)


def leave_one_out(
    profile: DeviceProfile, timings: HostTimings, pair_profiles: Sequence[DeviceProfile] | None = None
) -> list[LooPoint]:
    """Predict each published reference of PROFILE from a calibration without it (derived ones are skipped)."""
    pair_profiles = measured_profiles() if pair_profiles is None else pair_profiles
    points = []
    for ref in profile.references:
        host_ms = timings.for_reference(ref)
        if ref.derived or not host_ms:
            continue
        factor = fit_factor(profile, ref.precision, ref.threads, timings, pair_profiles, exclude=ref)
        predicted = factor.value * host_ms if factor else None
        points.append(LooPoint(profile.name, ref.key, ref.latency_ms, predicted, factor.rule if factor else "no other reference"))
    return points


def share_within(points: Sequence[LooPoint], tolerance: float) -> float | None:
    """Share of POINTS predicted within TOLERANCE (0.2 = 20%); a point that could not be predicted counts as a miss."""
    if not points:
        return None
    return sum(1 for p in points if p.error is not None and abs(p.error) <= tolerance) / len(points)


def estimate_for(
    profile: DeviceProfile,
    measurement_p50_ms: float,
    measurement_p90_ms: float,
    is_integer: bool,
    threads: int | None = None,
    timings: HostTimings | None = None,
) -> DeviceEstimate:
    """Estimate PROFILE's latency for a model measured on this host (with the device's thread count, capped).

    timings defaults to this host's cached calibration, measured on demand (which needs TensorFlow to build
    the references: CalibrationUnavailable otherwise).
    """
    timings = timings if timings is not None else ensure_timings(profile)
    precision = "int8" if is_integer else "float"
    threads = threads or profile.threads
    pair_profiles = measured_profiles()
    factor = fit_factor(profile, precision, threads, timings, pair_profiles)
    if factor is None:
        raise UserError(
            f"no calibrated reference for {profile.name} ({precision}): run `edgecompress devices calibrate --device {profile.name}`"
        )
    loo = leave_one_out(profile, timings, pair_profiles)
    return DeviceEstimate(
        device=profile.name,
        precision=precision,
        threads=threads,
        p50_ms=measurement_p50_ms * factor.value,
        p90_ms=measurement_p90_ms * factor.value,
        factor=factor.value,
        rule=factor.rule,
        references=factor.references,
        derived=profile.is_derived,
        leave_one_out_within_20pct=share_within(loo, 0.2),
        leave_one_out_points=len(loo),
    )


def device_summary(
    profile: DeviceProfile, estimate: DeviceEstimate | None, threads_used: int, threads_capped: bool
) -> dict[str, Any]:
    """The `device` object of `benchmark --json` (issue 3); estimated_latency_ms is None without calibration."""
    return {
        "name": profile.name,
        "threads_used": threads_used,
        "threads_capped": threads_capped,
        "memory_budget_mb": profile.memory_budget_mb,
        "estimated_latency_ms": None if estimate is None else {"p50": estimate.p50_ms, "p90": estimate.p90_ms, "kind": "estimate"},
        "calibration": None
        if estimate is None
        else {
            "references": list(estimate.references),
            "rule": estimate.rule,
            "factor": estimate.factor,
            "derived": estimate.derived,
            "leave_one_out_within_20pct": estimate.leave_one_out_within_20pct,
        },
    }
