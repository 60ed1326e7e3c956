"""Per-input statistics of the samples, so a user can see the data looks like what the model expects."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgecompress.specs import TensorSpec
from edgecompress.calibration.checks import check_finite
from edgecompress.calibration.sources import Source

CHUNK = 256  # samples read at once: bounded memory whatever the file size


@dataclass(frozen=True)
class InputStats:
    name: str
    count: int
    min: float
    max: float
    mean: float


def compute_stats(source: Source, inputs: Sequence[TensorSpec], indices: np.ndarray) -> list[InputStats]:
    """Stream the chosen samples once: count, min, max and mean per input; NaN/inf is a UserError."""
    stats = []
    for spec in inputs:
        column = source.columns[spec.name]
        low, high, total, n = np.inf, -np.inf, 0.0, 0
        for start in range(0, len(indices), CHUNK):
            chunk = indices[start:start + CHUNK]
            values = np.stack([np.asarray(column[int(i)]) for i in chunk])
            check_finite(spec, values, chunk, source)
            low, high = min(low, float(values.min())), max(high, float(values.max()))
            total += float(values.sum(dtype=np.float64))
            n += values.size
        stats.append(InputStats(spec.name, len(indices), low, high, total / max(n, 1)))
    return stats
