"""check(model, device, runtimes): will this .tflite run on the device's own software stack, and agree?

For each runtime (default: the one the device profile names): the static verdict from the file (operator
versions against the runtime's, devices.compat), then, for a device whose profile names its OS userland,
the same inputs (the user's samples or generated ones, plus edge inputs: zeros, min, max) run on that
userland under QEMU (devices.userland) and on this host, judged output by output (edgecompress.compare). The
verdict is RUNS only when every output agrees; NaN/Inf on the device, or an output outside the thresholds,
FAILS. A runtime that refuses the model names the operator and version it lacks.
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
from edgecompress.compare import OutputCheck, compare_output, output_problem
from edgecompress.probe_inputs import EDGE_INPUTS, generated_feeds, with_edges
from edgecompress.progress import note
from edgecompress.isolation import crash_for_tests, run_isolated
from edgecompress.runner import Port, TFLiteRunner
from edgecompress.runtime import dequantize
from edgecompress.tflite_reader import unsupported_ops

# The runtime's own words when its op resolver lacks an operator (TFLite's interpreter_builder.cc).
MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'")
MISSING_CUSTOM = re.compile(r"Encountered unresolved custom op: (\S+?)\.?(?:\s|$)")
NEWEST_RUNTIME = "ai-edge-litert==2.3.0"
# Samples per emulated run (plus the edge inputs): QEMU runs a MobileNetV2 inference in about 4 s.
CHECK_SAMPLES = 8


@dataclass(frozen=True)
class OutputAgreement:
    """One output on the device against the same output on this host, over the same inputs."""

    name: str
    dtype: str
    check: OutputCheck  # real values (dequantized for quantized outputs); this host's are the reference
    max_steps: int | None  # quantized outputs: the largest difference in stored integer steps
    device_nonfinite: int  # samples whose device output has NaN/Inf (whatever this host gave)

    @property
    def max_abs_error(self) -> float | None:
        return self.check.max_abs_error


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
    inputs: str  # what the emulated runs were fed: "8 given samples + edge inputs (zeros, min, max)"
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


@dataclass
class HostRun:
    """This host's run of the inputs the device gets: raw output tensors (by tensor index) and how to read them."""

    out_ports: list[Port]
    outputs: dict[int, np.ndarray]  # output tensor index -> samples, as stored (integers for quantized outputs)
    inputs: str
    runtime: str


def _host_run(path: Path, feeds_file: Path, inputs: str | Path | None, num_samples: int, seed: int) -> HostRun:
    """Run the samples (given, or generated) and the edge inputs on this host, one at a time, in a child process
    (a file that crashes the runtime must not take check down); save exactly the input tensors it was fed
    (quantized where the model's inputs are) to FEEDS_FILE for the device."""
    return run_isolated(_host_run_here, path, feeds_file, inputs, num_samples, seed,
                        what=f"the runtime on this host, running {path.name}")


def _host_run_here(path: Path, feeds_file: Path, inputs: str | Path | None, num_samples: int, seed: int) -> HostRun:
    from edgecompress.calibration import load_samples
    from edgecompress.calibration.sources import open_source

    runner = TFLiteRunner(path, num_threads=1)
    crash_for_tests(path)
    if inputs is not None:
        columns = open_source(inputs, runner.real_inputs).columns
        specs = runner.feed_specs({name: np.dtype(column.dtype) for name, column in columns.items()})
        feeds, origin = load_samples(inputs, specs, num_samples, seed).batch(num_samples), "given"
    else:
        feeds, origin = generated_feeds(runner.real_inputs, num_samples, seed), "generated"
    count = len(next(iter(feeds.values())))
    feeds = with_edges(feeds)
    fed: dict[int, list[np.ndarray]] = {p.index: [] for p in runner.in_ports}
    got: dict[int, list[np.ndarray]] = {p.index: [] for p in runner.out_ports}
    with np.errstate(all="ignore"):
        for i in range(len(next(iter(feeds.values())))):
            runner.run({k: v[i:i + 1] for k, v in feeds.items()})
            for index, values in (*fed.items(), *got.items()):
                values.append(runner.interpreter.get_tensor(index).copy())
    np.savez(feeds_file, **{f"t{i}": np.stack(v) for i, v in fed.items()})
    described = f"{count} {origin} samples + edge inputs ({', '.join(EDGE_INPUTS)})"
    return HostRun(runner.out_ports, {i: np.stack(v) for i, v in got.items()}, described,
                   f"{runner.runtime.name} {runner.runtime.version}")


def _agreement(host: HostRun, guest_npz: Path) -> list[OutputAgreement]:
    out = []
    with np.load(guest_npz) as guest:
        for port in host.out_ports:
            h, g = host.outputs[port.index], guest[f"t{port.index}"]
            real_h, real_g = (dequantize(h, port.scale, port.zero_point), dequantize(g, port.scale, port.zero_point)) \
                if port.quantized else (h, g)
            with np.errstate(all="ignore"):
                judged = compare_output(port.spec.name, real_h, real_g)
            steps = int(np.max(np.abs(h.astype(np.int64) - g.astype(np.int64)))) if port.quantized and h.size else None
            device_bad = int(np.sum(~np.isfinite(real_g.reshape(len(real_g), -1)).all(axis=1))) \
                if np.issubdtype(real_g.dtype, np.floating) else 0
            out.append(OutputAgreement(port.spec.name, str(h.dtype), judged, steps, device_bad))
    return out


def _disagreement(agreement: list[OutputAgreement]) -> str | None:
    """Why the device's outputs cannot be trusted, or None when every output agrees with this host's."""
    reasons = []
    for a in agreement:
        if a.device_nonfinite:
            also = " (this host's too)" if a.check.reference_nonfinite else ""
            reasons.append(f"output {a.name!r} is NaN/Inf on {a.device_nonfinite} sample(s){also}")
        elif output_problem(a.check):
            reasons.append(f"output {a.name!r} {output_problem(a.check).replace('the original', 'this host')}")
    return "; ".join(reasons) or None


def _emulated(verdict: RuntimeVerdict, profile: DeviceProfile, spec: RuntimeSpec, ops: ModelOps, path: Path,
              feeds: Path, host: HostRun, folder: Path) -> None:
    note(f"running {path.name} on {profile.userland.os} with {spec.requirement} under QEMU (not timed)")
    out = folder / f"guest-{spec.name}-{spec.version}.npz"
    run = run_in_userland(profile.userland, spec, path, feeds, out)
    verdict.emulated = True
    if run.error:
        verdict.runs, verdict.error = False, run.error
        found = MISSING_OP.search(run.error) or MISSING_CUSTOM.search(run.error)
        if found:
            verdict.missing_op = " v".join(found.groups())
        verdict.advice = _crash_advice(ops, spec) if run.crashed else _advice(ops, spec, verdict.missing_op)
        return
    verdict.guest = {"machine": run.machine, "python": run.python, "numpy": run.numpy}
    verdict.agreement = _agreement(host, out)
    wrong = _disagreement(verdict.agreement)
    verdict.runs = wrong is None
    if wrong:
        verdict.error = f"runs, but its outputs cannot be trusted: {wrong}"
        verdict.advice = _wrong_output_advice(ops, spec, verdict.agreement)


def _crash_advice(ops: ModelOps, spec: RuntimeSpec) -> str:
    """What to try when the runtime died inside the model: the cause when one is known, else say it is not."""
    if any(t.dtype == "int4" for sg in ops.model.subgraphs for t in sg.tensors):
        return (f"the model has int4 weights, and {spec.name} {spec.version} crashes on them (seen: "
                "tflite-runtime 2.14.0): quantize with int8-weights or dynamic for this runtime, or install "
                f"{NEWEST_RUNTIME} on the device")
    return ("cause unknown (no known runtime defect matches this model): try --runtime "
            f"{NEWEST_RUNTIME}, or another quantize mode")


def _wrong_output_advice(ops: ModelOps, spec: RuntimeSpec, agreement: list[OutputAgreement]) -> str:
    if any(a.device_nonfinite and a.check.reference_nonfinite for a in agreement):
        return ("the model itself gives NaN/Inf on these inputs, on this host too: re-export it (convert's "
                "validation names the output) or check the inputs' range")
    if spec.requirement != NEWEST_RUNTIME:
        return (f"cause unknown: this host ran the same inputs correctly; compare with --runtime {NEWEST_RUNTIME}, "
                "or try another quantize mode")
    return "cause unknown: this host's runtime computes them correctly; try another quantize mode"


def _run_emulated(path: Path, profile: DeviceProfile, specs: list[RuntimeSpec], ops: ModelOps,
                  verdicts: list[RuntimeVerdict], inputs: str | Path | None, num_samples: int,
                  seed: int) -> tuple[str, str]:
    """Fill VERDICTS from runs on the device's userland; returns the host runtime compared against and what
    the runs were fed."""
    require_tools()
    for spec in specs:
        parse_runtime(spec.requirement)  # the emulation needs a runtime with wheels for the guest
    with tempfile.TemporaryDirectory(prefix="edgecompress-check-") as tmp:
        folder = Path(tmp)
        feeds = folder / "feeds.npz"
        host = _host_run(path, feeds, inputs, num_samples, seed)
        for v, spec in zip(verdicts, specs):
            _emulated(v, profile, spec, ops, path, feeds, host, folder)
    return host.runtime, host.inputs


def check(path: str | Path, device: str | Path, runtimes: Sequence[str] = (), inputs: str | Path | None = None,
          num_samples: int = CHECK_SAMPLES, seed: int = 0) -> CheckReport:
    """Verdicts for PATH on DEVICE (a profile name or .toml) under each runtime (NAME==VERSION; default the
    profile's), from NUM_SAMPLES of INPUTS (.npz/.npy; generated ones otherwise) plus edge inputs; see the
    module doc."""
    path = Path(path)
    profile = load_profile(device)
    ops = model_ops(path)
    specs = _runtimes(profile, runtimes)
    # Whether a runtime has a custom or Flex op is asked of that runtime (run on the userland), never of a list.
    custom = unsupported_ops(ops.model)
    verdicts = [RuntimeVerdict(f"{s.name} {s.version}", static_check(ops, s.name, s.version), False, None) for s in specs]
    host_runtime, fed = "-", "-"
    if profile.userland is not None:
        host_runtime, fed = _run_emulated(path, profile, specs, ops, verdicts, inputs, num_samples, seed)
    else:
        note(f"{profile.name} names no OS userland to emulate: the operator versions are checked, not run")
        for v, spec in zip(verdicts, specs):
            v.runs = v.static.ok if not custom or v.static.ok is False else None
            v.advice = _advice(ops, spec, None) if v.static.ok is False else None
            if v.runs is None:
                v.advice = (f"custom or Flex ops ({', '.join(custom)}): only the device's runtime can say whether "
                            "it has them; run the model there (benchmark --on)")
    userland = profile.userland.os if profile.userland else None
    return CheckReport(str(path), profile.name, userland, host_runtime, fed, list(ops.ops), ops.min_runtime_version,
                       verdicts)
