"""Estimated device latency from the host measurement, the model's MACs and the thread count.

The rule, fitted per device and precision (float vs integer):

    device ms = k x cost,   cost = host ms ^ e x GMACs ^ (1 - e)

with e one exponent shared by all devices. e = 1 is plain host scaling; e < 1 lets the MAC count pull
against the host's own speed, which differs by architecture between this x86 host and ARM devices (the
host runs MobileNet v1 about as fast as v2, ARM devices 1.4-1.7x slower: the host is relatively better at
v1's dense 1x1 convolutions). e is chosen from EXPONENTS by leave-one-out over all published points (the
smallest mean squared log error); the model's MACs come from `edgecompress inspect` (no TensorFlow).

k = geometric mean over the device's references of (device ms / cost), each moved to the estimate's
thread count by Amdahl's law (threads.py): x slowdown_device(n) / slowdown_device(n_ref) on the device
side, and the host's cost likewise for its own thread counts. A device without references of the
precision takes its other precision's k times the int8-vs-float shift: the geometric mean of
(int8 ratio / float ratio) over same-model float/int8 pairs of the other published profiles.
The geometric mean because ratios multiply: one slow outlier should not dominate.

Every estimate says which rule and references made it, and carries the device's NESTED leave-one-out
score: for each published point, everything (the exponent, the thread fraction, the shift, k) is fitted
on the other points only, and the point is predicted. The measured accuracy, not a claimed one.

Everything that does not depend on the model (e, the thread scaling, the nested leave-one-out, k per
precision and thread count) is a DeviceFit, made by fit_for() once per profile and host timings in a
process: a benchmark of many models, or a sweep of many variants, fits each device once.

A device the user has measured models on may carry a refit (measured_fit.py, made by `edgecompress devices
calibrate NAME --from-measurements`): its k (and e) per precision replace the published fit's, and the estimate
says "calibrated from N of your measurements".

Only the p50 goes through the rule (a fit of typical latencies); the p90 is the estimated p50 times a
p90/p50 spread measured on this host, which the caller chooses (edgecompress.benchmark takes it from a
one-thread run, see there).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from edgecompress.errors import UserError
from edgecompress.progress import note
from edgecompress.devices.calibrate import Host, HostTimings, TimingKey, ensure_timings
from edgecompress.devices.measured_fit import MeasuredFit, load_measured_fit
from edgecompress.devices.profiles import DeviceProfile, ReferenceLatency, measured_profiles
from edgecompress.devices.references import REFERENCE_MODELS
from edgecompress.devices.threads import ThreadScaling, thread_scaling

OTHER = {"float": "int8", "int8": "float"}
EXPONENTS = tuple(round(0.40 + 0.05 * i, 2) for i in range(13))  # 0.40 .. 1.00
Excluded = frozenset[tuple[str, str]]  # (device name, reference key) left out of a fit


@dataclass(frozen=True)
class Factor:
    value: float  # k
    rule: str
    references: tuple[str, ...]
    exponent: float = 1.0


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


# A model more than this many times faster or slower on the host than every reference of the fit is outside it.
OUTSIDE_FIT = 10.0


@dataclass(frozen=True)
class DeviceEstimate:
    device: str
    precision: str
    threads: int  # the device's threads the estimate is for
    host_threads: int  # the host threads of the measurement it scales (threads capped at the host's cores)
    p50_ms: float
    p90_ms: float
    spread: float  # p90 / p50 of the host run the p90 comes from
    factor: float  # k of the rule
    exponent: float  # e of the rule (1.0 without the model's MACs)
    rule: str
    references: tuple[str, ...]
    derived: bool  # the references are derived from another device, not published for this one
    leave_one_out_within_20pct: float | None  # None for derived profiles: nothing published to check against
    leave_one_out_points: int
    kind: str = "estimate"
    # Set when the model is far faster or slower on this host than every model the fit rests on: the estimate
    # is an extrapolation whose error nothing measured, so no leave-one-out score is claimed for it.
    outside_fit: str | None = None

    def calibration(self) -> dict[str, object]:
        """What the estimate rests on, as the `calibration` object of the JSON outputs."""
        return {
            "references": list(self.references),
            "rule": self.rule,
            "factor": self.factor,
            "exponent": self.exponent,
            "derived": self.derived,
            "leave_one_out_within_20pct": self.leave_one_out_within_20pct,
            "outside_fit": self.outside_fit,
        }


@dataclass(frozen=True)
class _Point:
    """A reference latency with its host side."""

    device: str
    ref: ReferenceLatency
    host_ms: float
    host_threads: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.device, self.ref.key)


def cost(host_ms: float, macs: int | None, exponent: float) -> float:
    """host ms ^ e x GMACs ^ (1 - e): the model's size on the device's scale, as the host sees it."""
    if exponent == 1.0:
        return host_ms
    if not macs:
        raise ValueError("the MAC count is needed for an exponent below 1")
    return host_ms**exponent * (macs / 1e9) ** (1.0 - exponent)


def geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def best_exponent(log_errors: Callable[[float], Sequence[float]]) -> float:
    """The e of EXPONENTS whose leave-one-out LOG_ERRORS(e) (log predicted / actual per predicted point) have the
    smallest sum of squares; 1 when no point can be predicted. The published fit and a refit from the user's
    own measurements both choose e this way."""
    if not log_errors(1.0):
        return 1.0
    return min(EXPONENTS, key=lambda e: sum(x * x for x in log_errors(e)))


def errors_within(errors: Sequence[float | None], tolerance: float) -> float | None:
    """Share of relative ERRORS within TOLERANCE (0.2 = 20%); None (a point not predicted) counts as a miss."""
    if not errors:
        return None
    return sum(1 for e in errors if e is not None and abs(e) <= tolerance) / len(errors)


def _points(profile: DeviceProfile, timings: HostTimings, exclude: Excluded = frozenset()) -> list[_Point]:
    out = []
    for ref in profile.references:
        host_ms = timings.for_reference(ref)
        if host_ms and (profile.name, ref.key) not in exclude:
            out.append(_Point(profile.name, ref, host_ms, timings.host_threads(ref.threads)))
    return out


def _ratio(pt: _Point, exponent: float) -> float:
    return pt.ref.latency_ms / cost(pt.host_ms, REFERENCE_MODELS[pt.ref.model].macs, exponent)


def _moved(pt: _Point, exponent: float, threads: int, host_threads: int, scaling: ThreadScaling) -> float:
    """PT's device/cost ratio as if measured at THREADS device threads and HOST_THREADS host threads."""
    device = scaling.device_slowdown(threads) / scaling.device_slowdown(pt.ref.threads)
    host = (scaling.host_slowdown(host_threads) / scaling.host_slowdown(pt.host_threads)) ** exponent
    return _ratio(pt, exponent) * device / host


def precision_shift(
    precision: str, profiles: Sequence[DeviceProfile], timings: HostTimings, exclude: Excluded, exponent: float
) -> Factor | None:
    """How much PRECISION's device/cost ratio differs from the other precision's, from same-model pairs."""
    shifts, used = [], []
    for profile in profiles:
        if profile.is_derived:
            continue
        by_key = {(pt.ref.model, pt.ref.threads, pt.ref.precision): pt for pt in _points(profile, timings, exclude)}
        for (model, threads, prec), f_pt in by_key.items():
            i_pt = by_key.get((model, threads, "int8"))
            if prec != "float" or i_pt is None:
                continue
            int8_over_float = _ratio(i_pt, exponent) / _ratio(f_pt, exponent)
            shifts.append(int8_over_float if precision == "int8" else 1.0 / int8_over_float)
            used.append(f"{profile.name}:{model}/{threads}t")
    if not shifts:
        return None
    return Factor(geomean(shifts), f"{precision}/{OTHER[precision]} shift from {len(shifts)} float/int8 pair(s)", tuple(used))


def _pool(profile: DeviceProfile, pair_profiles: Sequence[DeviceProfile]) -> list[DeviceProfile]:
    """The published profiles a fit may learn shared quantities from, with PROFILE itself when it is not shipped."""
    return list(pair_profiles) + ([] if any(p.name == profile.name for p in pair_profiles) else [profile])


def fit_factor(
    profile: DeviceProfile,
    precision: str,
    threads: int,
    timings: HostTimings,
    pair_profiles: Sequence[DeviceProfile],
    exclude: Excluded = frozenset(),
    exponent: float = 1.0,
    scaling: ThreadScaling | None = None,
) -> Factor | None:
    """k for PRECISION at THREADS device threads with exponent e, by the rules in the module docstring;
    SCALING, when given, is the thread scaling already fitted on the same points."""
    pool = _pool(profile, pair_profiles)
    scaling = scaling or thread_scaling([p for p in pool if not p.is_derived], timings, exclude)
    host_threads = timings.host_threads(threads)
    own = _points(profile, timings, exclude)
    same = [pt for pt in own if pt.ref.precision == precision]
    chosen = same or own
    if not chosen:
        return None
    k = geomean([_moved(pt, exponent, threads, host_threads, scaling) for pt in chosen])
    moved = sum(pt.ref.threads != threads for pt in chosen)
    form = "host ms" if exponent == 1.0 else f"host ms^{exponent:.2f} x GMACs^{1 - exponent:.2f}"
    rule = f"device ms = k x {form}; k from {len(chosen)} {chosen[0].ref.precision} reference(s)"
    if moved:
        rule += f" ({moved} moved to {threads} thread(s) by Amdahl's law, p={scaling.device_fraction:.2f} from {scaling.pairs} pair(s))"
    refs = tuple(pt.ref.key for pt in chosen)
    if same:
        return Factor(k, rule, refs, exponent)
    shift = precision_shift(precision, [p for p in pool if p.name != profile.name], timings, exclude, exponent)
    if shift is None:
        return None
    return Factor(k * shift.value, f"{rule}, times the {shift.rule}", refs + shift.references, exponent)


def _predict(profile: DeviceProfile, pt: _Point, timings: HostTimings, pool: Sequence[DeviceProfile],
             exclude: Excluded, exponent: float) -> tuple[float | None, str]:
    factor = fit_factor(profile, pt.ref.precision, pt.ref.threads, timings, pool, exclude | {pt.key}, exponent)
    if factor is None:
        return None, "no other reference"
    return factor.value * cost(pt.host_ms, REFERENCE_MODELS[pt.ref.model].macs, exponent), factor.rule


def choose_exponent(pool: Sequence[DeviceProfile], timings: HostTimings, exclude: Excluded = frozenset()) -> float:
    """The e of EXPONENTS with the smallest squared log error over a leave-one-out of the published points
    of POOL not in EXCLUDE (a nested leave-one-out passes the outer point there); 1 when none can be predicted."""
    points = [(p, pt) for p in pool if not p.is_derived for pt in _points(p, timings, exclude)]

    def log_errors(exponent: float) -> list[float]:
        predictions = [(_predict(profile, pt, timings, pool, exclude, exponent)[0], pt) for profile, pt in points]
        return [math.log(predicted / pt.ref.latency_ms) for predicted, pt in predictions if predicted]

    return best_exponent(log_errors)


def leave_one_out(
    profile: DeviceProfile,
    timings: HostTimings,
    pair_profiles: Sequence[DeviceProfile] | None = None,
    use_macs: bool = True,
) -> list[LooPoint]:
    """Predict each published reference of PROFILE from a fit without it, the exponent included (nested);
    without USE_MACS the exponent is 1 (host scaling and threads only). Derived references are skipped."""
    pool = _pool(profile, measured_profiles() if pair_profiles is None else pair_profiles)
    points = []
    for pt in _points(profile, timings):
        if pt.ref.derived:
            continue
        exponent = choose_exponent(pool, timings, frozenset({pt.key})) if use_macs else 1.0
        predicted, rule = _predict(profile, pt, timings, pool, frozenset(), exponent)
        points.append(LooPoint(profile.name, pt.ref.key, pt.ref.latency_ms, predicted, rule))
    return points


def share_within(points: Sequence[LooPoint], tolerance: float) -> float | None:
    """Share of POINTS predicted within TOLERANCE (0.2 = 20%); a point that could not be predicted counts as a miss."""
    return errors_within([p.error for p in points], tolerance)


@dataclass(frozen=True)
class DeviceFit:
    """PROFILE's fit on these host timings: everything an estimate needs but the model's own measurement."""

    profile: DeviceProfile
    timings: HostTimings
    pool: tuple[DeviceProfile, ...]  # the published profiles shared quantities are learned from
    exponent: float  # e for a model with a MAC count (1 when no point can be predicted from the others)
    scaling: ThreadScaling
    loo: tuple[LooPoint, ...]  # nested, the exponent chosen without each point
    loo_host_only: tuple[LooPoint, ...]  # e = 1: the rule for a model without a MAC count
    measured: MeasuredFit | None = None  # the refit from the user's own measurements, which takes precedence
    _factors: dict[tuple[str, int, float], Factor | None] = field(default_factory=dict, compare=False, repr=False)

    def factor(self, precision: str, threads: int, exponent: float) -> Factor | None:
        """k for PRECISION at THREADS device threads (memoised: one fit per precision and thread count)."""
        m = self.measured
        if m is not None and precision in m.k and exponent == m.exponent:
            return Factor(m.k[precision], m.rule(precision), (), exponent)
        key = (precision, threads, exponent)
        if key not in self._factors:
            self._factors[key] = fit_factor(self.profile, precision, threads, self.timings, self.pool,
                                            exponent=exponent, scaling=self.scaling)
        return self._factors[key]

    def estimate(
        self, host_p50_ms: float, spread: float, is_integer: bool, threads: int | None = None, macs: int | None = None
    ) -> DeviceEstimate:
        """The device's latency at THREADS (default: the profile's) for a model whose p50 on this host, at the
        host's share of those threads (capped at its cores), is HOST_P50_MS; its p90 is the p50 times SPREAD.

        MACS (the model's multiply-accumulates, from edgecompress.inspect) enables the exponent; without it
        the estimate is host scaling alone (e = 1) and its leave-one-out score is that rule's.
        """
        precision = "int8" if is_integer else "float"
        threads = threads or self.profile.threads
        refit = self.measured if self.measured is not None and precision in self.measured.k else None
        exponent = (refit.exponent if refit else self.exponent) if macs else 1.0
        factor = self.factor(precision, threads, exponent)
        if factor is None:
            raise UserError(
                f"no calibrated reference for {self.profile.name} ({precision}): "
                f"run `edgecompress devices calibrate --device {self.profile.name}`, or refit it from models "
                f"measured on it: `edgecompress devices calibrate {self.profile.name} --from-measurements`"
            )
        loo = self.loo if macs else self.loo_host_only
        uses_refit = refit is not None and exponent == refit.exponent
        p50 = factor.value * cost(host_p50_ms, macs, exponent)
        outside = None if uses_refit else self.outside_fit(host_p50_ms)
        return DeviceEstimate(
            device=self.profile.name,
            precision=precision,
            threads=threads,
            host_threads=self.timings.host_threads(threads),
            p50_ms=p50,
            p90_ms=p50 * spread,
            spread=spread,
            factor=factor.value,
            exponent=exponent,
            rule=factor.rule,
            references=factor.references,
            derived=self.profile.is_derived,
            leave_one_out_within_20pct=(refit.within_20pct if uses_refit and refit else
                                        None if outside else share_within(loo, 0.2)),
            leave_one_out_points=sum(refit.points.values()) if uses_refit and refit else len(loo),
            outside_fit=outside,
        )

    def outside_fit(self, host_p50_ms: float) -> str | None:
        """How far outside the host timings of the fit's reference models HOST_P50_MS lies, when it is more
        than OUTSIDE_FIT times beyond the fastest or the slowest of them; None inside."""
        timings = [ms for ms in self.timings.ms.values() if ms > 0]
        if not timings:
            return None
        fastest, slowest = min(timings), max(timings)
        if host_p50_ms * OUTSIDE_FIT < fastest:
            return (f"{fastest / host_p50_ms:,.0f}x faster on this host than the fastest model the fit rests on "
                    f"({fastest:.3g} ms): an extrapolation, its error unmeasured")
        if host_p50_ms > slowest * OUTSIDE_FIT:
            return (f"{host_p50_ms / slowest:,.0f}x slower on this host than the slowest model the fit rests on "
                    f"({slowest:.3g} ms): an extrapolation, its error unmeasured")
        return None


def fit_device(profile: DeviceProfile, timings: HostTimings, pair_profiles: Sequence[DeviceProfile] | None = None) -> DeviceFit:
    """Fit PROFILE on TIMINGS (no cache: see fit_for); PAIR_PROFILES default to the shipped published ones."""
    pool = tuple(_pool(profile, measured_profiles() if pair_profiles is None else pair_profiles))
    return DeviceFit(
        profile=profile,
        timings=timings,
        pool=pool,
        exponent=choose_exponent(pool, timings),
        scaling=thread_scaling([p for p in pool if not p.is_derived], timings),
        loo=tuple(leave_one_out(profile, timings, pool)),
        loo_host_only=tuple(leave_one_out(profile, timings, pool, use_macs=False)),
    )


_FITS: dict[tuple[DeviceProfile, Host, frozenset[tuple[TimingKey, float]]], DeviceFit] = {}


def fit_for(profile: DeviceProfile, timings: HostTimings | None = None) -> DeviceFit:
    """PROFILE's fit, made once per profile and host timings in this process (with a progress note).

    TIMINGS default to this host's cached calibration, measured first when some are missing (building the
    references needs TensorFlow: CalibrationUnavailable otherwise). The fit itself took 0.05-0.6 s per
    shipped profile here (the nested leave-one-out refits a few hundred factors), so it is kept in memory only:
    the minutes go into the host timings, which are cached on disk.
    """
    timings = timings if timings is not None else ensure_timings(profile)
    key = (profile, timings.host, frozenset(timings.ms.items()))
    if key not in _FITS:
        note(f"fitting the {profile.name} estimate to this host's timings (exponent, thread scaling, nested leave-one-out)")
        _FITS[key] = fit_device(profile, timings)
    # the refit is read each time: `devices calibrate --from-measurements` may have made one since
    return dataclasses.replace(_FITS[key], measured=load_measured_fit(profile.name, timings.host))
