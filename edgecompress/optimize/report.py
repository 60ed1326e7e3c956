"""Before/after figures of an optimized model: what pruning, clustering and QAT change, and accuracy."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.fileio import gzip_size
from edgecompress.optimize.data import Labeled
from edgecompress.optimize.layers import SkippedLayer, import_tfmot
from edgecompress.optimize.train import StageTraining


@dataclass(frozen=True)
class ModelStats:
    params: int
    nonzero_params: int
    distinct_values: int  # summed over kernels (weights of rank >= 2): what clustering reduces
    saved_bytes: int
    saved_gzip_bytes: int  # zeros and repeated values only shrink a file once compressed
    val_accuracy: float | None


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


def model_weights(model: Any) -> list[np.ndarray]:
    """The model's own weights; QAT wrappers' quantizer ranges and step counters are not parameters.

    A QAT wrapper holds the wrapped layer's variables (named after that layer) beside its quantizer's.
    """
    import_tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import QuantizeLayer
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import QuantizeWrapper

    weights: list[np.ndarray] = []
    for layer in model.layers:
        if isinstance(layer, QuantizeWrapper):
            own = f"{layer.layer.name}/"
            weights.extend(w.numpy() for w in layer.weights if w.name.startswith(own))
        elif not isinstance(layer, QuantizeLayer):
            weights.extend(w.numpy() for w in layer.weights)
    return weights


def accuracy(model: Any, data: Labeled | None, batch_size: int = 256) -> float | None:
    if data is None:
        return None
    probs = np.asarray(model.predict(data.feed(), batch_size=batch_size, verbose=0))
    truth = data.y if data.y.ndim == 1 else np.argmax(data.y, axis=-1)
    return float(np.mean(np.argmax(probs, axis=-1) == truth))


def stats(model: Any, saved: Path, val: Labeled | None) -> ModelStats:
    weights = model_weights(model)
    data = saved.read_bytes()
    return ModelStats(
        params=int(sum(w.size for w in weights)),
        nonzero_params=int(sum(np.count_nonzero(w) for w in weights)),
        distinct_values=int(sum(np.unique(w).size for w in weights if w.ndim >= 2)),
        saved_bytes=len(data),
        saved_gzip_bytes=gzip_size(data),
        val_accuracy=accuracy(model, val),
    )
