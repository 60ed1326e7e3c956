"""`run_recipe`: a recipe's variants built, measured, chosen between and reported, resumably.

Order of work: (1) the baseline score and every unfinished variant's build (optimize, convert, evaluate) in
worker processes through the Executor; (2) each built variant measured on the host and under each device
profile, one at a time in this process, with nothing else running; (3) selection and the report. This
process never imports TensorFlow; workers do.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from edgecompress.errors import UserError
from edgecompress.optimize.train import FINE_TUNE_EPOCHS
from edgecompress.progress import bar, note
from edgecompress.pipeline.cache import RunDir, VariantDir, VariantKeys, read_json, variant_keys, write_json
from edgecompress.tflite_reader import graph_digest, read_model
from edgecompress.pipeline.executor import Executor, LocalExecutor
from edgecompress.pipeline.grid import Variant
from edgecompress.pipeline.recipe import Constraints, Execution, Recipe, load_recipe
from edgecompress.pipeline.search import SearchResult, run_search
from edgecompress.pipeline.record import Measured, VariantRecord
from edgecompress.pipeline.report import Report, write_report
from edgecompress.pipeline.select import Selection, select
from edgecompress.pipeline.stages import BaselineTask, BuildTask, CheckTask, build_stages, measure, measure_stages, run_task


@dataclass
class RunResult:
    run_dir: Path
    recipe: Path
    objective: str
    constraints: Constraints
    targets: list[str]
    baseline: dict[str, Any] | None
    records: list[VariantRecord]
    selections: list[Selection]
    report: Report
    notes: list[str]
    redone: list[str] = field(default_factory=list)  # variants (re)built or re-measured in this run
    seconds: float = 0.0
    search: SearchResult | None = None  # with a [search] other than the full grid
    phase_seconds: dict[str, float] = field(default_factory=dict)  # check, build, measure (wall time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "recipe": str(self.recipe),
            "objective": self.objective,
            "constraints": asdict(self.constraints),
            "results": str(self.report.results),
            "report": str(self.report.markdown),
            "plots": [str(p) for p in self.report.plots],
            "baseline": self.baseline,
            "variants": [r.to_dict() for r in self.records],
            "selections": [asdict(s) for s in self.selections],
            "notes": self.notes,
            "redone": self.redone,
            "seconds": self.seconds,
            "search": self.search.to_dict() if self.search else None,
            "phase_seconds": self.phase_seconds,
        }


def default_run_dir(recipe: Path) -> Path:
    return Path.cwd() / "runs" / recipe.stem


class _Progress:
    """One bar over every remaining stage of every variant; the label says what runs now."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and total > 0
        self._bar: Any = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "_Progress":
        if self.enabled:
            self._bar = self._stack.enter_context(bar(None, "variants", length=self.total))  # type: ignore[arg-type]
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def step(self, label: str, done: int = 0) -> None:
        if self._bar is not None:
            self._bar.label = label
            self._bar.update(done)


def run_recipe(
    recipe_path: str | Path,
    run_dir: str | Path | None = None,
    jobs: int = 1,
    progress: bool = True,
    executor: Executor | None = None,
    worker_memory_mb: int | None = None,
    execution: Execution | None = None,
) -> RunResult:
    """Run every variant of the recipe at RECIPE_PATH into RUN_DIR (reusing what is finished there).

    EXECUTION (local processes or Ray) overrides the recipe's [execution]; an EXECUTOR object overrides both.
    """
    start = time.perf_counter()
    recipe = load_recipe(recipe_path)
    if jobs < 1:
        raise UserError(f"jobs {jobs} must be 1 or more", settings=("jobs",))
    out = Path(run_dir) if run_dir is not None else default_run_dir(recipe.path)
    executor = executor or make_executor(execution or recipe.execution, jobs, worker_memory_mb)
    notes = list(recipe.notes)
    targets = list(recipe.devices) or ["host"]
    search = None
    with executor, RunDir(out).open(recipe.path) as rd:
        batches = _Batches(recipe, rd, executor, progress, notes)
        if recipe.search.exhaustive:
            records = batches.run(list(recipe.variants))
        else:
            search = run_search(recipe, targets, batches.run, executor.jobs)
            records = search.records
            notes.append(f"{recipe.search.strategy} search: {search.stopped}")
        notes.append(_where_note(executor, batches.builds))
        notes += [f"{name}: measured on the device over SSH ({access.on}), not estimated"
                  for name, access in recipe.measured.items()]
        selections = [select(records, recipe.constraints, recipe.objective, t) for t in targets]
        report = write_report(rd.path, recipe.path, recipe.objective, recipe.constraints, batches.baseline, records,
                              selections, targets, notes, search)
    return RunResult(rd.path, recipe.path, recipe.objective, recipe.constraints, targets, batches.baseline, records,
                     selections, report, notes, batches.redone, time.perf_counter() - start, search,
                     batches.seconds)


class _Batches:
    """Builds, measures and records lists of variants in one run folder; the baseline is scored once."""

    def __init__(self, recipe: Recipe, rd: RunDir, executor: Executor, progress: bool, notes: list[str]) -> None:
        self.recipe, self.rd, self.executor, self.progress, self.notes = recipe, rd, executor, progress, notes
        self.baseline: dict[str, Any] | None = None
        self.builds: list[dict[str, Any] | None] = []
        self.redone: list[str] = []
        self._calibrated = False
        self._checked = False
        # wall time per phase, summed over batches: where a run's time goes (and what more workers would cut)
        self.seconds = {"check": 0.0, "build": 0.0, "measure": 0.0}
        self.graphs: dict[str, tuple[str, Measured]] = {}  # .tflite digest -> first variant, its figures

    def run(self, variants: list[Variant]) -> list[VariantRecord]:
        recipe, rd = self.recipe, self.rd
        keys = variant_keys(recipe, variants)
        dirs = {v.name: rd.variant(v.name) for v in variants}
        finished = {v.name: dirs[v.name].finished(keys.record[v.name]) for v in variants}
        todo = [v for v in variants if finished[v.name] is None]
        to_build = [v for v in todo if dirs[v.name].built(keys.build[v.name]) is None]
        baseline_file = rd.path / "baseline.json"
        baseline = self.baseline or read_json(baseline_file)
        baseline = baseline if baseline and baseline.get("key") == keys.baseline else None
        if len(todo) < len(variants):
            note(f"{len(variants) - len(todo)} of {len(variants)} variants finished in an earlier run: reused")
        if not self._checked and (to_build or baseline is None):  # once: every candidate's files at the start
            started = time.perf_counter()
            _check_files(self.executor, recipe, list(recipe.variants))
            self.seconds["check"] += time.perf_counter() - started
            self._checked = True
        if todo and not self._calibrated:
            _calibrate_devices(tuple(d for d in recipe.devices if d not in recipe.measured), self.notes)
            self._calibrated = True
        total = (sum(len(build_stages(v)) for v in to_build) + (baseline is None)
                 + len(todo) * len(measure_stages(recipe.devices)))
        failures: dict[str, tuple[str, str, bool]] = {}
        with _Progress(total, self.progress) as bar_:
            tasks: list[Any] = [BuildTask(v, keys.build[v.name], dirs[v.name], recipe.model, recipe.data, recipe.training)
                                for v in sorted(to_build, key=lambda v: -_training_cost(v, recipe))]
            if baseline is None:  # quick: last, so that the long builds start first
                tasks.append(BaselineTask(recipe.model, recipe.data.eval, keys.baseline, baseline_file,
                                          recipe.data.eval_output))
            started = time.perf_counter()
            baseline = _build_all(self.executor, tasks, bar_, failures) or baseline
            self.seconds["build"] += time.perf_counter() - started
            if baseline is None:
                raise UserError(f"the source model could not be scored on the held-out data: {failures['(baseline)'][1]}")
            started = time.perf_counter()
            for v in todo:
                if v.name not in failures:
                    _measure_one(recipe, v, dirs[v.name], keys, bar_, failures, self.graphs)
            self.seconds["measure"] += time.perf_counter() - started
        self.baseline = baseline
        self.builds += [dirs[v.name].built(keys.build[v.name]) for v in variants]
        self.redone += [v.name for v in todo]
        return [_final_record(v, dirs[v.name], keys.record[v.name], finished[v.name], failures.get(v.name), baseline)
                for v in variants]


def _where_note(executor: Executor, builds: list[dict[str, Any] | None]) -> str:
    """Where the figures came from: builds on the executor's nodes, timings always on this machine."""
    nodes = sorted({b["built_on"] for b in builds if b and b.get("built_on")})
    return (f"variants built by {executor.where}" + (f" (on {', '.join(nodes)})" if nodes else "")
            + f"; host timings and device estimates measured on {platform.node()}, one variant at a time")


def make_executor(execution: Execution, jobs: int, worker_memory_mb: int | None) -> Executor:
    if execution.executor == "ray":
        from edgecompress.pipeline.ray_executor import RayExecutor

        return RayExecutor(jobs, execution.address, worker_memory_mb)
    return LocalExecutor(jobs, worker_memory_mb)


def _final_record(variant: Variant, vdir: VariantDir, key: str, finished: dict[str, Any] | None,
                  failure: tuple[str, str, bool] | None, baseline: dict[str, Any]) -> VariantRecord:
    """The variant's record for the report: a failure (written now), or the finished record with its drop."""
    if failure is not None:
        stage, error, crashed = failure
        record = VariantRecord(variant.name, variant.settings.as_dict(), variant.settings.techniques, key,
                               error=error, failed_stage=stage, retry=crashed)
        write_json(vdir.record_file, record.to_dict())
        return record
    record = VariantRecord.from_dict(finished or read_json(vdir.record_file) or {})
    record.reused = finished is not None
    if record.accuracy is not None and baseline.get("accuracy") is not None:
        record.accuracy_drop = (baseline["accuracy"] - record.accuracy) * 100
    if record.perplexity is not None and baseline.get("perplexity"):
        record.perplexity_rise = (record.perplexity / baseline["perplexity"] - 1) * 100
    return record


def _training_cost(variant: Variant, recipe: Recipe) -> int:
    """A rough cost, to start the longest builds first: with N workers the run ends with the last one, and
    a long training started last would keep one worker busy while the others idle."""
    s = variant.settings
    return (s.epochs or recipe.training.epochs or FINE_TUNE_EPOCHS) * len(s.techniques) if s.needs_training else 0


def _check_files(executor: Executor, recipe: Recipe, variants: list[Variant]) -> None:
    """The model and data files checked against each other in a worker, before any other work starts."""
    note("checking the model and the data files")
    students = tuple(dict.fromkeys(v.settings.distill_student for v in variants if v.settings.distill_student))
    task = CheckTask(recipe.model, students, recipe.data, any(v.settings.needs_training for v in variants),  # type: ignore[arg-type]
                     any(v.settings.needs_calibration for v in variants))
    outcome = next(iter(executor.map(run_task, [task])))
    if outcome.error is not None:
        raise RuntimeError(f"the check of the recipe's files failed: {outcome.error}")
    if outcome.value is not None:
        field, problem = outcome.value
        raise UserError(f"recipe {recipe.path.name}: {field}: {problem}")


def _calibrate_devices(devices: tuple[str, ...], notes: list[str]) -> None:
    """Make sure each device's estimate is calibrated on this host before the bar starts (its own progress)."""
    from edgecompress.devices import CalibrationUnavailable, load_profile
    from edgecompress.devices.calibrate import ensure_timings

    for name in devices:
        try:
            ensure_timings(load_profile(name))
        except CalibrationUnavailable as exc:
            notes.append(f"no latency estimates for {name}: {exc}")


def _build_all(executor: Executor, tasks: list[Any], progress: _Progress,
               failures: dict[str, tuple[str, str, bool]]) -> dict[str, Any] | None:
    """Run the baseline and the builds; record failures by variant name. Returns the baseline summary."""
    names = ["(baseline)" if isinstance(t, BaselineTask) else t.variant.name for t in tasks]
    units = [1 if isinstance(t, BaselineTask) else len(build_stages(t.variant)) for t in tasks]
    stage: dict[int, str] = {}  # task index -> the stage it is in
    done = dict.fromkeys(range(len(tasks)), 0)  # task index -> stages completed
    baseline = None

    def on_event(index: int, name: str) -> None:
        if index in stage:  # a new stage starts: the previous one is complete
            done[index] += 1
        stage[index] = name
        progress.step(f"{names[index]}: {name}", done=1 if done[index] else 0)

    for outcome in executor.map(run_task, tasks, on_event):
        i = outcome.index
        progress.step(f"{names[i]}: {'done' if outcome.error is None else 'failed'}", done=units[i] - done[i])
        if outcome.error is not None:
            failures[names[i]] = (stage.get(i, "start"), outcome.error, outcome.crashed)
        elif isinstance(tasks[i], BaselineTask):
            baseline = outcome.value
    return baseline


@contextlib.contextmanager
def _captured_stderr() -> Iterator[io.StringIO]:
    """The benchmark's per-model notes would tear the progress bar: keep them out of the terminal."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield buffer


def _measure_one(recipe: Recipe, variant: Variant, vdir: VariantDir, keys: VariantKeys, progress: _Progress,
                 failures: dict[str, tuple[str, str, bool]], graphs: dict[str, tuple[str, Measured]]) -> None:
    """Measure VARIANT's .tflite, or reuse the timings of a variant whose .tflite computes the same graph (GRAPHS:
    tflite_reader.graph_digest -> that variant and its figures): one graph gets one set of figures in a report,
    not timing noise passed on as a difference (five variants of one int8 graph read 24.3 to 35.9 us)."""
    build = vdir.built(keys.build[variant.name])
    assert build is not None  # built by _build_all, or failed (then not measured)
    units = len(measure_stages(recipe.devices))
    graph = graph_digest(read_model(vdir.tflite))
    if graph in graphs:
        twin, measured = graphs[graph]
        progress.step(f"{variant.name}: same graph as {twin}", done=units)
        record = dataclasses.replace(_record(variant, keys.record[variant.name], build, measured, vdir),
                                     same_graph_as=twin)
        write_json(vdir.record_file, record.to_dict())
        return
    current: list[str] = []

    def on_stage(stage: str) -> None:
        progress.step(f"{variant.name}: {stage}", done=1 if current else 0)
        current.append(stage)

    started = time.perf_counter()
    try:
        with _captured_stderr():
            measured = measure(vdir.tflite, recipe.benchmark, recipe.devices, on_stage, recipe.measured,
                               recipe.data.eval)
    except UserError as exc:
        failures[variant.name] = (current[-1] if current else "benchmark", str(exc), False)
        progress.step(f"{variant.name}: failed", done=units - max(len(current) - 1, 0))
        return
    progress.step(f"{variant.name}: done", done=1)
    graphs[graph] = (variant.name, measured)
    record = _record(variant, keys.record[variant.name], build, measured, vdir)
    record.seconds["measure"] = time.perf_counter() - started
    write_json(vdir.record_file, record.to_dict())  # last: the variant is finished from here on


def _record(variant: Variant, key: str, build: dict[str, Any], measured: Measured, vdir: VariantDir) -> VariantRecord:
    return VariantRecord.assemble(variant, key, build, measured, vdir.tflite.relative_to(vdir.path.parent.parent).as_posix())
