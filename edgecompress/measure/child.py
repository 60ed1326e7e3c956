"""The child process that measures one .tflite file: `python -m edgecompress.measure.child REQUEST_JSON`.

The request is a JSON object (ChildRequest's fields) given as the only argument or on stdin; the result is
one JSON object on stdout. The native runtime may print to stdout, so the result goes to a private copy of
the original stdout while fd 1 points at stderr. Running in a child means a model that crashes the runtime
(segfault, abort, out-of-memory kill) takes down only this process.

Memory budget: the limit is RLIMIT_DATA (private writable memory: heap, anonymous mmaps, thread stacks),
set as a soft limit just before the model is loaded, at the budget plus the part of the data segment that
is reserved but not resident at that moment (allocator and BLAS reservations made by the imports). The
effect is that resident memory at load time plus everything the model's load and runs allocate must fit
in the budget, which is how a device's RAM constrains the process. Seen here with MobileNetV2 1.0/224
(2 threads): 34 MB resident before the load, +29 MB of data for the model; it fails under a 65 MB budget
and runs under 70 MB, with a peak RSS of 84 MB: pages read later from the mmapped model file and library
code are file-backed, reclaimable on a device too, and not charged. The known overcount: each interpreter
thread's stack is charged at its full reservation (8 MB), resident or not.
RLIMIT_AS was rejected: it counts the shared libraries and the model file's read-only mmap (VmSize was
158 MB before loading, for 34 MB resident) and address-space reservations such as glibc's per-thread
malloc arenas, none of which a device must back with RAM. cgroup memory limits would count resident
memory exactly but need privileges a user on a Pi does not have.
If the load or a run fails under the limit, the child lifts the soft limit and retries once: a model that
then works is reported as not fitting the budget, one that still fails is reported with the runtime's
own error.

Test hook (edgecompress.isolation.crash_for_tests, used by tests/test_benchmark.py to prove isolation): if the
environment variable EDGECOMPRESS_TEST_CHILD_SIGNAL is "FILENAME:SIGNAL" (for example "b.tflite:SIGSEGV") and
the model's file name is FILENAME, the child sends itself SIGNAL right after the model is loaded.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# numpy 2 imports numpy.random on first use; under the memory budget that import itself can fail ("failed to
# map segment") and would be read as a crash, so it is made now, before the limit is set.
import numpy.random  # noqa: F401

from edgecompress.errors import UserError
from edgecompress.isolation import crash_for_tests
from edgecompress.runtime import load_interpreter, runtime_info
from edgecompress.measure import phases
from edgecompress.measure.inputs import InputsError, model_inputs
from edgecompress.measure.stats import latency_stats

MB = 1024 * 1024


@dataclass(frozen=True)
class ChildRequest:
    model: str
    threads: int = 1
    use_xnnpack: bool = True
    runs: int = phases.RUNS
    min_secs: float = phases.MIN_SECS
    warmup: int = phases.WARMUP_RUNS
    warmup_min_secs: float = phases.WARMUP_MIN_SECS
    max_secs: float = phases.MAX_SECS
    inputs: str | None = None
    cpu_cores: int | None = None
    memory_limit_mb: float | None = None
    seed: int = 0
    input_shapes: dict[str, list[int]] = field(default_factory=dict)  # inputs with free dimensions, sized


class BudgetExceeded(Exception):
    """The model loads and runs without the memory limit but not within it."""


@dataclass
class _Result:
    runtime: dict[str, str] = field(default_factory=dict)
    threads: int = 0
    xnnpack: bool = True
    cpus: list[int] = field(default_factory=list)
    init_ms: float | None = None
    first_ms: float | None = None
    warmup: dict[str, Any] | None = None
    latency_ms: dict[str, Any] | None = None
    timed: dict[str, Any] | None = None  # phases.PhaseEnd of the timed runs
    peak_rss_mb: float | None = None
    model_load_rss_mb: float | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None


def _status_mb(key: str) -> float | None:
    """A Vm* line of /proc/self/status in MB (None where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _peak_rss_mb() -> float:
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    # ru_maxrss is in KB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MB


def _pin(cores: int) -> list[int]:
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[:cores]
    os.sched_setaffinity(0, chosen)
    return chosen


def _limit_data(budget_mb: float) -> None:
    data, rss = _status_mb("VmData") or 0.0, _status_mb("VmRSS") or 0.0
    limit = int((budget_mb + max(0.0, data - rss)) * MB)
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def _lift_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    resource.setrlimit(resource.RLIMIT_DATA, (hard, hard))


def _ms(seconds: list[float]) -> list[float]:
    return [s * 1000.0 for s in seconds]


def _load_and_feed(req: ChildRequest, result: _Result) -> Callable[[], None]:
    """Load the model (timed, with its memory delta), set its inputs once; return its invoke."""
    rss_before = _status_mb("VmRSS") or 0.0
    t0 = time.perf_counter()
    interp, _ = load_interpreter(req.model, num_threads=req.threads, use_xnnpack=req.use_xnnpack,
                                  input_shapes=req.input_shapes)
    result.init_ms = (time.perf_counter() - t0) * 1000.0
    result.model_load_rss_mb = (_status_mb("VmRSS") or 0.0) - rss_before
    details = interp.get_input_details()
    feeds = model_inputs(details, Path(req.inputs) if req.inputs else None, req.seed)
    # Inputs are set once, as benchmark_model does: the timed loop is invoke() alone.
    for detail, (array, used) in zip(details, feeds):
        interp.set_tensor(detail["index"], array)
    result.inputs = [dataclasses.asdict(used) for _, used in feeds]
    return interp.invoke


def _run_phases(req: ChildRequest, invoke: Callable[[], None], result: _Result) -> None:
    # The first inference is timed on its own; benchmark_model counts it as warm-up run 1, so our warm-up
    # average leaves out that one-time cost (XNNPACK's lazy set-up) and their "first" is our first_ms.
    t0 = time.perf_counter()
    invoke()
    result.first_ms = (time.perf_counter() - t0) * 1000.0
    warm = _ms(phases.run_phase(invoke, phases.PhaseRule(req.warmup, req.warmup_min_secs, req.max_secs))[0])
    result.warmup = {"count": len(warm), "avg": sum(warm) / len(warm) if warm else None}
    timed, end = phases.run_phase(invoke, phases.PhaseRule(req.runs, req.min_secs, req.max_secs))
    result.latency_ms = dataclasses.asdict(latency_stats(_ms(timed)))
    result.timed = dataclasses.asdict(end)


def _first_inference_works(req: ChildRequest) -> bool:
    try:
        interp, _ = load_interpreter(req.model, num_threads=req.threads, use_xnnpack=req.use_xnnpack,
                                  input_shapes=req.input_shapes)
        interp.invoke()
    except (UserError, RuntimeError, ValueError, MemoryError):
        return False
    return True


def _measure_into(req: ChildRequest, result: _Result) -> None:
    if req.cpu_cores:
        result.cpus = _pin(req.cpu_cores)
    if req.memory_limit_mb is not None:
        _limit_data(req.memory_limit_mb)
    try:
        invoke = _load_and_feed(req, result)
        crash_for_tests(req.model)
        _run_phases(req, invoke, result)
    except InputsError:
        raise
    except (UserError, RuntimeError, ValueError, MemoryError) as exc:
        if req.memory_limit_mb is None:
            raise
        _lift_limit()
        if _first_inference_works(req):
            raise BudgetExceeded(_one_line(exc)) from exc
        raise
    result.peak_rss_mb = _peak_rss_mb()


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def run_request(req: ChildRequest) -> dict[str, Any]:
    """Measure REQ in this process; every expected failure becomes the result's error and error_kind."""
    info = runtime_info()  # imports the runtime now, so init time and load memory are the model's alone
    result = _Result(runtime={"name": info.name, "version": info.version}, threads=req.threads, xnnpack=req.use_xnnpack)
    try:
        _measure_into(req, result)
    except UserError as exc:
        result.error, result.error_kind = _one_line(exc), "input"
    except BudgetExceeded as exc:
        result.error, result.error_kind = str(exc), "memory"
    except (RuntimeError, ValueError, MemoryError) as exc:
        result.error, result.error_kind = _one_line(exc), "runtime"
    return dataclasses.asdict(result)


def _read_request(argv: list[str]) -> ChildRequest:
    raw = argv[0] if argv else sys.stdin.read()
    return ChildRequest(**json.loads(raw))


def main(argv: list[str] | None = None) -> int:
    req = _read_request(sys.argv[1:] if argv is None else argv)
    # Keep the real stdout for the result and send anything the native runtime prints to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    result = run_request(req)
    out.write(json.dumps(result))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
