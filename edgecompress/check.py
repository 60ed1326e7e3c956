"""check(model, device, runtimes): will this .tflite run on the device's own software stack, and agree?

For each runtime (default: the one the device profile names): the static verdict from the file (operator
versions against the runtime's, devices.compat), then, for a device whose profile names its OS userland,
one inference of the same seeded inputs on that userland under QEMU (devices.userland) beside one on this
host, compared output by output. A runtime that refuses the model names the operator and version it lacks.
Android profiles get the static part only. QEMU's wall time is never measured or shown: it is not latency.
Runtime side only (no TensorFlow).
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecompress.devices.compat import ModelOps, StaticVerdict, model_ops, static_check
from edgecompress.devices.profiles import DeviceProfile, load_profile
from edgecompress.devices.userland import RuntimeSpec, parse_runtime, require_tools, run_in_userland
from edgecompress.errors import UserError
from edgecompress.measure.harness import RUNTIME_CUSTOM_OPS
from edgecompress.measure.inputs import model_inputs
from edgecompress.progress import note
from edgecompress.runtime import dequantize, load_interpreter
from edgecompress.tflite_reader import unsupported_ops

# The runtime's own words when its op resolver lacks an operator (TFLite's interpreter_builder.cc).
MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'")
MISSING_CUSTOM = re.compile(r"Encountered unresolved custom op: (\S+?)\.?(?:\s|$)")
NEWEST_RUNTIME = "ai-edge-litert==2.3.0"


@dataclass(frozen=True)
class OutputAgreement:
    name: str
    dtype: str
    max_abs_error: float  # in real units (dequantized for quantized outputs)
    max_steps: int | None  # quantized outputs: the largest difference in stored integer steps


@dataclass
class RuntimeVerdict:
    runtime: str
    static: StaticVerdict
    emulated: bool  # ran on the device's userland under QEMU
    runs: bool | None  # None: only the static check was possible
    missing_op: str | None = None  # "FULLY_CONNECTED v12" when the runtime lacks it
    error: str | None = None
    advice: str | None = None
    agreement: list[OutputAgreement] = field(default_factory=list)
    guest: dict[str, str] = field(default_factory=dict)  # machine, python, numpy inside the userland


@dataclass
class CheckReport:
    model: str
    device: str
    userland: str | None
    host_runtime: str
    ops: list[tuple[str, int]]
    min_runtime_version: str | None
    verdicts: list[RuntimeVerdict]


def _runtimes(profile: DeviceProfile, specs: Sequence[str]) -> list[RuntimeSpec]:
    if specs:
        return [parse_runtime(s) for s in specs]
    return [RuntimeSpec(profile.runtime.name, profile.runtime.version)]


def _is_dynamic_range(ops: ModelOps) -> bool:
    """Float activations with int8 constant weights: what dynamic-range quantization makes."""
    from edgecompress.tflite_reader import is_integer_model

    weights = [t for sg in ops.model.subgraphs for t in sg.tensors if t.is_constant and t.dtype == "int8"]
    return bool(weights) and not is_integer_model(ops.model)


def _advice(ops: ModelOps, spec: RuntimeSpec, missing: str | None) -> str:
    what = missing or "the model's operator versions"
    hints = []
    if spec.requirement != NEWEST_RUNTIME:
        hints.append(f"use a runtime that has {what}: --runtime {NEWEST_RUNTIME} (on the device: pip install ai-edge-litert)")
    if _is_dynamic_range(ops):
        hints.append("convert with --quantize int8 (full integer): dynamic-range quantization needs newer op versions")
    if spec.name == "tflite-runtime":
        hints.append(f"convert with a TensorFlow no newer than the runtime ({spec.version})")
    return "; or ".join(hints) or "-"


def _host_run(path: Path, feeds: Path) -> tuple[list[np.ndarray], list[dict], str]:
    """One inference on this host on seeded random inputs (the benchmark's), which are saved to FEEDS."""
    interpreter, info = load_interpreter(path, num_threads=1)
    arrays = [a for a, _ in model_inputs(interpreter.get_input_details(), None, seed=0)]
    np.savez(feeds, **{f"in{i}": a for i, a in enumerate(arrays)})
    for d, array in zip(interpreter.get_input_details(), arrays):
        interpreter.set_tensor(d["index"], array)
    interpreter.invoke()
    details = interpreter.get_output_details()
    return [interpreter.get_tensor(d["index"]).copy() for d in details], details, f"{info.name} {info.version}"


def _agreement(host: list[np.ndarray], details: list[dict], guest_npz: Path) -> list[OutputAgreement]:
    out = []
    with np.load(guest_npz) as guest:
        for i, (h, d) in enumerate(zip(host, details)):
            g = guest[f"out{i}"]
            scale, zero = d["quantization"]
            if np.issubdtype(h.dtype, np.integer) and scale:
                steps = int(np.max(np.abs(h.astype(np.int64) - g.astype(np.int64)))) if h.size else 0
                err = float(np.max(np.abs(dequantize(h, scale, zero) - dequantize(g, scale, zero)))) if h.size else 0.0
                out.append(OutputAgreement(d["name"], str(h.dtype), err, steps))
            else:
                err = float(np.max(np.abs(h.astype(np.float64) - g.astype(np.float64)))) if h.size else 0.0
                out.append(OutputAgreement(d["name"], str(h.dtype), err, None))
    return out


def _emulated(verdict: RuntimeVerdict, profile: DeviceProfile, spec: RuntimeSpec, ops: ModelOps, path: Path,
              feeds: Path, host: list[np.ndarray], details: list[dict], folder: Path) -> None:
    note(f"running {path.name} on {profile.userland.os} with {spec.requirement} under QEMU (not timed)")
    out = folder / f"guest-{spec.name}-{spec.version}.npz"
    run = run_in_userland(profile.userland, spec, path, feeds, out)
    verdict.emulated = True
    if run.error:
        verdict.runs, verdict.error = False, run.error
        found = MISSING_OP.search(run.error) or MISSING_CUSTOM.search(run.error)
        if found:
            verdict.missing_op = " v".join(found.groups())
        verdict.advice = _advice(ops, spec, verdict.missing_op)
        return
    verdict.runs = True
    verdict.guest = {"machine": run.machine, "python": run.python, "numpy": run.numpy}
    verdict.agreement = _agreement(host, details, out)


def _run_emulated(path: Path, profile: DeviceProfile, specs: list[RuntimeSpec], ops: ModelOps,
                  verdicts: list[RuntimeVerdict]) -> str:
    """Fill VERDICTS from runs on the device's userland; returns the host runtime compared against."""
    require_tools()
    for spec in specs:
        parse_runtime(spec.requirement)  # the emulation needs a runtime with wheels for the guest
    with tempfile.TemporaryDirectory(prefix="edgecompress-check-") as tmp:
        folder = Path(tmp)
        feeds = folder / "feeds.npz"
        host, details, host_runtime = _host_run(path, feeds)
        for v, spec in zip(verdicts, specs):
            _emulated(v, profile, spec, ops, path, feeds, host, details, folder)
    return host_runtime


def check(path: str | Path, device: str | Path, runtimes: Sequence[str] = ()) -> CheckReport:
    """Verdicts for PATH on DEVICE (a profile name or .toml) under each runtime (NAME==VERSION; default the
    profile's); see the module doc."""
    path = Path(path)
    profile = load_profile(device)
    ops = model_ops(path)
    specs = _runtimes(profile, runtimes)
    lacking = [n for n in unsupported_ops(ops.model) if n not in RUNTIME_CUSTOM_OPS]
    verdicts = [RuntimeVerdict(f"{s.name} {s.version}", static_check(ops, s.name, s.version), False, None) for s in specs]
    host_runtime = "-"
    if lacking:  # Flex and custom ops: no stock runtime has them, on any device
        for v in verdicts:
            v.runs, v.missing_op = False, ", ".join(lacking)
            v.error = f"operators no stock runtime has (Flex or custom): {', '.join(lacking)}"
            v.advice = "re-convert with TFLITE_BUILTINS only"
    elif profile.userland is not None:
        host_runtime = _run_emulated(path, profile, specs, ops, verdicts)
    else:
        note(f"{profile.name} names no OS userland to emulate: the operator versions are checked, not run")
        for v, spec in zip(verdicts, specs):
            v.runs = v.static.ok
            v.advice = _advice(ops, spec, None) if v.static.ok is False else None
    userland = profile.userland.os if profile.userland else None
    return CheckReport(str(path), profile.name, userland, host_runtime, list(ops.ops), ops.min_runtime_version, verdicts)
