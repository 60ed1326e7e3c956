"""Outlier channels scaled down, their readers' weights scaled up: a model that computes the same in float and
quantizes to full int8 without a float layer (SmoothQuant's migration, Xiao et al. 2022, applied to channels
whose activations dwarf the rest).

One int8 scale per activation tensor means a channel whose values reach 1e4 where the others stay below 10
rounds every other channel to zero. For a layer P (Dense or Conv2D, linear or ReLU: both commute with a positive
scale) whose output a weighted layer C reads, dividing P's channel j (its weights and bias) by s and multiplying
C's input weights for j by s leaves the output unchanged, through max pooling and flattening too. s moves the
outlier's range into C's weights: sqrt(activation ratio / weight ratio) (SmoothQuant's alpha = 0.5, each ratio
to the median channel's), no more than it takes to bring the channel to the median (all of it when C ignores
the channel). Whether the pair really commutes (no batch norm or other op between) is not read from the graph:
each change is checked on the calibration samples, and undone if the outputs move.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgecompress.calibration import SampleSet
from edgecompress.models import LoadedModel, import_tf_keras

OUTLIER_RATIO = 8.0  # a channel whose range is this many times the median channel's is an outlier
SCALABLE = ("Dense", "Conv2D")
HOMOGENEOUS = ("linear", "relu")  # f(x / s) = f(x) / s for s > 0
TOLERANCE = 1e-4  # the largest change of any output, relative to its largest value, a kept change may make
SAMPLES = 32


@dataclass(frozen=True)
class SmoothedLayer:
    layer: str  # P: the layer whose outlier channels were scaled down
    reader: str  # C: the layer whose weights took the scale
    channels: int  # how many channels
    largest_scale: float  # the largest divisor applied


def smooth_outliers(loaded: LoadedModel, samples: SampleSet) -> tuple[LoadedModel, list[SmoothedLayer]]:
    """A copy of LOADED (a Keras model) with the outlier channels of each scalable layer moved into its reader's
    weights, and what was changed; LOADED is left as it is. Nothing changed: LOADED itself and []."""
    if not loaded.is_keras:
        return loaded, []
    if loaded.flavour == "keras3":
        import keras
    else:
        keras = import_tf_keras("scaling outlier channels")
    model = keras.models.clone_model(loaded.model)
    model.set_weights(loaded.model.get_weights())
    x = _inputs(samples)
    before = _outputs(model, x)
    changed = []
    weighted = [layer for layer in model.layers if layer.get_weights()]
    for producer, reader in zip(weighted, weighted[1:]):
        if not _scalable(producer) or type(reader).__name__ not in SCALABLE:
            continue
        probe = keras.Model(model.inputs, producer.output)
        activations = np.abs(np.asarray(probe(x, training=False))).reshape(-1, producer.get_weights()[0].shape[-1])
        scale = _scales(activations.max(axis=0), reader, activations.shape[1])
        if scale is None:
            continue
        saved = (producer.get_weights(), reader.get_weights())
        _apply(producer, reader, scale)
        if _moved(before, _outputs(model, x)):
            producer.set_weights(saved[0])
            reader.set_weights(saved[1])
            continue
        big = scale > 1
        changed.append(SmoothedLayer(producer.name, reader.name, int(big.sum()), float(scale.max())))
    if not changed:
        return loaded, []
    return replace(loaded, model=model), changed


def _scalable(layer: Any) -> bool:
    return type(layer).__name__ in SCALABLE and layer.get_config().get("activation") in HOMOGENEOUS


def _scales(channel_max: np.ndarray, reader: Any, channels: int) -> np.ndarray | None:
    """Per channel of the producer: the divisor (1 for every channel that is not an outlier), or None."""
    median = float(np.median(channel_max))
    if median <= 0:
        return None
    ratio_x = channel_max / median
    outliers = ratio_x > OUTLIER_RATIO
    if not outliers.any():
        return None
    kernel = reader.get_weights()[0]
    columns = _input_columns(kernel, channels)
    if columns is None:
        return None
    weight_max = np.abs(columns).max(axis=1)
    ratio_w = weight_max / max(float(np.median(weight_max)), 1e-12)
    with np.errstate(divide="ignore"):
        migrate = np.sqrt(ratio_x / np.maximum(ratio_w, 1e-12))
    return np.where(outliers, np.clip(migrate, 1.0, ratio_x), 1.0)


def _input_columns(kernel: np.ndarray, channels: int) -> np.ndarray | None:
    """The reader's weights grouped by the producer's channel: [channels, everything else], or None when its
    inputs do not line up with the channels (a Conv2D's input axis; a Dense after Flatten takes channel j at
    every j + k * channels)."""
    if kernel.ndim == 4 and kernel.shape[2] == channels:
        return np.moveaxis(kernel, 2, 0).reshape(channels, -1)
    if kernel.ndim == 2 and kernel.shape[0] % channels == 0:
        return kernel.reshape(-1, channels, kernel.shape[1]).transpose(1, 0, 2).reshape(channels, -1)
    return None


def _apply(producer: Any, reader: Any, scale: np.ndarray) -> None:
    weights = producer.get_weights()
    weights[0] = weights[0] / scale
    if len(weights) > 1:
        weights[1] = weights[1] / scale
    producer.set_weights(weights)
    kernel, *rest = reader.get_weights()
    if kernel.ndim == 4:
        kernel = kernel * scale[None, None, :, None]
    else:
        kernel = (kernel.reshape(-1, len(scale), kernel.shape[1]) * scale[None, :, None]).reshape(kernel.shape)
    reader.set_weights([kernel.astype(np.float32), *rest])


def _inputs(samples: SampleSet) -> Any:
    batch = samples.batch(SAMPLES)
    values = [batch[spec.name] for spec in samples.inputs]
    return values[0] if len(values) == 1 else values


def _outputs(model: Any, x: Any) -> list[np.ndarray]:
    out = model(x, training=False)
    return [np.asarray(o, dtype=np.float64) for o in (out if isinstance(out, (list, tuple)) else [out])]


def _moved(before: list[np.ndarray], after: list[np.ndarray]) -> bool:
    return any(np.abs(a - b).max() > TOLERANCE * max(np.abs(b).max(), 1e-12) for a, b in zip(after, before))
