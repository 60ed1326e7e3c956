"""How far one model's outputs are from another's, judged output by output by what each output is.

Shared by every verdict (convert's and quantize's validation, check's device run): an output is "classes"
(scores over its last axis that sum to 1: top-1 agreement means something), "binary" (one value in [0, 1]
per sample: the decision at 0.5 means something) or "values" (anything else: boxes, landmarks, pitch
activations, embeddings), and each gets SQNR, cosine similarity and errors, plus the count of samples whose
outputs are NaN or Inf. Pure numpy: the runtime side uses it without TensorFlow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Thresholds, measured on real models (benchmarks/real_models.py): sound int8 classifiers keep the top class
# on 95% of samples and more (fer's emotion CNN: 95-100% in every 8-bit mode); its int4 export, 78%, is broken,
# not noisy. For other outputs SQNR: exports that kept their task metric measured 14.4 dB and more on every
# output (basic-pitch dynamic: onset 14.4 dB, note F1 0.93 -> 0.97), those whose metric collapsed 11.1 dB and
# less (basic-pitch int4: contour 11.1, note 7.7, onset 5.7 dB; note F1 0.93 -> 0.03).
MIN_AGREEMENT = 0.90
MIN_SQNR_DB = 12.0
# An output whose decisions at 0.5 go one way everywhere has collapsed when the original's went each way on at
# least this share of its values.
_MIN_SIDE = 0.01
_MIN_COUNT = 4  # and on at least this many values (or samples, for classes): not a coincidence of a few samples
# Softmax outputs sum to 1 up to float rounding (float16 and int8 exports a little less tightly).
_SUM_TOLERANCE = 0.02


@dataclass(frozen=True)
class OutputCheck:
    """One output of the model under test against the reference's same output, over the same samples."""

    name: str
    shape: tuple[int, ...]  # one sample's
    kind: str  # "classes", "binary" or "values"
    max_abs_error: float | None  # over the samples where both are finite; None when there are none
    mean_abs_error: float | None
    sqnr_db: float | None  # 10 log10(signal power / error power); inf when identical, None for a zero signal
    cosine: float | None  # mean over samples of the cosine similarity of the flattened outputs
    agreement: float | None  # classes: same top class; binary: same side of 0.5; values: None
    nonfinite: int  # samples with NaN/Inf here where the reference has none
    reference_nonfinite: int  # samples with NaN/Inf in the reference itself (left out of every figure)


def output_kind(reference: np.ndarray) -> str:
    """What REFERENCE (samples x ...) holds, read from its values: classes, binary or values."""
    finite = reference[_finite_rows(reference)].astype(np.float64)
    if finite.size == 0 or finite.min() < 0 or finite.max() > 1:
        return "values"
    per_sample = finite.reshape(len(finite), -1)
    if per_sample.shape[1] == 1:
        return "binary"
    if reference.shape[-1] > 1 and np.all(np.abs(finite.sum(axis=-1) - 1) < _SUM_TOLERANCE):
        return "classes"
    return "values"


def compare_output(name: str, reference: np.ndarray, actual: np.ndarray, figures_on: int | None = None) -> OutputCheck:
    """ACTUAL against REFERENCE, both samples x ... (the same shape). The figures come from the first
    FIGURES_ON samples (all by default); NaN/Inf is counted on every sample. Edge inputs (a constant full-scale
    signal) find NaN and crashes, but would weigh on an average like no real input does."""
    actual = actual.reshape(reference.shape)
    ref_ok, act_ok = _finite_rows(reference), _finite_rows(actual)
    both = (ref_ok & act_ok)[:figures_on]
    kind = output_kind(reference[:figures_on])
    ref, act = reference[:figures_on][both].astype(np.float64), actual[:figures_on][both].astype(np.float64)
    diff = np.abs(act - ref)
    return OutputCheck(
        name=name,
        shape=tuple(int(d) for d in reference.shape[1:]),
        kind=kind,
        max_abs_error=float(diff.max()) if diff.size else None,
        mean_abs_error=float(diff.mean()) if diff.size else None,
        sqnr_db=sqnr_db(ref, act) if diff.size else None,
        cosine=_cosine(ref, act) if diff.size else None,
        agreement=_agreement(kind, ref, act) if diff.size else None,
        nonfinite=int(np.sum(ref_ok & ~act_ok)),
        reference_nonfinite=int(np.sum(~ref_ok)),
    )


def output_problem(o: OutputCheck) -> str | None:
    """Why output O no longer computes what the reference's did (NaN/Inf aside), or None."""
    if o.agreement is not None and o.agreement < MIN_AGREEMENT:
        what = "top-1" if o.kind == "classes" else "decision at 0.5"
        return f"agrees with the original on only {o.agreement:.1%} of samples ({what}; below {MIN_AGREEMENT:.0%})"
    if o.kind == "values" and o.sqnr_db is not None and o.sqnr_db < MIN_SQNR_DB:
        return f"has an SQNR of {o.sqnr_db:.1f} dB (below {MIN_SQNR_DB:.0f} dB)"
    return None


def collapse(reference: np.ndarray, actual: np.ndarray) -> str | None:
    """How ACTUAL (samples x ...) stopped following its input where REFERENCE did, or None: one class for every
    sample, one side of 0.5 everywhere for scores in [0, 1] (a sigmoid, a per-pixel mask), or constant values.
    A fine-tuning that loses its signal this way can still score well on imbalanced labels (a mask of 23% edge
    pixels reads 77% accurate when it finds none)."""
    ref, act = reference.astype(np.float64), actual.reshape(reference.shape).astype(np.float64)
    if not (np.isfinite(ref).all() and np.isfinite(act).all()) or ref.size == 0:
        return None  # NaN is reported on its own
    if output_kind(ref) == "classes":
        _, counts = np.unique(np.argmax(ref, axis=-1), return_counts=True)
        ours = np.unique(np.argmax(act, axis=-1))
        varied = np.sum(counts >= _MIN_COUNT) > 1
        return f"gives class {int(ours[0])} for every sample" if varied and len(ours) == 1 else None
    if ref.min() >= 0 and ref.max() <= 1:
        above = int(np.sum(ref >= 0.5))
        varied = min(above, ref.size - above) >= max(_MIN_COUNT, _MIN_SIDE * ref.size)
        if varied and np.all(act >= 0.5) != np.all(act < 0.5):
            share = above / ref.size
            side = "at or above" if np.all(act >= 0.5) else "below"
            return f"is {side} 0.5 everywhere (the original: {share:.0%} at or above)"
        return None
    spread, kept = float(np.std(ref)), float(np.std(act))
    if spread > 0 and kept < 1e-3 * spread:
        return f"is constant (spread {kept:.2g}; the original's {spread:.2g})"
    return None


def compare_outputs(names: Sequence[str], reference: Sequence[np.ndarray], actual: Sequence[np.ndarray],
                    figures_on: int | None = None) -> list[OutputCheck]:
    return [compare_output(n, r, a, figures_on) for n, r, a in zip(names, reference, actual)]


def sqnr_db(reference: np.ndarray, actual: np.ndarray) -> float | None:
    """Signal-to-quantization-noise ratio in dB, as quantization tools report it (not a linear ratio)."""
    signal = float(np.sum(np.square(reference, dtype=np.float64)))
    noise = float(np.sum(np.square(actual - reference, dtype=np.float64)))
    if signal == 0:
        return None
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def _finite_rows(values: np.ndarray) -> np.ndarray:
    """Per sample: are all its values finite? (integer outputs always are)"""
    if not np.issubdtype(values.dtype, np.floating):
        return np.ones(len(values), dtype=bool)
    return np.isfinite(values.reshape(len(values), -1)).all(axis=1)


def _cosine(reference: np.ndarray, actual: np.ndarray) -> float | None:
    ref, act = reference.reshape(len(reference), -1), actual.reshape(len(actual), -1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(act, axis=1)
    both_zero = (np.linalg.norm(ref, axis=1) == 0) & (np.linalg.norm(act, axis=1) == 0)
    # A sample whose two outputs are both all zeros agrees perfectly; one zero against non-zero not at all.
    cos = np.where(both_zero, 1.0, np.sum(ref * act, axis=1) / np.where(norms == 0, 1.0, norms))
    return float(np.mean(cos))


def _agreement(kind: str, reference: np.ndarray, actual: np.ndarray) -> float | None:
    if kind == "classes":  # the top class of each sample (and of each position, for per-position scores)
        return float(np.mean(np.argmax(actual, axis=-1) == np.argmax(reference, axis=-1)))
    if kind == "binary":
        return float(np.mean((actual.ravel() >= 0.5) == (reference.ravel() >= 0.5)))
    return None
