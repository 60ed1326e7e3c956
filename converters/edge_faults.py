"""A quantized candidate's faults on the edge inputs (all zeros, minimum, maximum: probe_inputs), found while an
accuracy-driven search runs rather than by the validation after it.

A candidate within the target on labelled data can still fail on an input no labelled sample resembles:
basic-pitch's full int8 stops at its DIV on a silent clip (an int8 divisor whose calibrated range rounds the
float epsilon to the zero point: div.cc "data[i] != zero_point"), and validation then refuses the file the
search chose. The fault names the op that failed or first gave NaN/Inf; the search keeps that op's inputs
float (their producers follow, as for any tensor it keeps float) and tries again. Runtime side (no TensorFlow).
"""
from __future__ import annotations

import dataclasses
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgecompress.isolation import run_isolated
from edgecompress.probe_inputs import EDGE_INPUTS, with_edges
from edgecompress.runner import RunFailed, TFLiteRunner
from edgecompress.runtime import first_line
from edgecompress.tflite_reader import Operator, Subgraph, parse_model
from edgecompress.progress import note
from edgecompress.converters.precision_steps import FallbackSearch, FallbackStep
from edgecompress.converters.validate import run_file_isolated

_NODE = re.compile(r"Node number (\d+)")


@dataclass(frozen=True)
class EdgeFault:
    edge_input: str  # one of EDGE_INPUTS
    op: str  # the op type, e.g. DIV
    problem: str
    tensors: tuple[str, ...]  # the op's activation inputs: kept float, the op runs in float

    def __str__(self) -> str:
        return f"{self.op} {self.problem} on the edge input {self.edge_input!r}"


def edge_feeds(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The edge inputs built from BATCH (input name -> samples), as validation builds them, without the samples."""
    count = len(next(iter(batch.values())))
    return {name: values[count:] for name, values in with_edges(batch).items()}


def finite_per_edge(outputs: Sequence[np.ndarray]) -> list[bool]:
    """Per edge input (samples of OUTPUTS, one array per output): is every output finite? An edge input the
    original itself gives NaN on is no fault of a candidate's."""
    count = len(outputs[0])
    return [all(bool(np.isfinite(np.asarray(o[i], dtype=np.float64)).all()) for o in outputs) for i in range(count)]


def find_edge_fault(data: bytes, edges: dict[str, np.ndarray], finite: Sequence[bool]) -> EdgeFault | None:
    """The first fault of the .tflite DATA on EDGES (edge_feeds) among the edge inputs FINITE marks as finite in
    the original, or None. Run in a child: a fault can be a native crash."""
    with tempfile.TemporaryDirectory(prefix="edgecompress-edges-") as folder:
        path = Path(folder) / "candidate.tflite"
        path.write_bytes(data)
        return run_isolated(_first_fault, str(path), edges, list(finite), what="the runtime, on the edge inputs")


def _first_fault(path: str, edges: dict[str, np.ndarray], finite: list[bool]) -> EdgeFault | None:
    graph = parse_model(Path(path).read_bytes()).main
    runner = TFLiteRunner(path, num_threads=1, preserve_all_tensors=True)
    for i, name in enumerate(EDGE_INPUTS):
        if not finite[i]:
            continue
        try:
            outputs = runner.run({k: v[i:i + 1] for k, v in edges.items()}, reset=True)
        except RunFailed as exc:
            node = _NODE.search(str(exc))
            op = graph.operators[int(node.group(1))] if node else None
            return EdgeFault(name, op.name if op else "an op", f"cannot run ({first_line(exc.__cause__ or exc)})",
                             _activations(graph, op))
        if all(np.isfinite(o).all() for o in outputs if np.issubdtype(o.dtype, np.floating)):
            continue
        for op in graph.operators:
            values = [runner.interpreter.get_tensor(t) for t in op.outputs if t >= 0]
            if any(np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all() for v in values):
                return EdgeFault(name, op.name, "gives NaN/Inf", _activations(graph, op))
    return None


def _activations(graph: Subgraph, op: Operator | None) -> tuple[str, ...]:
    if op is None:
        return ()
    tensors = (graph.tensor(t) for t in op.inputs if t >= 0)
    return tuple(t.name for t in tensors if t is not None and not t.is_constant)


class EdgeGuard:
    """The edge inputs a search checks its candidates on, and the tensors their faults made it keep float."""

    def __init__(self, edges: dict[str, np.ndarray], finite: Sequence[bool]) -> None:
        self.edges, self.finite = edges, list(finite)
        self.forced: list[str] = []

    @classmethod
    def of_file(cls, path: str | Path, batch: dict[str, np.ndarray]) -> EdgeGuard:
        """The edge inputs of BATCH, with the .tflite at PATH (the float original) saying which are finite."""
        edges = edge_feeds(batch)
        return cls(edges, finite_per_edge(run_file_isolated(path, edges).outputs))

    def fault(self, data: bytes) -> EdgeFault | None:
        return find_edge_fault(data, self.edges, self.finite)

    def keep_float(self, fault: EdgeFault) -> bool:
        """Add FAULT's tensors to those kept float; False when they all were already (nothing left to try)."""
        new = [t for t in fault.tensors if t not in self.forced]
        self.forced += new
        return bool(new)

    def record(self, search: FallbackSearch, step: FallbackStep, data: bytes, layer_of: Callable[[str], str]) -> str:
        """Check the candidate DATA of STEP on the edge inputs when it meets the target on labelled data, say it,
        and record it in SEARCH. "met"; "retry": an edge fault whose tensors are now kept float (layer_of names
        their layers in the reasons); or "missed"."""
        fault = self.fault(data) if step.drop <= search.max_drop else None
        if fault:
            step = dataclasses.replace(step, edge_fault=str(fault))
        layers = step.float_layers
        note(f"  {len(layers)} layer(s) with float activations{': ' + ', '.join(layers) if layers else ''}: "
             f"{search.metric} {step.accuracy:.4g}, drop {step.drop:.2f} (max {search.max_drop:g}), "
             f"{step.size_bytes:,} bytes" + (f"; but {fault}" if fault else ""))
        if search.record(step):
            return "met"
        if fault is None or not self.keep_float(fault):
            return "missed"
        for tensor in fault.tensors:
            search.reasons.setdefault(layer_of(tensor), f"feeds {fault}")
        return "retry"
