"""What the host and the device-side agent exchange: one JSON document per call, versioned.

PROTOCOL changes only when the documents below change shape, so a device with another edgecompress release
still serves a host whose protocol matches (the host says the versions differ, and runs).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edgecompress.generate import LMMeasurement
from edgecompress.measure import Measurement, MeasureOptions
from edgecompress.measure.harness import _phase_end
from edgecompress.measure.inputs import InputUsed
from edgecompress.measure.stats import LatencyStats

PROTOCOL = 1
# The options that travel to the device; the rest (pinning, memory budget) are host-side device shaping.
REMOTE_OPTIONS = ("threads", "runs", "warmup", "min_secs", "warmup_min_secs", "max_secs", "use_xnnpack", "timeout")


@dataclass(frozen=True)
class DeviceIdentity:
    """Who measured: reported by the device itself."""

    host: str
    machine: str
    cpu_model: str
    cores: int
    os: str
    python: str
    runtime: str
    runtime_version: str
    mem_available_mb: float | None
    edgecompress: str
    protocol: int

    def pairs(self) -> list[tuple[str, Any]]:
        free = "-" if self.mem_available_mb is None else f"{self.mem_available_mb:,.0f} MB"
        pairs = [
            ("device", self.host),
            ("CPU", f"{self.cpu_model} ({self.machine}), {self.cores} cores"),
            ("OS", self.os),
            ("Python", self.python),
            ("runtime", f"{self.runtime} {self.runtime_version}"),
            ("free memory", free),
            ("edgecompress", f"{self.edgecompress} (protocol {self.protocol})"),
        ]
        return [(k, v) for k, v in pairs if not str(v).startswith("-")]  # adb: no Python, no edgecompress there


def options_to_dict(options: MeasureOptions) -> dict[str, Any]:
    return {name: getattr(options, name) for name in REMOTE_OPTIONS}


def options_from_dict(data: dict[str, Any], inputs: str | None) -> MeasureOptions:
    return MeasureOptions(**{k: v for k, v in data.items() if k in REMOTE_OPTIONS}, inputs=inputs)


def measurement_from_dict(data: dict[str, Any], model: str) -> Measurement:
    """The device's Measurement (dataclasses.asdict) back into one, named by the host's path of the model."""
    stats = data.get("latency_ms")
    return Measurement(
        **{
            **{f.name: data[f.name] for f in dataclasses.fields(Measurement) if f.name in data},
            "model": model,
            "latency_ms": LatencyStats(**stats) if stats else None,
            "timed": _phase_end(data.get("timed")),
            "inputs": [InputUsed(**{**u, "shape": tuple(u["shape"])}) for u in data.get("inputs", [])],
        }
    )


def lm_measurement_from_dict(data: dict[str, Any], model: str) -> LMMeasurement:
    """The device's LMMeasurement (dataclasses.asdict) back into one, named by the host's path of the model."""
    return LMMeasurement(**{**data, "model": model, "prefill_ms": LatencyStats(**data["prefill_ms"]),
                            "decode_ms": LatencyStats(**data["decode_ms"])})
