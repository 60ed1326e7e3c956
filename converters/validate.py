"""Proof that a .tflite still computes what the original model did: both run on the same samples.

Only the runtime (edgecompress.runtime) runs the .tflite; the original runs through edgecompress.models.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecompress.models import LoadedModel
from edgecompress.specs import TensorSpec
from edgecompress.runner import TFLiteRunner


@dataclass(frozen=True)
class Validation:
    samples: int
    data: str  # "calibration" (samples from the user's data) or "generated" (random, to the input spec)
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float | None  # None when no output is a vector of class scores
    runtime: str
    relative_error: float | None = None  # mean abs error / the original's output range (None for a constant output)


# A sound int8 classifier keeps the original's top class on well over 95% of samples (the example CNN: 100%);
# below 90% the export is broken, not noisy. Without class scores: a mean error above 5% of the output's range.
MIN_TOP1_AGREEMENT = 0.90
MAX_RELATIVE_ERROR = 0.05


def validation_warnings(validation: Validation, quantize: str) -> list[str]:
    """Why VALIDATION says the export no longer computes what the original did, with the next step; [] if fine."""
    v = validation
    if v.top1_agreement is not None and v.top1_agreement < MIN_TOP1_AGREEMENT:
        found = f"agrees with the original on only {v.top1_agreement:.1%} of samples (top-1; below {MIN_TOP1_AGREEMENT:.0%})"
    elif v.top1_agreement is None and v.relative_error is not None and v.relative_error > MAX_RELATIVE_ERROR:
        found = (f"is off by {v.relative_error:.1%} of the original's output range on average "
                 f"(above {MAX_RELATIVE_ERROR:.0%})")
    else:
        return []
    return [
        f"the {quantize} export {found}, max abs error {v.max_abs_error:.3g}: find the layers at fault with "
        "`edgecompress diagnose MODEL --calibration DATA`, or keep them in float with max_drop (int8: "
        "`convert --max-drop POINTS --eval-data LABELLED.npz`, or max_drop in a recipe variant)"
    ]


def generated_feeds(inputs: Sequence[TensorSpec], count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random samples shaped like INPUTS: floats in [0, 1), integers in [0, 10) (valid ids or classes)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in inputs:
        shape = (count, *spec.sample_shape)
        if np.issubdtype(spec.np_dtype, np.floating):
            feeds[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.np_dtype)
        else:
            feeds[spec.name] = rng.integers(0, 10, size=shape).astype(spec.np_dtype)
    return feeds


def validate(tflite_path: str | Path, model: LoadedModel, feeds: dict[str, np.ndarray], data: str) -> Validation:
    """Run FEEDS (batches per input name) through both models and compare every output."""
    count = len(next(iter(feeds.values())))
    return compare(TFLiteRunner(tflite_path), _reference(model, feeds, count), feeds, data)


def validate_tflite(
    tflite_path: str | Path, reference: TFLiteRunner, feeds: dict[str, np.ndarray], data: str
) -> Validation:
    """The same comparison with a .tflite as the reference (no TensorFlow): a quantized file against its source."""
    return compare(TFLiteRunner(tflite_path), _run_all(reference, feeds), feeds, data)


def compare(runner: TFLiteRunner, expected: list[np.ndarray], feeds: dict[str, np.ndarray], data: str) -> Validation:
    """Run FEEDS through RUNNER and measure how far its outputs are from EXPECTED (one array per output)."""
    got = _run_all(runner, feeds)
    diffs, agree = [], []
    for ref, out in zip(expected, got):
        actual = out.reshape(ref.shape).astype(np.float64)
        diffs.append(np.abs(actual - ref.astype(np.float64)).ravel())
        if ref.ndim == 2 and ref.shape[1] > 1:  # class scores: does the top class stay the same?
            agree.append(np.argmax(actual, axis=1) == np.argmax(ref, axis=1))
    diff = np.concatenate(diffs)
    spread = max(float(np.ptp(ref)) for ref in expected)
    return Validation(
        samples=len(next(iter(feeds.values()))),
        data=data,
        max_abs_error=float(diff.max()),
        mean_abs_error=float(diff.mean()),
        top1_agreement=float(np.concatenate(agree).mean()) if agree else None,
        runtime=f"{runner.runtime.name} {runner.runtime.version}",
        relative_error=float(diff.mean()) / spread if spread > 0 else None,
    )


def _run_all(runner: TFLiteRunner, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """RUNNER's outputs for every sample of FEEDS, one sample at a time (batch 1), stacked per output."""
    count = len(next(iter(feeds.values())))
    per_sample = [runner.run({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(count)]
    return [np.concatenate(outs) for outs in zip(*per_sample)]


def _reference(model: LoadedModel, feeds: dict[str, np.ndarray], count: int) -> list[np.ndarray]:
    """The original model's outputs, in one batch when its batch size is free, else sample by sample."""
    if all(s.shape[0] is None for s in model.inputs):
        return model.predict(feeds)
    per_sample = [model.predict({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(count)]
    return [np.concatenate(outs) for outs in zip(*per_sample)]
