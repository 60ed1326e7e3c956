"""A checked, seeded selection of samples: what conversion calibrates on and validation runs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from edgecompress.specs import TensorSpec
from edgecompress.calibration.checks import check_source
from edgecompress.calibration.sources import Source, open_source, select_indices
from edgecompress.calibration.stats import InputStats, compute_stats


@dataclass
class SampleSet:
    source: Source
    inputs: list[TensorSpec]
    indices: np.ndarray
    stats: list[InputStats]

    def __len__(self) -> int:
        return len(self.indices)

    def samples(self, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Each chosen sample as {input name: batch of one}, read from the file as it goes."""
        return self.source.samples(self.indices[:limit], self.inputs)

    def batch(self, limit: int | None = None) -> dict[str, np.ndarray]:
        """The first LIMIT chosen samples stacked per input (validation needs them side by side)."""
        feeds = list(self.samples(limit))
        return {s.name: np.concatenate([f[s.name] for f in feeds]) for s in self.inputs}


def load_samples(
    path: str | Path,
    inputs: Sequence[TensorSpec],
    num_samples: int | None = None,
    seed: int = 0,
    image_scale: str = "unit",
) -> SampleSet:
    """Open PATH, check it against INPUTS, pick NUM_SAMPLES (seeded) and stream them once for statistics."""
    source = open_source(path, inputs, image_scale)
    check_source(source, inputs)
    indices = select_indices(source.count, num_samples, seed)
    return SampleSet(source, list(inputs), indices, compute_stats(source, inputs, indices))
