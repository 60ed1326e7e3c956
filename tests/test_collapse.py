"""compare.collapse: an output that stopped following its input, which optimize refuses to write.

Seen on a real model: HED (edge detection) pruned 30% at the default rate gave no edge pixel on any photo, and
its held-out pixel accuracy read 79% because 77% of the pixels are not edges.
"""
from __future__ import annotations

import numpy as np

from edgecompress.compare import collapse


def test_a_mask_with_no_positive_left_has_collapsed():
    rng = np.random.default_rng(0)
    original = rng.uniform(size=(2, 32, 32, 1))
    assert "below 0.5 everywhere" in collapse(original, original * 0.1)
    assert "at or above 0.5 everywhere" in collapse(original, 0.5 + original * 0.1)
    assert collapse(original, np.clip(original + rng.normal(0, 0.1, original.shape), 0, 1)) is None


def test_one_class_for_every_sample_has_collapsed():
    original = np.eye(3)[np.arange(12) % 3]
    assert collapse(original, np.tile([0.2, 0.7, 0.1], (12, 1))) == "gives class 1 for every sample"
    assert collapse(original, original * 0.8 + 0.2 / 3) is None


def test_a_few_samples_prove_nothing():
    """Two held-out samples of different classes that now agree: a coincidence, not a collapse."""
    assert collapse(np.eye(2), np.array([[0.6, 0.4], [0.7, 0.3]])) is None
    assert collapse(np.array([[0.9], [0.1]]), np.array([[0.2], [0.1]])) is None


def test_constant_values_have_collapsed():
    original = np.random.default_rng(1).normal(size=(16, 4))
    assert "is constant" in collapse(original, np.ones_like(original) * 0.3)
    assert collapse(original, original * 0.5) is None
