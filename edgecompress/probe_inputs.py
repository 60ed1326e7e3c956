"""The inputs a verdict runs: the user's samples (or generated ones) plus edge inputs built from them.

Typical samples miss what breaks exports at the edges of the input range (seen: a float16 audio model that
gives NaN for silence only), so every verdict also runs each input all zeros, filled with its minimum, and
filled with its maximum. Runtime side (numpy only).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from edgecompress.specs import TensorSpec

EDGE_INPUTS = ("zeros", "min", "max")


def generated_feeds(inputs: Sequence[TensorSpec], count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random samples shaped like INPUTS (batch axis first): floats in [0, 1), integers in [0, 10) (valid ids
    or classes)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in inputs:
        shape = (count, *spec.sample_shape)
        if np.issubdtype(spec.np_dtype, np.floating):
            feeds[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.np_dtype)
        else:
            feeds[spec.name] = rng.integers(0, 10, size=shape).astype(spec.np_dtype)
    return feeds


def with_edges(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """FEEDS followed by the EDGE_INPUTS: every input all zeros, then filled with its minimum, then its maximum."""
    out = {}
    for name, values in feeds.items():
        one = values[:1]
        edges = [np.zeros_like(one), np.full_like(one, values.min()), np.full_like(one, values.max())]
        out[name] = np.concatenate([values, *edges])
    return out
