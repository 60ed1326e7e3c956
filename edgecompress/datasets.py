"""The bundled real data set: the UCI handwritten digits (1,797 images of 8x8, 10 classes).

It ships inside the package (edgecompress/data/digits.npz, made by tools/make_digits_npz.py from
scikit-learn's copy) so examples, the demo and the tests need no download.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from edgecompress.fileio import atomic_path

NUM_CLASSES = 10


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32, (N, 8, 8, 1), scaled to [0, 1]
    y: np.ndarray  # int64 labels, (N,)

    def save_npz(self, path: str | Path) -> Path:
        """Write as an edgecompress data file: the input under `x`, labels under `y`."""
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, x=self.x, y=self.y)
        return Path(path)


@dataclass(frozen=True)
class Digits:
    train: Split
    val: Split
    test: Split


def load_digits(seed: int = 0) -> Digits:
    """The digits split 1,197 / 300 / 300 (train / validation / test), shuffled with SEED."""
    with resources.files("edgecompress").joinpath("data/digits.npz").open("rb") as fh:
        raw = np.load(fh)
        images, labels = raw["images"], raw["labels"]
    order = np.random.default_rng(seed).permutation(len(labels))
    x = (images[order].astype(np.float32) / 16.0)[..., None]
    y = labels[order].astype(np.int64)

    def part(a: int, b: int) -> Split:
        return Split(x[a:b], y[a:b])

    return Digits(train=part(0, 1197), val=part(1197, 1497), test=part(1497, len(y)))
