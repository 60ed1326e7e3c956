"""The work on one variant, stage by stage, over the public APIs of the lower layers.

Before any build, one worker checks the recipe's files against each other (CheckTask): the models load and
the data fits them (input keys, shapes, labels), so a wrong file stops the run in one line, not in every variant.
Build stages run in a worker process (they import TensorFlow):
  optimize  edgecompress.optimize.optimize       (prune / cluster / QAT / low-rank / distillation)
  convert   edgecompress.converters.convert_model (quantization, calibration, validation)
  evaluate  edgecompress.evaluate.evaluate        (held-out accuracy of the .tflite)
Measure stages run in the parent, one variant at a time, after every build (so training in a worker never
disturbs a timing), and need no TensorFlow:
  benchmark edgecompress.benchmark.benchmark      (host, each model in its own child process)
  DEVICE    the same under the device profile     (its threads and memory budget, plus the estimate)
            or, for a device with `on`, edgecompress.remote.session.benchmark_over_ssh on the device itself

Each stage's summary is written atomically (JSON) after its output file, so a stage is done when its JSON
exists; a resumed variant skips done stages.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from edgecompress.pipeline.cache import VariantDir, read_json, write_json
from edgecompress.pipeline.executor import TaskFiles
from edgecompress.pipeline.grid import Variant
from edgecompress.pipeline.recipe import BenchmarkSettings, DataFiles, DeviceAccess, Training
from edgecompress.pipeline.record import DeviceResult, HostResult, Measured

if TYPE_CHECKING:
    from edgecompress.benchmark import DeviceRunResult
    from edgecompress.measure import Measurement

BUILD_STAGES = ("optimize", "convert", "evaluate")
LOG_NAME = "log.txt"


@dataclass(frozen=True)
class BaselineTask:
    """Score the recipe's own model on the held-out data (what accuracy drops are measured from)."""

    model: Path
    eval_data: Path
    key: str
    file: Path
    eval_output: str | None = None  # the output the labels are for

    def files(self) -> TaskFiles:
        return TaskFiles((self.model, self.eval_data), (self.file, self.file.with_suffix(".log")))


@dataclass(frozen=True)
class BuildTask:
    variant: Variant
    key: str
    dir: VariantDir
    model: Path
    data: DataFiles
    training: Training

    @property
    def trains(self) -> bool:
        return self.variant.settings.needs_training

    def files(self) -> TaskFiles:
        d = self.data
        inputs = {self.model, *(p for p in (d.train, d.val, d.test, d.calibration) if p is not None)}
        if self.variant.settings.distill_student is not None:
            inputs.add(self.variant.settings.distill_student)
        return TaskFiles(tuple(sorted(inputs)), (self.dir.path,))


@dataclass(frozen=True)
class CheckTask:
    model: Path
    students: tuple[Path, ...]  # distillation students: trained on data.train too
    data: DataFiles
    training: bool  # some variant fine-tunes: data.train (and val) must fit the models
    calibration: bool  # some variant is calibrated on data.calibration

    def files(self) -> TaskFiles:
        d = self.data
        inputs = {self.model, *self.students, *(p for p in (d.train, d.val, d.test, d.calibration) if p is not None)}
        return TaskFiles(tuple(sorted(inputs)), ())


def check_files(task: CheckTask) -> tuple[str, str] | None:
    """(recipe field, what is wrong) for the first problem with the recipe's model and data files, or None."""
    from edgecompress.calibration.checks import check_labels, check_source
    from edgecompress.calibration.sources import open_source
    from edgecompress.errors import UserError
    from edgecompress.models import load_model
    from edgecompress.optimize.data import load_labeled

    data = task.data
    field = "model"
    try:
        model = load_model(task.model)
        field = "data.test" if data.test is not None else "data.val"
        held_out = open_source(data.eval, model.inputs)
        check_source(held_out, model.inputs)
        check_labels(held_out)
        if task.calibration and data.calibration is not None:
            field = "data.calibration"
            check_source(open_source(data.calibration, model.inputs), model.inputs)
        if task.training and data.train is not None:
            field = "distill_student"
            trained = [model, *map(load_model, task.students)]
            for what, path in (("train", data.train), ("val", data.val)):
                if path is None:
                    continue
                field = f"data.{what}"
                for m in trained:
                    load_labeled(path, m.inputs, m.outputs, what)
    except UserError as exc:
        return field, str(exc)
    return None


def build_stages(variant: Variant) -> tuple[str, ...]:
    return BUILD_STAGES if variant.settings.needs_training else BUILD_STAGES[1:]


def run_task(task: CheckTask | BaselineTask | BuildTask, emit: Callable[[str], None]) -> Any:
    """The worker's entry point (module-level so the executor can send it to another process)."""
    if isinstance(task, CheckTask):
        return check_files(task)
    if isinstance(task, BaselineTask):
        with _logged(task.file.with_suffix(".log")):
            return baseline(task, emit)
    task.dir.claim(task.key)
    with _logged(task.dir.path / LOG_NAME):
        return build(task, emit)


def baseline(task: BaselineTask, emit: Callable[[str], None]) -> dict[str, Any]:
    from edgecompress.evaluate import evaluate

    emit("evaluate")
    start = time.perf_counter()
    result = evaluate(task.model, task.eval_data, model_output=task.eval_output)
    if result.metric not in ("accuracy", "mae", "perplexity"):
        from edgecompress.errors import UserError

        raise UserError(f"{task.eval_data.name}: its labels are judged by {result.metric}, and recipes rank variants "
                        "by accuracy or MAE only: score the exports with `edgecompress evaluate`, or give class or "
                        "float labels")
    summary = {"key": task.key, **result.to_dict(), "seconds": time.perf_counter() - start}
    write_json(task.file, summary)
    return summary


def build(task: BuildTask, emit: Callable[[str], None]) -> dict[str, Any]:
    """Optimize (when asked), convert and evaluate one variant; returns the summary kept in build.json."""
    vdir, settings = task.dir, task.variant.settings
    stages: dict[str, Any] = {}
    source = task.model
    if settings.needs_training:
        emit("optimize")
        stages["optimize"] = _stage(vdir.path / "optimize.json", lambda: _optimize(task))
        source = Path(stages["optimize"]["output"])
    emit("convert")
    stages["convert"] = _stage(vdir.path / "convert.json", lambda: _convert(task, source))
    emit("evaluate")
    outputs = [o["name"] for o in (stages["convert"].get("validation") or {}).get("outputs", [])]
    stages["evaluate"] = _stage(vdir.path / "evaluate.json", lambda: _evaluate(task, outputs))
    # where the build ran (a Ray worker node, or this machine): timings are always taken by the driver
    summary = {"key": task.key, "tflite": vdir.tflite.name, "built_on": platform.node(), **stages}
    write_json(vdir.build_file, summary)
    return summary


def _stage(marker: Path, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run WORK unless MARKER (its summary, written after its outputs) shows it done under this key."""
    done = read_json(marker)
    if done is not None:
        return {**done, "reused": True}
    start = time.perf_counter()
    summary = {**work(), "seconds": time.perf_counter() - start}
    write_json(marker, summary)
    return summary


def _optimize(task: BuildTask) -> dict[str, Any]:
    from edgecompress.optimize import TrainSettings, optimize, techniques_from_settings

    s = task.variant.settings
    techniques = techniques_from_settings(s.as_dict())
    patience = {"patience": task.training.patience} if task.training.patience is not None else {}
    training = TrainSettings(
        epochs=s.epochs or task.training.epochs,
        **patience,
        batch_size=task.training.batch_size,
        learning_rate=s.learning_rate or task.training.learning_rate,
        seed=task.training.seed,
    )
    output = task.dir.keras
    model, distill = task.model, None
    if s.distill_student is not None:  # the recipe's model teaches the (smaller) student
        from edgecompress.optimize.distill import DistillationConfig

        given = {"temperature": s.temperature, "alpha": s.alpha}
        distill = DistillationConfig(task.model, **{k: v for k, v in given.items() if v is not None})
        model = s.distill_student
    result = optimize(model, output, task.data.train, techniques, val=task.data.val, settings=training,
                      distill=distill, force=True)
    return result.to_dict()


def _convert(task: BuildTask, source: Path) -> dict[str, Any]:
    from edgecompress.converters import convert_model

    s = task.variant.settings
    if _is_language_model(source):
        return _convert_language_model(task, source)
    result = convert_model(
        source,
        task.dir.tflite,
        quantize=s.quantize,
        calibration=task.data.calibration if s.uses_calibration else None,
        num_samples=task.data.calibration_samples,
        io_type=s.io_type,
        block_size=s.block_size,
        algorithm=s.algorithm,
        force=True,  # the variant's folder is ours: a file here is a leftover of an interrupted stage
        seed=task.training.seed,
        # the fallback decision is made on val, so the test split that scores the variant stays unseen
        eval_data=task.data.val if s.max_drop is not None else None,
        max_drop=s.max_drop,
        model_output=task.data.eval_output,
    )
    return {
        "size_bytes": result.size_bytes,
        "gzip_bytes": result.gzip_bytes,
        "validation": dataclasses.asdict(result.validation) if result.validation else None,
        "flex_ops": result.flex_ops,
        "warnings": result.warnings,
        "float_layers": result.float_layers,
        "target_met": result.target_met,
    }


def _is_language_model(path: Path) -> bool:
    from edgecompress.models import load_model
    from edgecompress.text.lm import as_causal_lm

    try:
        as_causal_lm(load_model(path).model)
    except ValueError:
        return False
    return True


def _convert_language_model(task: BuildTask, source: Path) -> dict[str, Any]:
    """A causal LM's variant: the prefill/decode .tflite with its KV cache (converters.generative), validated on
    the calibration windows (else the validation ones)."""
    from edgecompress.converters.generative import convert_generative

    s = task.variant.settings
    result = convert_generative(source, task.dir.tflite, quantize=s.quantize, block_size=s.block_size,
                                algorithm=s.algorithm, validation_data=task.data.calibration or task.data.val,
                                force=True, seed=task.training.seed)
    return {"size_bytes": result.size_bytes, "gzip_bytes": result.gzip_bytes,
            "validation": dataclasses.asdict(result.validation), "flex_ops": [], "warnings": result.warnings,
            "float_layers": None, "target_met": None}


def _evaluate(task: BuildTask, source_outputs: list[str]) -> dict[str, Any]:
    """Score the variant's .tflite on the held-out data, on the output eval_output names: the .tflite keeps the
    source's outputs in order (SOURCE_OUTPUTS) but not their names."""
    from edgecompress.evaluate import evaluate

    wanted = task.data.eval_output
    output = str(source_outputs.index(wanted)) if wanted in source_outputs else wanted
    return evaluate(task.dir.tflite, task.data.eval, model_output=output).to_dict()


@contextlib.contextmanager
def _logged(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (TensorFlow's too, at the fd level) to PATH while the block runs.

    Workers run side by side under one progress bar, so their chatter goes to each variant's log. The log
    grows under a hidden name (which a resumed run clears) and takes its name when the task ends, failed
    or not: a failed variant's log is what explains it.
    """
    partial = path.with_name(f".{path.name}.partial")
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(partial, "wb", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            os.replace(partial, path)


# ------------------------------------------------------------------------------------------------ measure


def measure_stages(devices: tuple[str, ...]) -> tuple[str, ...]:
    return ("benchmark",) + devices


def measure(tflite: Path, settings: BenchmarkSettings, devices: tuple[str, ...],
            on_stage: Callable[[str], None], measured: dict[str, DeviceAccess] | None = None,
            inputs: Path | None = None) -> Measured:
    """Host latency and, per device, the emulated run and its estimated latency (runtime side only); a device
    in MEASURED is timed on the device itself over SSH instead. The model is fed the first sample of INPUTS
    (the held-out data): real token ids for a text model, where random ids would not be the real workload."""
    from edgecompress.benchmark import benchmark
    from edgecompress.measure import MeasureOptions

    options = MeasureOptions(
        threads=settings.threads, runs=settings.runs, warmup=settings.warmup,
        min_secs=settings.min_secs, warmup_min_secs=min(settings.min_secs, 0.5), inputs=inputs,
    )
    from edgecompress.generate import is_generative

    if is_generative(tflite):
        return _measure_language_model(tflite, settings, devices, on_stage, measured or {})
    on_stage("benchmark")
    host = benchmark([tflite], options)[0].measurement
    out = Measured(_host_summary(host))
    # A one-thread host run is what the device estimates take their p90/p50 from: no second run for it.
    one_thread = [host] if host.threads == 1 and host.latency_ms is not None else None
    for device in devices:
        on_stage(device)
        if measured and device in measured:
            summary = _measured_summary(tflite, options, device, measured[device])
        else:
            result = benchmark([tflite], options, device=device, one_thread_runs=one_thread)[0]
            assert result.device is not None  # benchmark() under a device always describes it
            summary = _device_summary(result.measurement, result.device)
        out.devices[device] = summary
    return out


def _measure_language_model(tflite: Path, settings: BenchmarkSettings, devices: tuple[str, ...],
                            on_stage: Callable[[str], None], measured: dict[str, DeviceAccess]) -> Measured:
    """A language model's figures are per generated token: the latency is one decode step (its p50), a device's
    the decode step its estimate allows (the lower of the memory roofline and the compute estimate), or the
    step timed on the device over SSH."""
    from edgecompress.benchmark import benchmark_lm
    from edgecompress.errors import UserError
    from edgecompress.remote.session import benchmark_lm_over_ssh
    from edgecompress.remote.ssh import parse_target

    on_stage("benchmark")
    host = benchmark_lm([tflite], settings.threads, settings.runs)[0].measurement
    out = Measured(_decode_summary(host))
    for device in devices:
        on_stage(device)
        if device in measured:
            access = measured[device]
            try:
                run = benchmark_lm_over_ssh([tflite], parse_target(access.on, access.ssh_config), access.remote_python,
                                            settings.threads, settings.runs)
            except UserError as exc:
                out.devices[device] = DeviceResult(source="measured", measured_on=access.on, threads=settings.threads,
                                                   error=str(exc))
                continue
            m = run.measurements[0]
            out.devices[device] = DeviceResult(source="measured", measured_on=run.target,
                                               identity=dataclasses.asdict(run.identity), threads=m.threads,
                                               measured_p50_ms=m.decode_ms.p50, measured_p90_ms=m.decode_ms.p90)
            continue
        estimate = benchmark_lm([tflite], runs=settings.runs, device=device)[0].device
        tokens = estimate.estimated_tokens_per_s if estimate is not None else None
        out.devices[device] = DeviceResult(
            estimated_p50_ms=1000 / tokens if tokens else None, threads=estimate.threads if estimate else None,
            estimated_threads=estimate.threads if estimate else None,
            calibration={"bound": estimate.bound, "roofline_tokens_per_s": estimate.roofline_tokens_per_s,
                         "compute_tokens_per_s": estimate.compute_tokens_per_s} if estimate else None,
            error=None if tokens else f"no estimate: {estimate.unavailable if estimate else 'none'}")
    return out


def _decode_summary(m: Any) -> HostResult:
    lat = m.decode_ms
    return HostResult(runtime={"name": m.runtime}, threads=m.threads, p50_ms=lat.p50, p90_ms=lat.p90, avg_ms=lat.avg,
                      runs=lat.count, peak_rss_mb=m.peak_rss_mb, error=None)


def _measured_summary(tflite: Path, options: Any, name: str, access: DeviceAccess) -> DeviceResult:
    """TFLITE timed on the device over SSH; a device that cannot be reached is this variant's error, not the run's."""
    from edgecompress.errors import UserError
    from edgecompress.remote.session import benchmark_over_ssh
    from edgecompress.remote.ssh import parse_target

    try:
        run = benchmark_over_ssh([tflite], options, parse_target(access.on, access.ssh_config), access.remote_python,
                                 device_name=name)
    except UserError as exc:
        return DeviceResult(source="measured", measured_on=access.on, threads=options.threads, error=str(exc))
    m = run.results[0].measurement
    lat = m.latency_ms
    return DeviceResult(source="measured", measured_on=run.target, identity=dataclasses.asdict(run.identity),
                        threads=m.threads, measured_p50_ms=lat.p50 if lat else None,
                        measured_p90_ms=lat.p90 if lat else None, error=m.error)


def _device_summary(m: Measurement, device: DeviceRunResult) -> DeviceResult:
    est = device.estimate
    return DeviceResult(
        estimated_p50_ms=est.p50_ms if est else None,
        estimated_p90_ms=est.p90_ms if est else None,
        threads=m.threads,
        estimated_threads=device.threads,
        memory_budget_mb=device.memory_budget_mb,
        calibration=est.calibration() if est else None,
        error=m.error or (None if est else f"no estimate: {device.unavailable or 'the device could not be calibrated on this host'}"),
    )


def _host_summary(m: Any) -> HostResult:
    lat = m.latency_ms
    return HostResult(runtime=m.runtime, threads=m.threads, p50_ms=lat.p50 if lat else None,
                      p90_ms=lat.p90 if lat else None, avg_ms=lat.avg if lat else None, runs=lat.count if lat else 0,
                      peak_rss_mb=m.peak_rss_mb, error=m.error)
