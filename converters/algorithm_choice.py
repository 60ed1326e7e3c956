"""`--algorithm auto`: quantize the weights with each rounding algorithm that applies, measure each file against
the float one on held-out samples, keep the best.

The measure is the worst output's SQNR (dB): task-free, so it serves classifiers, detectors and embeddings alike,
and the worst output because a model with a box head and a class head is only as good as its weaker head. A
tie (within TIE_DB) goes to the earlier algorithm in the list, the simpler one. Each candidate runs in a child
process (an int4 file can crash a runtime) and is timed, so the report says what the choice cost.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgecompress.compare import sqnr_db
from edgecompress.errors import NativeCrash, UserError
from edgecompress.progress import note
from edgecompress.converters.validate import run_file, run_files_isolated

TIE_DB = 0.1


@dataclass(frozen=True)
class Trial:
    algorithm: str
    sqnr_db: float | None  # the worst output's; None when it failed
    size_bytes: int
    seconds: float  # quantizing, rounding included
    error: str | None = None


@dataclass
class AlgorithmChoice:
    chosen: str
    samples: int  # held-out calibration samples the trials were measured on
    trials: list[Trial] = field(default_factory=list)

    def reason(self) -> str:
        if not self.trials:
            return (f"algorithm auto: {self.chosen}, the default for the mode (no calibration samples to measure the "
                    "algorithms on: give them to choose by measurement)")
        measured = ", ".join(f"{t.algorithm} {_db(t.sqnr_db)}" if t.error is None else f"{t.algorithm} failed"
                             for t in self.trials)
        return (f"algorithm auto chose {self.chosen}: the best worst-output SQNR against float on {self.samples} "
                f"held-out calibration samples ({measured})")


def _db(value: float | None) -> str:
    return "-" if value is None else ("exact" if math.isinf(value) else f"{value:.1f} dB")


def choose(candidates: Sequence[str], quantize: Callable[[str], bytes], float_path: str | Path,
           feeds: dict[str, np.ndarray]) -> tuple[bytes, AlgorithmChoice]:
    """The bytes QUANTIZE(algorithm) gives for the best of CANDIDATES, measured against FLOAT_PATH on FEEDS
    (input name -> stacked samples). A candidate that cannot quantize this model (UserError) or crashes the
    runtime is reported and skipped; if all fail, the first one's error is raised."""
    reference = run_file(float_path, feeds)
    samples = len(next(iter(feeds.values())))
    choice, results, seconds = AlgorithmChoice("", samples), {}, {}
    first_error: UserError | None = None
    with tempfile.TemporaryDirectory(prefix="edgecompress-auto-") as tmp:
        paths = {}
        for algorithm in candidates:
            start = time.perf_counter()
            try:
                results[algorithm] = quantize(algorithm)
            except UserError as exc:
                first_error = first_error or exc
                choice.trials.append(Trial(algorithm, None, 0, time.perf_counter() - start, str(exc)))
                continue
            seconds[algorithm] = time.perf_counter() - start
            paths[algorithm] = Path(tmp) / f"{algorithm}.tflite"
            paths[algorithm].write_bytes(results[algorithm])
        outputs = dict(zip(paths, run_files_isolated([str(p) for p in paths.values()], feeds, reference.names)))
    best = None
    for algorithm, out in outputs.items():
        if isinstance(out, NativeCrash):
            first_error = first_error or out
            choice.trials.append(Trial(algorithm, None, len(results.pop(algorithm)), seconds[algorithm], str(out)))
            continue
        worst = worst_sqnr(reference.outputs, out)
        choice.trials.append(Trial(algorithm, worst, len(results[algorithm]), seconds[algorithm]))
        if best is None or _better(worst, best[1]):
            best = (algorithm, worst)
    if best is None:
        assert first_error is not None
        raise first_error
    choice.trials.sort(key=lambda t: list(candidates).index(t.algorithm))
    choice.chosen = best[0]
    note(choice.reason())
    return results[best[0]], choice


def worst_sqnr(reference: list[np.ndarray], actual: list[np.ndarray]) -> float | None:
    figures = [sqnr_db(r.astype(np.float64), a.astype(np.float64)) for r, a in zip(reference, actual)]
    figures = [f if f is None or not math.isnan(f) else -math.inf for f in figures]
    known = [f for f in figures if f is not None]
    return min(known) if known else None


def _better(candidate: float | None, best: float | None) -> bool:
    if candidate is None:
        return False
    return best is None or candidate > best + TIE_DB
