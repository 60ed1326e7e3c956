"""How good are the device latency estimates? Leave-one-out over the published reference latencies.

For every published point (shared ANCHORS.md, copied into devices/profiles/*.toml) the device is calibrated
without that point and the point is predicted from its host timing; the script prints each prediction and,
per device and overall, the share of points within 10% and within 20% (goal: 80% within 20%). Derived
profiles (Pi Zero 2W, Pi 5) have nothing published to check against and are not scored.

For comparison it also scores a simpler fit, one factor per device for both precisions, to show what the
per-precision factor buys, and the small-model points calibrated without the large references
(Inception V4, Inception-ResNet-V2), to show what their minutes of conversion buy.

    /work/venv/bin/python benchmarks/device_estimates.py [--recalibrate] [--skip-large] [--cached] [--rounds N]

Host timings come from the calibration cache (measured on demand; --recalibrate re-measures them). Run it on
a quiet machine: the factors are ratios against host timings, so a loaded host skews them.
"""
from __future__ import annotations

import argparse
import math

from edgecompress.devices.calibrate import HostTimings, calibrate, load_timings
from edgecompress.devices.estimate import LooPoint, leave_one_out, share_within
from edgecompress.devices.profiles import DeviceProfile, measured_profiles
from edgecompress.devices.references import REFERENCE_MODELS
from edgecompress.tables import table


def one_factor_loo(profile: DeviceProfile, timings: HostTimings) -> list[LooPoint]:
    """The simpler fit: geometric mean of all the device's ratios, float and int8 together."""
    refs = [(r, timings.for_reference(r)) for r in profile.references]
    refs = [(r, h) for r, h in refs if h]
    points = []
    for ref, host_ms in refs:
        others = [r.latency_ms / h for r, h in refs if r != ref]
        predicted = host_ms * math.exp(sum(map(math.log, others)) / len(others)) if others else None
        points.append(LooPoint(profile.name, ref.key, ref.latency_ms, predicted, "one factor per device"))
    return points


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


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

    per_device = {p.name: leave_one_out(p, timings, profiles) for p in profiles}
    simple = {p.name: one_factor_loo(p, timings) for p in profiles}
    without_large = {p.name: leave_one_out(p, small, profiles) for p in profiles}
    everything = [pt for pts in per_device.values() for pt in pts]
    everything_simple = [pt for pts in simple.values() for pt in pts]

    rows = [
        [pt.device, pt.reference, pt.published_ms, pt.predicted_ms,
         "-" if pt.error is None else f"{100 * pt.error:+.0f}%", pt.rule]
        for pt in everything
    ]
    print(table(["device", "reference", "published ms", "predicted ms", "error", "calibrated by"], rows,
                title="Each published point predicted from a calibration without it"))
    print()
    def row(name: str, pts: list[LooPoint], simple_pts: list[LooPoint], small_pts: list[LooPoint]) -> list:
        # The points of small models, calibrated with and without the large references.
        same_pts = [pt for pt in pts if not REFERENCE_MODELS[pt.reference.split("/")[0]].large]
        return [name, len(pts), pct(share_within(pts, 0.1)), pct(share_within(pts, 0.2)),
                pct(share_within(simple_pts, 0.2)),
                f"{pct(share_within(same_pts, 0.2))} / {pct(share_within(small_pts, 0.2))} of {len(small_pts)}"]

    summary = [row(name, pts, simple[name], without_large[name]) for name, pts in per_device.items()]
    summary.append(row("all", everything, everything_simple, [pt for pts in without_large.values() for pt in pts]))
    headers = ["device", "points", "within 10%", "within 20%", "within 20%, one factor per device",
               "small-model points within 20%: with / without large refs"]
    print(table(headers, summary, title="Leave-one-out accuracy of the device estimates (goal: 80% within 20%)"))


if __name__ == "__main__":
    main()
