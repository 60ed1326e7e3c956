"""Model input/output specs shared by Keras models, .tflite files and data sources (no TensorFlow here)."""
from __future__ import annotations

from dataclasses import dataclass

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
