"""A device's factor refitted from the user's own measurements, kept per device and host in the cache.

`edgecompress devices calibrate NAME --from-measurements` (edgecompress.remote.refit) fits the published rule,
device ms = k x host ms^e x GMACs^(1-e), to the models the user measured on the device, and saves it here:
$EDGECOMPRESS_CACHE/measured_fits/NAME@HOST.json. The host is part of the name because k relates this host's
timings to the device's. Later estimates for the device (DeviceFit.factor) take k from it, per precision.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from edgecompress.devices.calibrate import Host
from edgecompress.devices.references import cache_root
from edgecompress.fileio import write_text_atomic


@dataclass(frozen=True)
class MeasuredFit:
    device: str
    host: str  # the host's slug: whose timings k scales
    exponent: float  # e
    k: dict[str, float]  # precision ("float", "int8") -> k
    points: dict[str, int]  # precision -> how many measurements k rests on
    within_20pct: float | None  # nested leave-one-out over those measurements

    def rule(self, precision: str) -> str:
        form = "host ms" if self.exponent == 1.0 else f"host ms^{self.exponent:.2f} x GMACs^{1 - self.exponent:.2f}"
        return f"device ms = k x {form}; k calibrated from {self.points[precision]} of your measurements"


def fit_path(device: str, host: Host) -> Path:
    return cache_root() / "measured_fits" / f"{device}@{host.slug}.json"


def save_measured_fit(fit: MeasuredFit, host: Host) -> Path:
    path = fit_path(fit.device, host)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(dataclasses.asdict(fit), indent=2) + "\n")


def load_measured_fit(device: str, host: Host) -> MeasuredFit | None:
    """DEVICE's refit on HOST, or None (none made, or a damaged file: the published fit then stands)."""
    path = fit_path(device, host)
    try:
        return MeasuredFit(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
