"""Model input/output specs shared by Keras models, .tflite files and data sources (no TensorFlow here)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. shape[0] is the batch (None when dynamic)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str  # numpy dtype name: "float32", "int8", ...

    @property
    def sample_shape(self) -> tuple[int | None, ...]:
        """The shape of one sample, without the batch dimension."""
        return tuple(self.shape[1:])

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} [{dims}] {self.dtype}"


# The layout of an edgecompress data file (datasets.Split.save_npz writes it): one array per model input
# under the input's name, or under `x` for a single-input model; labels, when present, under `y`.
SINGLE_INPUT_KEY = "x"
LABEL_KEY = "y"


def input_key(spec_name: str, n_inputs: int, keys: Collection[str]) -> str | None:
    """The key of a data file that holds the input SPEC_NAME, or None when it has none."""
    if spec_name in keys:
        return spec_name
    if n_inputs == 1 and SINGLE_INPUT_KEY in keys:
        return SINGLE_INPUT_KEY
    return None
