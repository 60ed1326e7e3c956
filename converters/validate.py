"""Proof that a .tflite still computes what the original model did: both run on the same samples.

Every output is judged by what it is (edgecompress.compare): class scores by top-1 agreement, a sigmoid by
its decision at 0.5, anything else (boxes, activations, embeddings) by SQNR. The samples are the user's (or
generated ones) plus edge inputs built from them (all zeros, the minimum and the maximum seen), which find
what typical samples miss (seen: a float16 audio model that gives NaN for silence only, an int8 one whose DIV
refuses it). An output that is NaN or Inf where the original's is finite fails the export outright; the
error figures come from the samples alone.
Only the runtime (edgecompress.runtime) runs the .tflite; the original runs through edgecompress.models.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecompress.compare import OutputCheck, compare_outputs, output_problem
from edgecompress.errors import NativeCrash, WrongResult
from edgecompress.isolation import crash_for_tests, run_isolated
from edgecompress.models import LoadedModel
from edgecompress.probe_inputs import EDGE_INPUTS, with_edges
from edgecompress.runner import RunFailed, TFLiteRunner
from edgecompress.converters.modes import MODES


@dataclass(frozen=True)
class Validation:
    samples: int  # samples from DATA; the edge inputs come on top
    data: str  # "calibration" (the user's samples), "given" (--inputs) or "generated" (random, to the input spec)
    runtime: str
    outputs: list[OutputCheck] = field(default_factory=list)
    edge_inputs: tuple[str, ...] = EDGE_INPUTS
    # A model that keeps state between invocations: "reset" before each sample (its original is stateless), or
    # "streamed" (samples in order, state carried over); None for a stateless model.
    state: str | None = None
    # Streamed only: how far the same input run twice in a row moves the outputs (max abs): the state's effect.
    state_drift: float | None = None
    # Summaries over every output, for a one-line view: the worst class agreement is the one that matters.
    max_abs_error: float | None = None
    mean_abs_error: float | None = None
    top1_agreement: float | None = None  # the lowest top-1 agreement of the class outputs; None without any

    @property
    def nonfinite(self) -> list[OutputCheck]:
        """The outputs that are NaN/Inf on some sample where the original's are finite."""
        return [o for o in self.outputs if o.nonfinite]




def summarize(samples: int, data: str, runtime: str, outputs: list[OutputCheck],
              edge_inputs: tuple[str, ...] = EDGE_INPUTS, state: str | None = None,
              state_drift: float | None = None) -> Validation:
    errors = [o for o in outputs if o.max_abs_error is not None]
    agreements = [o.agreement for o in outputs if o.kind == "classes" and o.agreement is not None]
    return Validation(
        samples=samples, data=data, runtime=runtime, outputs=outputs, edge_inputs=edge_inputs, state=state,
        state_drift=state_drift,
        max_abs_error=max((o.max_abs_error for o in errors), default=None),  # type: ignore[arg-type]
        mean_abs_error=float(np.mean([o.mean_abs_error for o in errors])) if errors else None,
        top1_agreement=min(agreements, default=None),
    )


def validation_warnings(validation: Validation, quantize: str) -> list[str]:
    """Per output that VALIDATION says no longer computes what the original did: why, and the next step."""
    step = MODES[quantize].next_step
    if validation.state_drift:  # streamed, and the state moves the outputs: it may be the cause, not the mode
        step = (f"the model keeps state between invocations (the same input twice in a row differs by "
                f"{validation.state_drift:.3g}) and the samples were streamed: if its original is stateless, "
                "validate with the state reset (without --stream); otherwise " + step)
    warnings = []
    for o in validation.outputs:
        problem = output_problem(o)
        if problem:
            warnings.append(f"output {o.name!r} of the {quantize} export {problem}, max abs error "
                            f"{o.max_abs_error:.3g}: {step}")
    return warnings


def check_finite_outputs(validation: Validation, what: str, quantize: str) -> None:
    """A WrongResult naming each output of WHAT that is NaN/Inf where the original's is finite."""
    bad = validation.nonfinite
    if not bad:
        return
    total = validation.samples + len(validation.edge_inputs)
    found = "; ".join(f"output {o.name!r} on {o.nonfinite} of {total} samples" for o in bad)
    edges = f", edge inputs ({', '.join(validation.edge_inputs)}) included" if validation.edge_inputs else ""
    cause = " (float16 weights: beyond 65504 they overflow, below 6e-8 they become 0)" if quantize == "float16" else ""
    raise WrongResult(f"{what} gives NaN/Inf where the original is finite{cause}: {found}{edges}; "
                      f"{MODES[quantize].next_step}", settings=("quantize",))


def validate(tflite_path: str | Path, model: LoadedModel, feeds: dict[str, np.ndarray], data: str) -> Validation:
    """Run FEEDS (batches per input name) and the edge inputs through both models and compare every output.

    Keras resets a stateless model's state for every batch, so a .tflite that keeps state (a converted LSTM)
    is reset before each sample; a model with stateful layers is streamed, samples in order, like the original."""
    count = len(next(iter(feeds.values())))
    all_feeds = with_edges(feeds)
    expected = reference_outputs(model, all_feeds)
    stream = model.is_stateful
    return compare(tflite_path, [o.name for o in model.outputs], expected, all_feeds, data, count, stream)


def validate_tflite(
    tflite_path: str | Path, reference: TFLiteRunner, feeds: dict[str, np.ndarray], data: str, stream: bool = False
) -> Validation:
    """The same comparison with a .tflite as the reference (no TensorFlow): a quantized file against its source.
    STREAM: samples in order with the state carried over (a streaming model), else state reset per sample."""
    count = len(next(iter(feeds.values())))
    all_feeds = with_edges(feeds)
    names = [o.name for o in reference.outputs]
    expected = run_file_isolated(reference.path, all_feeds, len(EDGE_INPUTS), reset=not stream).outputs
    return compare(tflite_path, names, expected, all_feeds, data, count, stream)


def compare(tflite_path: str | Path, names: list[str], expected: list[np.ndarray], feeds: dict[str, np.ndarray],
            data: str, samples: int, stream: bool = False) -> Validation:
    """Run FEEDS through the .tflite and judge each of its outputs against EXPECTED (one array per output)."""
    run = run_file_isolated(tflite_path, feeds, len(EDGE_INPUTS), reset=not stream, probe=stream)
    outputs = compare_outputs(names, expected, run.in_order(names), figures_on=samples)
    state = ("streamed" if stream else "reset") if run.state_variables else None
    return summarize(samples, data, run.runtime, outputs, state=state, state_drift=run.state_drift)


@dataclass(frozen=True)
class FileRun:
    """What running a .tflite on a batch of samples gave, sample by sample (edgecompress.runner)."""

    outputs: list[np.ndarray]  # one array per output, samples stacked
    names: list[str]  # the outputs' names, in that order
    runtime: str
    state_variables: int
    state_drift: float | None = None  # with probe, for a model that keeps state (see _state_drift)

    def in_order(self, names: list[str]) -> list[np.ndarray]:
        """The outputs in the order of NAMES when they are these outputs' names, else as run. A SignatureDef
        lists outputs by name, so a file given one (full int8 of a signature-less file) can return them in
        another order than its source."""
        if sorted(names) != sorted(self.names):
            return self.outputs
        return [self.outputs[self.names.index(name)] for name in names]


def run_file(path: str | Path, feeds: dict[str, np.ndarray], edges: int = 0, reset: bool = True,
             probe: bool = False) -> FileRun:
    """PATH run on FEEDS in this process (see run_all); PROBE: also measure the state's effect."""
    runner = TFLiteRunner(path)
    crash_for_tests(path)
    outputs = run_all(runner, feeds, edges, reset)
    drift = _state_drift(runner, feeds) if probe and runner.state_variables else None
    return FileRun(outputs, [o.name for o in runner.outputs], f"{runner.runtime.name} {runner.runtime.version}",
                   runner.state_variables, drift)


def run_files(paths: Sequence[str], feeds: dict[str, np.ndarray], names: list[str]) -> list[list[np.ndarray]]:
    """Each file's outputs on FEEDS (run_file), in the order of the output NAMES: for comparing several files of
    one model in a single child process."""
    return [run_file(p, feeds).in_order(names) for p in paths]


def run_files_isolated(paths: Sequence[str], feeds: dict[str, np.ndarray],
                       names: list[str]) -> list[list[np.ndarray] | NativeCrash]:
    """run_files in one child process (one start instead of one per file); when a file crashes the runtime,
    each is run alone to find which: its entry is then the NativeCrash."""
    try:
        return run_isolated(run_files, list(paths), feeds, names, what=f"the runtime, running {len(paths)} files")
    except NativeCrash:
        found: list[list[np.ndarray] | NativeCrash] = []
        for path in paths:
            try:
                found.append(run_isolated(run_files, [path], feeds, names, what=f"the runtime, running {path}")[0])
            except NativeCrash as crash:
                found.append(crash)
        return found


def run_file_isolated(path: str | Path, feeds: dict[str, np.ndarray], edges: int = 0, reset: bool = True,
                      probe: bool = False) -> FileRun:
    """run_file in a child process: a file that crashes the runtime (an abort, a segfault) becomes a NativeCrash
    naming the file and the signal, and cannot take the caller down (nor leave its output half-written)."""
    return run_isolated(run_file, str(path), feeds, edges, reset, probe,
                        what=f"the runtime, running {Path(path).name}")


def _state_drift(runner: TFLiteRunner, feeds: dict[str, np.ndarray]) -> float:
    """The same first sample twice in a row from a cleared state: how far the second run's outputs moved."""
    first = {k: v[:1] for k, v in feeds.items()}
    with np.errstate(all="ignore"):
        once = runner.run(first, reset=True)
        twice = runner.run(first)
    return max(float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0 for a, b in zip(once, twice))


def run_all(runner: TFLiteRunner, feeds: dict[str, np.ndarray], edges: int = 0, reset: bool = True) -> list[np.ndarray]:
    """RUNNER's outputs for every sample of FEEDS (the last EDGES of them edge inputs), one sample at a time
    (batch 1), stacked per output; RESET: the model's state cleared before each. A sample the runtime fails on
    is named in the RunFailed."""
    count = len(next(iter(feeds.values())))
    per_sample = []
    for i in range(count):
        try:
            with np.errstate(all="ignore"):  # NaN in, NaN out: counted by the comparison, not warned about
                per_sample.append(runner.run({k: v[i:i + 1] for k, v in feeds.items()}, reset=reset))
        except RunFailed as exc:
            which = (f"the edge input {EDGE_INPUTS[i - (count - edges)]!r}" if i >= count - edges
                     else f"sample {i + 1} of {count - edges}")
            exc.where = which
            raise
    return [np.concatenate(outs) for outs in zip(*per_sample)]


def reference_outputs(model: LoadedModel, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The original model's outputs on FEEDS, in one batch when its batch size is free, else sample by sample."""
    if all(s.shape[0] is None for s in model.inputs):
        return model.predict(feeds)
    count = len(next(iter(feeds.values())))
    per_sample = [model.predict({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(count)]
    return [np.concatenate(outs) for outs in zip(*per_sample)]
