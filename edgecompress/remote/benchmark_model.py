"""TFLite's benchmark_model: its command line from MeasureOptions, and its text output as a Measurement.

Output read (old and new builds; lines may carry an "INFO: " or logcat "I tflite  : " prefix):
    The input model file size (MB): 13.9786
    Initialized session in 42.1ms.
    count=21 first=31234 curr=22345 min=21987 max=31234 avg=23456.7 std=2034      (warm-up; count=1 curr=X when 1 run)
    count=50 first=... avg=2.2e+04 std=540 [p5=... median=... p95=...]          (timed runs; newer builds add p5/median/p95)
    Inference timings in us: Init: 42123, First inference: 31234, Warmup (avg): 23456.7, Inference (avg): 22010.5
    Memory footprint delta from the start of the tool (MB): init=33.8 overall=45.2   ("Peak memory footprint" in old builds)
    Overall peak memory footprint (MB) via periodic monitoring: 52.1                  (with --report_peak_memory_footprint)
Times are microseconds there and milliseconds here. Statistics the build does not print (p90, p99 always; p5 and
the median in old builds) are None, never made up.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from edgecompress.errors import UserError
from edgecompress.measure import MeasureOptions
from edgecompress.measure.stats import LatencyStats

NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
STATS_LINE = re.compile(r"\bcount=(\d+)((?:\s+\w+=" + NUMBER + r")*)")
PAIR = re.compile(r"(\w+)=" + NUMBER)
SUMMARY = re.compile(
    rf"Inference timings in us: Init: {NUMBER}, First inference: {NUMBER}, Warmup \(avg\): {NUMBER}, Inference \(avg\): {NUMBER}"
)
INIT_SESSION = re.compile(rf"Initialized session in {NUMBER}\s*ms")
FOOTPRINT = re.compile(rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): init={NUMBER} overall={NUMBER}")
PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {NUMBER}")
FAILURE_HINTS = ("Failed", "failed", "Error", "error", "Didn't find op", "Aborted", "Segmentation")


@dataclass(frozen=True)
class BenchmarkModelRun:
    init_ms: float | None
    first_ms: float | None
    warmup_count: int
    warmup_avg_ms: float | None
    latency_ms: LatencyStats | None
    init_footprint_mb: float | None
    overall_footprint_mb: float | None
    peak_footprint_mb: float | None


def command(binary: str, model: str, options: MeasureOptions) -> list[str]:
    """benchmark_model's flags for the same phases and settings as a local `benchmark`."""
    return [
        binary,
        f"--graph={model}",
        f"--num_threads={options.threads}",
        f"--num_runs={options.runs}",
        f"--min_secs={options.min_secs:g}",
        f"--max_secs={options.max_secs:g}",
        f"--warmup_runs={options.warmup}",
        f"--warmup_min_secs={options.warmup_min_secs:g}",
        f"--use_xnnpack={'true' if options.use_xnnpack else 'false'}",
        "--report_peak_memory_footprint=true",
    ]


def _stats(fields: dict[str, float]) -> LatencyStats:
    ms = {k: v / 1000.0 for k, v in fields.items()}
    return LatencyStats(
        count=int(fields["count"]), avg=ms["avg"], std=ms["std"], min=ms["min"], max=ms["max"],
        p5=ms.get("p5"), p50=ms.get("median"), p90=None, p95=ms.get("p95"), p99=None,  # type: ignore[arg-type]
    )


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if any(h in ln for h in FAILURE_HINTS)]
    return (errors or lines or ["no output"])[-1]


def parse_output(text: str) -> BenchmarkModelRun:
    """The figures in benchmark_model's output; UserError (with its own error line) when it did not finish."""
    stats_lines = []
    for m in STATS_LINE.finditer(text):
        fields = {k: float(v) for k, v in PAIR.findall(m.group(0))}
        stats_lines.append(fields)
    summary = SUMMARY.search(text)
    if summary is None or not stats_lines:
        raise UserError(f"benchmark_model did not finish: {_last_error_line(text)}")
    init_us, first_us, warm_avg_us, _ = (float(g) for g in summary.groups())
    timed = stats_lines[-1]
    if not {"avg", "std", "min", "max"} <= timed.keys():
        raise UserError(f"benchmark_model printed no timed statistics: {_last_error_line(text)}")
    warmup = stats_lines[-2] if len(stats_lines) >= 2 else {}
    footprint, peak = FOOTPRINT.search(text), PEAK.search(text)
    session = INIT_SESSION.search(text)
    return BenchmarkModelRun(
        init_ms=float(session.group(1)) if session else init_us / 1000.0,
        first_ms=first_us / 1000.0,
        warmup_count=int(warmup.get("count", 0)),
        warmup_avg_ms=warm_avg_us / 1000.0 if warmup else None,
        latency_ms=_stats(timed),
        init_footprint_mb=float(footprint.group(1)) if footprint else None,
        overall_footprint_mb=float(footprint.group(2)) if footprint else None,
        peak_footprint_mb=float(peak.group(1)) if peak else None,
    )
