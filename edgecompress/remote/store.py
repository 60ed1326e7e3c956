"""Every measurement made on a device is kept: $EDGECOMPRESS_CACHE/measurements.jsonl, one JSON object a line.

A line holds who measured (the device's identity and address, and the device profile's name when one was
given), the model (sha256, name, absolute path, MACs, integer or float), the settings (threads, runs, XNNPACK) and the figures (ms). These are the user's own device points: the
data to refit a device's estimate from. Failed runs are not kept. Lines are appended with one write each, so
an interrupted run never leaves a half line behind a good one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from edgecompress.devices.references import cache_root
from edgecompress.macs import total_macs
from edgecompress.shapes import resolve_shapes
from edgecompress.tflite_reader import is_integer_model, read_model

STORE_NAME = "measurements.jsonl"


def store_path() -> Path:
    return cache_root() / STORE_NAME


def _model_facts(path: Path) -> dict[str, Any]:
    model = read_model(path)
    resolve_shapes(model, path)
    return {
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "name": path.name,
        "path": str(path.resolve()),  # a refit times the same file on the host (when its sha256 still matches)
        "macs": total_macs(model),
        "integer": is_integer_model(model),
        "size_bytes": model.size_bytes,
    }


def record(run: Any) -> int:
    """Append the successful results of RUN (a RemoteBenchmark); returns how many lines were kept."""
    lines = []
    for result in run.results:
        m = result.measurement
        if m.error or m.latency_ms is None:
            continue
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "target": run.target,
            "device_name": run.device_name,
            "device": dataclasses.asdict(run.identity),
            "model": _model_facts(Path(m.model)),
            "settings": {"threads": m.threads, "xnnpack": m.xnnpack, "runs": m.latency_ms.count},
            "figures_ms": {"p50": m.latency_ms.p50, "avg": m.latency_ms.avg, "p90": m.latency_ms.p90,
                           "init": m.init_ms, "first": m.first_ms},
            "peak_rss_mb": m.peak_rss_mb,
        }
        lines.append(json.dumps(entry, sort_keys=True) + "\n")
    if lines:
        path = store_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for line in lines:
                os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
    return len(lines)


def load_measurements() -> list[dict[str, Any]]:
    """Every kept measurement, oldest first (a damaged line, e.g. from a full disk, is skipped)."""
    path = store_path()
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
