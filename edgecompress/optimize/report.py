"""Before/after figures of an optimized model: what pruning, clustering and QAT change, and accuracy."""
from __future__ import annotations

import re

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.fileio import gzip_size
from edgecompress.optimize.data import Labeled, predictions
from edgecompress.optimize.layers import SkippedLayer, import_tfmot
from edgecompress.optimize.train import StageTraining


@dataclass(frozen=True)
class ModelStats:
    params: int
    nonzero_params: int
    distinct_values: int  # summed over kernels (weights of rank >= 2): what clustering reduces
    saved_bytes: int
    saved_gzip_bytes: int  # zeros and repeated values only shrink a file once compressed
    val_accuracy: float | None  # class or 0/1 labels
    val_mae: float | None = None  # float targets
    val_perplexity: float | None = None  # a language model's: class labels at every position


@dataclass(frozen=True)
class OptimizeResult:
    output: Path
    techniques: list[str]  # in the order applied
    plan: list[str]  # one line per technique, as applied
    skipped_layers: list[SkippedLayer]
    before: ModelStats
    after: ModelStats
    details: dict[str, Any]  # per-technique extras, e.g. the ranks low-rank factorization chose
    training: list[StageTraining]  # per fine-tuning stage: epochs run, epoch kept, why it stopped
    stopped_on: str  # the data early stopping watched: the validation data or a held-out share of the training

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of `optimize --json` and a run's optimize stage: every field, nested ones as dicts."""
        return {**asdict(self), "output": str(self.output)}


_QUANTIZER_VARIABLE = re.compile(r"(?:^|_)(?:min|max)$|^optimizer_step$")


def _short_name(variable: Any) -> str:
    """kernel_min for quant_conv2d/kernel_min:0."""
    return variable.name.split("/")[-1].split(":")[0]


def model_weights(model: Any) -> list[np.ndarray]:
    """The model's own weights; QAT wrappers' quantizer ranges and step counters are not parameters.

    A QAT wrapper holds the wrapped layer's variables beside its quantizer's (optimizer_step, kernel_min,
    post_activation_max, ...). They are told apart by the quantizer's variable names: the scope before them
    depends on how the model was built (a model rebuilt from its config, as QAT's strip does, puts the wrapped
    layer's under the wrapper's name, and matching the layer's name counted none of them: 58,423 -> 35,880 on
    fer), and the wrapped layer itself no longer tracks a kernel the wrapper quantizes.
    """
    import_tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import QuantizeLayer
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import QuantizeWrapper

    weights: list[np.ndarray] = []
    for layer in model.layers:
        if isinstance(layer, QuantizeWrapper):
            weights.extend(w.numpy() for w in layer.weights if not _QUANTIZER_VARIABLE.search(_short_name(w)))
        elif not isinstance(layer, QuantizeLayer):
            weights.extend(w.numpy() for w in layer.weights)
    return weights


@dataclass(frozen=True)
class Scores:
    accuracy: float | None = None  # class and 0/1 labels (per position for dense labels)
    mae: float | None = None  # float targets
    perplexity: float | None = None  # class indices at every position: a language model's next tokens


def val_scores(model: Any, data: Labeled | None) -> Scores:
    """MODEL's scores on DATA's target output (Scores says which apply to which labels)."""
    if data is None:
        return Scores()
    out = predictions(model, data.x)[data.target.index]
    if data.target.kind == "classes":
        truth = np.argmax(data.y, axis=-1) if data.y.shape == out.shape else data.y
        accuracy = float(np.mean(np.argmax(out, axis=-1) == truth))
        return Scores(accuracy, perplexity=perplexity(out, truth) if truth.ndim >= 2 else None)
    if data.target.kind == "binary":
        threshold = 0.5 if out.min() >= 0 and out.max() <= 1 else 0.0  # probabilities, else logits
        return Scores(float(np.mean((out > threshold) == (data.y > 0.5))))
    return Scores(mae=float(np.mean(np.abs(out - data.y))))


def perplexity(out: np.ndarray, truth: np.ndarray) -> float:
    """exp of the mean cross-entropy of the class indices TRUTH under OUT (logits, or probabilities: their log is
    its own log-softmax), as `evaluate` scores a language model's file."""
    from edgecompress.generate import scores_of

    out = out.astype(np.float64)
    if out.min() >= 0 and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3):
        out = np.log(np.maximum(out, np.finfo(np.float64).tiny))
    return scores_of([(out, truth)], len(truth)).perplexity


def stats(model: Any, saved: Path, val: Labeled | None) -> ModelStats:
    weights = model_weights(model)
    scores = val_scores(model, val)
    data = saved.read_bytes()
    return ModelStats(
        params=int(sum(w.size for w in weights)),
        nonzero_params=int(sum(np.count_nonzero(w) for w in weights)),
        distinct_values=int(sum(np.unique(w).size for w in weights if w.ndim >= 2)),
        saved_bytes=len(data),
        saved_gzip_bytes=gzip_size(data),
        val_accuracy=scores.accuracy,
        val_mae=scores.mae,
        val_perplexity=scores.perplexity,
    )
