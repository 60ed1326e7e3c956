"""measure(path, options): one .tflite file measured in its own child process (edgecompress.measure.child).

The parent only reads the file (size, gzip size, sanity checks) and interprets the child's exit: a child
killed by a signal or exiting without a result becomes an error in the Measurement, so a model that crashes
the native runtime never takes the caller down. Bad input (a file that is not a model, --inputs that do not
match) raises UserError.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.errors import UserError
from edgecompress.fileio import gzip_size, require_file
from edgecompress.isolation import run_isolated
from edgecompress.runtime import load_check
from edgecompress.tflite_reader import TFLiteModel, read_model, unsupported_ops
from edgecompress.measure import phases
from edgecompress.measure.child import ChildRequest
from edgecompress.measure.inputs import InputUsed, npz_inputs
from edgecompress.measure.stats import LatencyStats

CHILD_MODULE = "edgecompress.measure.child"
# numpy's OpenBLAS reserves buffers per core at import; one thread keeps the child's baseline small
# (the benchmark never calls BLAS) and the memory budget about the model.
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1"}
STDERR_TAIL = 3


@dataclass(frozen=True)
class MeasureOptions:
    threads: int = 1
    runs: int = phases.RUNS
    warmup: int = phases.WARMUP_RUNS
    min_secs: float = phases.MIN_SECS
    warmup_min_secs: float = phases.WARMUP_MIN_SECS
    max_secs: float = phases.MAX_SECS
    use_xnnpack: bool = True
    inputs: Path | None = None
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # for inputs with free dimensions
    cpu_cores: int | None = None  # pin the child to this many cores
    memory_limit_mb: float | None = None  # hard memory budget for the child (see child.py)
    budget_owner: str | None = None  # who the budget belongs to (a device name), for error messages
    timeout: float = 600.0

    def validate(self) -> None:
        """Refuse settings benchmark_model would refuse, naming the option to fix."""
        checks = [
            (self.threads >= 1, f"--threads must be 1 or more (got {self.threads})"),
            (self.runs >= 1, f"--runs must be 1 or more (got {self.runs})"),
            (self.warmup >= 0, f"--warmup must be 0 or more (got {self.warmup})"),
            (self.min_secs >= 0, f"--min-secs must be 0 or more (got {self.min_secs})"),
            (self.warmup_min_secs >= 0, f"warm-up min seconds must be 0 or more (got {self.warmup_min_secs})"),
            (self.max_secs > 0, f"max seconds must be positive (got {self.max_secs})"),
            (self.cpu_cores is None or self.cpu_cores >= 1, f"cpu cores must be 1 or more (got {self.cpu_cores})"),
            (
                self.memory_limit_mb is None or self.memory_limit_mb > 0,
                f"the memory limit must be positive (got {self.memory_limit_mb} MB)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


@dataclass
class Measurement:
    model: str
    runtime: dict[str, str]
    threads: int
    xnnpack: bool
    size_bytes: int
    gzip_bytes: int
    cpus: list[int] = field(default_factory=list)
    init_ms: float | None = None
    first_ms: float | None = None
    warmup_count: int = 0
    warmup_avg_ms: float | None = None
    latency_ms: LatencyStats | None = None
    timed: phases.PhaseEnd | None = None  # how many timed runs were made, and which condition ended them
    peak_rss_mb: float | None = None
    model_load_rss_mb: float | None = None
    inputs: list[InputUsed] = field(default_factory=list)
    memory_limit_mb: float | None = None
    error: str | None = None
    error_kind: str | None = None  # runtime, memory, crash, timeout

    @property
    def ok(self) -> bool:
        return self.error is None


def _request(path: Path, options: MeasureOptions) -> ChildRequest:
    return ChildRequest(
        model=str(path),
        threads=options.threads,
        use_xnnpack=options.use_xnnpack,
        runs=options.runs,
        min_secs=options.min_secs,
        warmup=options.warmup,
        warmup_min_secs=options.warmup_min_secs,
        max_secs=options.max_secs,
        inputs=str(Path(options.inputs).resolve()) if options.inputs else None,
        cpu_cores=options.cpu_cores,
        memory_limit_mb=options.memory_limit_mb,
        input_shapes={name: list(shape) for name, shape in options.input_shapes.items()},
    )


def _budget(options: MeasureOptions) -> str:
    owner = f"{options.budget_owner} " if options.budget_owner else ""
    return f"the {owner}memory budget of {options.memory_limit_mb:g} MB"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _failed_exit(proc: subprocess.CompletedProcess, options: MeasureOptions) -> tuple[str, str]:
    """(error, kind) for a child that ended without a result."""
    if proc.returncode < 0:
        what = f"the runtime crashed (child killed by {_signal_name(-proc.returncode)})"
    else:
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-STDERR_TAIL:]
        what = f"the child exited with code {proc.returncode}" + (f": {' | '.join(tail)}" if tail else "")
    if options.memory_limit_mb is not None:
        what += f" under {_budget(options)}; it probably does not fit"
    return what, "crash"


class _ChildFailed(Exception):
    def __init__(self, error: str, kind: str) -> None:
        super().__init__(error)
        self.error, self.kind = error, kind


def _run_child(request: ChildRequest, options: MeasureOptions) -> dict[str, Any]:
    argv = [sys.executable, "-m", CHILD_MODULE, json.dumps(dataclasses.asdict(request))]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=options.timeout, env={**os.environ, **CHILD_ENV}
        )
    except subprocess.TimeoutExpired:
        raise _ChildFailed(f"timed out after {options.timeout:g} s (the child was killed)", "timeout") from None
    if proc.returncode != 0 or not proc.stdout.strip():
        raise _ChildFailed(*_failed_exit(proc, options))
    return json.loads(proc.stdout)


def _from_child(base: Measurement, data: dict[str, Any]) -> Measurement:
    warmup = data.get("warmup") or {}
    return dataclasses.replace(
        base,
        runtime=data["runtime"],
        cpus=data["cpus"],
        init_ms=data["init_ms"],
        first_ms=data["first_ms"],
        warmup_count=warmup.get("count", 0),
        warmup_avg_ms=warmup.get("avg"),
        latency_ms=LatencyStats(**data["latency_ms"]) if data["latency_ms"] else None,
        timed=_phase_end(data["timed"]),
        peak_rss_mb=data["peak_rss_mb"],
        model_load_rss_mb=data["model_load_rss_mb"],
        inputs=[InputUsed(**{**u, "shape": tuple(u["shape"])}) for u in data["inputs"]],
    )


def _phase_end(data: dict[str, Any] | None) -> phases.PhaseEnd | None:
    return None if data is None else phases.PhaseEnd(**{**data, "rule": phases.PhaseRule(**data["rule"])})


def _input_details(model: TFLiteModel) -> list[dict[str, Any]]:
    """The model's inputs in the form Interpreter.get_input_details() gives them (what inputs.py reads)."""
    return [
        {
            "name": t.name,
            "shape": t.shape,
            "dtype": t.dtype,
            "quantization": (t.quantization.scale[0], t.quantization.zero_point[0]) if t.quantization.is_quantized else (0.0, 0),
        }
        for t in model.inputs
    ]


def check_model(path: str | os.PathLike, inputs: Path | None = None, use_xnnpack: bool | None = True) -> TFLiteModel:
    """Refuse, before any child runs, what is bad input: not a model, mismatched --inputs, and custom or Flex ops
    this host's runtime cannot load with USE_XNNPACK (None: the model runs elsewhere, whose runtime says)."""
    model = read_model(path)
    custom = unsupported_ops(model)
    if custom and use_xnnpack is not None:
        require_runtime_loads(path, custom, use_xnnpack)
    if inputs is not None:
        npz_inputs(require_file(inputs, "--inputs file"), _input_details(model))
    return model


def require_runtime_loads(path: str | os.PathLike, custom: list[str], use_xnnpack: bool) -> None:
    """Ask the runtime whether it has the custom or Flex ops CUSTOM of PATH: load and allocate it in a child.
    Which custom ops a runtime resolves is its own business (seen: ai-edge-litert's XNNPACK delegate runs
    MediaPipe's Convolution2DTransposeBias, its plain resolver does not), so no list here decides it."""
    try:
        run_isolated(load_check, str(path), use_xnnpack, what=f"the runtime, loading {Path(path).name}")
    except UserError as exc:
        fixes = "re-convert it with TFLITE_BUILTINS only, or use a runtime built with these ops"
        if not use_xnnpack:
            fixes += ", or run with XNNPACK (it provides some)"
        raise UserError(f"{str(exc).rstrip('.')}; it uses custom or Flex ops ({', '.join(custom)}): {fixes}") from exc


def measure(path: str | os.PathLike, options: MeasureOptions = MeasureOptions()) -> Measurement:
    """Measure one .tflite file in a child process; crashes and budget failures come back as `error`.

    Bad input (see check_model) raises UserError before the child starts.
    """
    options.validate()
    model = check_model(path, options.inputs, options.use_xnnpack)
    data = Path(path).read_bytes()
    base = Measurement(
        model=str(path),
        runtime={},
        threads=options.threads,
        xnnpack=options.use_xnnpack,
        size_bytes=model.size_bytes,
        gzip_bytes=gzip_size(data),
        memory_limit_mb=options.memory_limit_mb,
    )
    try:
        result = _run_child(_request(Path(path).resolve(), options), options)
    except _ChildFailed as exc:
        return dataclasses.replace(base, error=exc.error, error_kind=exc.kind)
    measured = _from_child(base, result)
    kind, error = result["error_kind"], result["error"]
    if kind == "input":
        raise UserError(error)
    if kind == "memory":
        error = f"{Path(path).name} does not fit in {_budget(options)} (it runs without the limit): {error}"
    return dataclasses.replace(measured, error=error, error_kind=kind)
