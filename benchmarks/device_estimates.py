"""How good are the device latency estimates? Leave-one-out over the published reference latencies.

For every published point (devices/profiles/*.toml, each with its source) the device is calibrated
without that point and the point is predicted from its host timing; the script prints each prediction and,
per device and overall, the share of points within 10% and within 20% (goal: 80% within 20%). Derived
profiles (Pi Zero 2W, Pi 5) have nothing published to check against and are not scored.

Side by side, on the same host timings:
  new    device ms = k x host ms^e x GMACs^(1-e), references moved between thread counts by Amdahl's law;
         NESTED: for each held-out point the exponent e, the thread fraction, the int8 shift and k are all
         fitted on the other points only (devices/estimate.py);
  e=1    the same with e fixed at 1 (host scaling and the thread model, no MACs);
  old    the previous rule: k = geometric mean of device/host ratios of the same precision at the same thread
         count, else at other thread counts, else the other precision times the int8 shift; no MACs, no
         thread model.
the new rule with e chosen without any point of the held-out architecture (stricter: a model's twin point
on another device cannot teach e its quirk), and the small-model points calibrated with and without the
large references (Inception V4, Inception-ResNet-V2), to show what their minutes of conversion buy.

    /work/venv/bin/python benchmarks/device_estimates.py [--recalibrate] [--skip-large] [--cached] [--rounds N]

Host timings come from the calibration cache (measured on demand; --recalibrate re-measures them). Run it on
a quiet machine: the factors are ratios against host timings, so a loaded host skews them.
"""
from __future__ import annotations

import argparse
from collections import Counter

from edgecompress.devices.calibrate import HostTimings, calibrate, load_timings
from edgecompress.devices.estimate import (EXPONENTS, LooPoint, choose_exponent, cost, fit_factor, geomean,
                                          leave_one_out, share_within)
from edgecompress.devices.profiles import DeviceProfile, ReferenceLatency, measured_profiles, precision_pairs
from edgecompress.devices.references import REFERENCE_MODELS
from edgecompress.tables import table
from _common import pct, signed_pct


def old_loo(profile: DeviceProfile, timings: HostTimings, profiles: list[DeviceProfile]) -> list[LooPoint]:
    """The previous rule (no MACs, no thread model), for comparison."""
    def ratios(refs, exclude: ReferenceLatency) -> list[tuple[ReferenceLatency, float]]:
        return [(r, r.latency_ms / timings.for_reference(r)) for r in refs if r != exclude and timings.for_reference(r)]

    points = []
    for ref in profile.references:
        host_ms = timings.for_reference(ref)
        if not host_ms:
            continue
        own = ratios(profile.references, ref)
        same = [x for r, x in own if r.precision == ref.precision]
        at = [x for r, x in own if r.precision == ref.precision and r.threads == ref.threads]
        factor = geomean(at or same) if same else None
        if factor is None and own:
            shifts = [
                (i.latency_ms / timings.for_reference(i)) / (f.latency_ms / timings.for_reference(f))
                for f, i in precision_pairs([p for p in profiles if p.name != profile.name])
                if ref not in (f, i) and timings.for_reference(f) and timings.for_reference(i)
            ]
            factor = geomean([x for _, x in own]) * geomean(shifts) ** (1 if ref.precision == "int8" else -1)
        points.append(LooPoint(profile.name, ref.key, ref.latency_ms, factor * host_ms if factor else None, "old"))
    return points


def architecture_out_loo(profile: DeviceProfile, timings: HostTimings, profiles: list[DeviceProfile]) -> list[LooPoint]:
    """Stricter: e is chosen without ANY point of the held-out architecture (on any device), so that a twin
    point on another device cannot teach the shared exponent that architecture's quirk; k as in the new rule."""
    points = []
    for ref in profile.references:
        host_ms = timings.for_reference(ref)
        if ref.derived or not host_ms:
            continue
        same_arch = frozenset((p.name, r.key) for p in profiles for r in p.references if r.model == ref.model)
        e = choose_exponent(profiles, timings, same_arch)
        factor = fit_factor(profile, ref.precision, ref.threads, timings, profiles, frozenset({(profile.name, ref.key)}), e)
        predicted = factor.value * cost(host_ms, REFERENCE_MODELS[ref.model].macs, e) if factor else None
        points.append(LooPoint(profile.name, ref.key, ref.latency_ms, predicted, f"e={e:.2f}"))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recalibrate", action="store_true", help="re-measure the host timings first")
    parser.add_argument("--skip-large", action="store_true", help="leave out the large references (minutes to build)")
    parser.add_argument("--cached", action="store_true", help="score the cached host timings as they are")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds per reference when measuring (fastest kept)")
    args = parser.parse_args()

    profiles = measured_profiles()
    if args.cached:
        timings = load_timings()
    else:
        timings = calibrate(profiles, force=args.recalibrate, large=not args.skip_large, rounds=args.rounds).timings
    small = HostTimings(timings.host, {k: v for k, v in timings.ms.items() if not REFERENCE_MODELS[k[0]].large})
    host = timings.host
    print(f"host: {host.cpu}, {host.cores} cores, {host.runtime} {host.runtime_version}\n")

    new = {p.name: leave_one_out(p, timings, profiles) for p in profiles}
    plain = {p.name: leave_one_out(p, timings, profiles, use_macs=False) for p in profiles}
    old = {p.name: old_loo(p, timings, profiles) for p in profiles}
    strict = {p.name: architecture_out_loo(p, timings, profiles) for p in profiles}
    without_large = {p.name: leave_one_out(p, small, profiles) for p in profiles}
    exponents = Counter(
        choose_exponent(profiles, timings, frozenset({(p.name, pt.reference)})) for p in profiles for pt in new[p.name]
    )

    rows = [
        [pt.device, pt.reference, pt.published_ms, pt.predicted_ms, signed_pct(pt.error), signed_pct(p1.error), signed_pct(p0.error), pt.rule]
        for name in new for pt, p1, p0 in zip(new[name], plain[name], old[name])
    ]
    print(table(["device", "reference", "published ms", "new: predicted ms", "new", "e=1", "old", "new: calibrated by"],
                rows, title="Each published point predicted from a calibration without it (errors: new / e=1 / old)"))
    print(f"\nexponent e chosen inside the leave-one-out (grid {EXPONENTS[0]}..{EXPONENTS[-1]}), per held-out point: "
          + ", ".join(f"{e:.2f} x{n}" for e, n in sorted(exponents.items())))
    print()

    def row(name: str, pts: list[LooPoint], p1: list[LooPoint], p0: list[LooPoint], small_pts: list[LooPoint]) -> list:
        same_pts = [pt for pt in pts if not REFERENCE_MODELS[pt.reference.split("/")[0]].large]
        return [name, len(pts), pct(share_within(pts, 0.1)), pct(share_within(pts, 0.2)),
                pct(share_within(p1, 0.1)), pct(share_within(p1, 0.2)),
                pct(share_within(p0, 0.1)), pct(share_within(p0, 0.2)),
                f"{pct(share_within(same_pts, 0.2))} / {pct(share_within(small_pts, 0.2))} of {len(small_pts)}"]

    def every(d: dict[str, list[LooPoint]]) -> list[LooPoint]:
        return [pt for pts in d.values() for pt in pts]

    summary = [row(name, new[name], plain[name], old[name], without_large[name]) for name in new]
    summary.append(row("all", every(new), every(plain), every(old), every(without_large)))
    headers = ["device", "points", "new ≤10%", "new ≤20%", "e=1 ≤10%", "e=1 ≤20%", "old ≤10%", "old ≤20%",
               "new, small-model points ≤20%: with / without large refs"]
    print(table(headers, summary, title="Leave-one-out accuracy of the device estimates (goal: 80% within 20%)"))
    strict_all = every(strict)
    print(f"\nnew rule, e chosen without any point of the held-out architecture (stricter): "
          f"{pct(share_within(strict_all, 0.1))} within 10%, {pct(share_within(strict_all, 0.2))} within 20% of {len(strict_all)}")


if __name__ == "__main__":
    main()
