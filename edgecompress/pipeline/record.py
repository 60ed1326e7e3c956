"""One variant's results: the record written to record.json and results.json, read by select and report, and
assembled here from the stages' outputs."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from edgecompress.pipeline.grid import Variant


@dataclass
class DeviceResult:
    """A device's figures for one variant: measured on it over SSH (source "measured"), or estimated."""

    estimated_p50_ms: float | None = None  # an estimate: host timing scaled by the device's calibrated factor
    estimated_p90_ms: float | None = None  # the estimated p50 times the p90/p50 of a one-thread host run
    threads: int | None = None  # host threads of the run (the device's, capped at the host's cores)
    estimated_threads: int | None = None  # device threads the estimate is for
    memory_budget_mb: float | None = None
    calibration: dict[str, Any] | None = None
    error: str | None = None
    source: str = "estimated"  # or "measured": timed on the device itself
    measured_p50_ms: float | None = None
    measured_p90_ms: float | None = None
    measured_on: str | None = None  # the device's address (ssh://...)
    identity: dict[str, Any] | None = None  # who measured: the device's CPU, OS, Python, runtime

    @property
    def p50_ms(self) -> float | None:
        return self.measured_p50_ms if self.source == "measured" else self.estimated_p50_ms


@dataclass
class HostResult:
    """The variant timed on this host (the measure stage's first figures)."""

    runtime: dict[str, str] | None
    threads: int | None
    p50_ms: float | None
    p90_ms: float | None
    avg_ms: float | None
    runs: int
    peak_rss_mb: float | None
    error: str | None


@dataclass
class Measured:
    """The measure stage's output: the host's figures and each device's (estimated, or measured on it)."""

    host: HostResult
    devices: dict[str, DeviceResult] = field(default_factory=dict)


@dataclass
class VariantRecord:
    name: str
    settings: dict[str, Any]
    techniques: list[str]
    key: str
    error: str | None = None  # None when every stage ran
    failed_stage: str | None = None
    retry: bool = False  # failed by a worker's death (crash, memory): tried again by the next run
    tflite: str | None = None  # path relative to the run folder
    size_bytes: int | None = None
    gzip_bytes: int | None = None
    accuracy: float | None = None  # top-1 on the held-out data (classification)
    mae: float | None = None  # mean absolute error (regression)
    accuracy_drop: float | None = None  # points below the source model (negative: better than it)
    perplexity: float | None = None  # a language model's, on the held-out windows (accuracy: next-token top-1)
    perplexity_rise: float | None = None  # percent above the source model's (negative: better than it)
    host_latency_ms: float | None = None  # measured p50 on this host
    host_p90_ms: float | None = None
    host_runtime: str | None = None
    devices: dict[str, DeviceResult] = field(default_factory=dict)
    validation: dict[str, Any] | None = None  # the converter's check against the source model
    optimize: dict[str, Any] | None = None  # what edgecompress.optimize reported (plan, skipped layers, ...)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage
    reused: bool = False  # taken from an earlier run's cache, not redone
    same_graph_as: str | None = None  # its .tflite computes that variant's graph (weights aside): timed once

    @property
    def ok(self) -> bool:
        return self.error is None

    def latency(self, target: str) -> float | None:
        """p50 latency for TARGET: the host's measurement, a device's measurement, or its estimate."""
        if target == "host":
            return self.host_latency_ms
        device = self.devices.get(target)
        return device.p50_ms if device else None

    def latency_source(self, target: str) -> str:
        """"measured" or "estimated": where latency(TARGET) comes from."""
        device = self.devices.get(target)
        return "measured" if target == "host" or (device and device.source == "measured") else "estimated"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VariantRecord":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["devices"] = {d: DeviceResult(**r) for d, r in (data.get("devices") or {}).items()}
        return cls(**values)

    @classmethod
    def assemble(cls, variant: Variant, key: str, build: dict[str, Any], measured: Measured, tflite: str) -> "VariantRecord":
        """A finished variant's record from its build stages' outputs (BUILD: stage -> what it wrote), its
        MEASURED figures and its .tflite's path relative to the run folder."""
        convert, evaluation, optimize = build["convert"], build["evaluate"], build.get("optimize")
        host = measured.host
        return cls(
            name=variant.name,
            settings=variant.settings.as_dict(),
            techniques=variant.settings.techniques,
            key=key,
            error=f"host benchmark failed: {host.error}" if host.error else None,
            failed_stage="benchmark" if host.error else None,
            tflite=tflite,
            size_bytes=convert["size_bytes"],
            gzip_bytes=convert["gzip_bytes"],
            accuracy=evaluation.get("accuracy"),
            mae=evaluation.get("mae"),
            perplexity=evaluation.get("perplexity"),
            host_latency_ms=host.p50_ms,
            host_p90_ms=host.p90_ms,
            host_runtime=" ".join(host.runtime.values()) if host.runtime else None,
            devices=dict(measured.devices),
            validation=convert.get("validation"),
            optimize=optimize,
            seconds={stage: build[stage]["seconds"] for stage in ("optimize", "convert", "evaluate") if stage in build},
        )
