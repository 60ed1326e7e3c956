"""Activation ranges for QAT measured on the float model, instead of TF-MOT's fixed starting range.

TF-MOT starts every activation quantizer at [-6, 6] and moves it towards each batch's range by an exponential
moving average with decay 0.999, so after a few hundred fine-tuning steps the range is still mostly the
starting guess. A tensor whose values live in [0, 0.004] (raw pixels after EfficientNet's Rescaling(1/255)
fed [0, 1]) is then quantized to zeros, and BatchNormalization in training mode turns the dead signal into
NaN gradients; a tensor in [-1, 1] gets a sixth of the resolution it could have, also in the int8 model,
whose ranges the converter takes from these quantizers. So a quantizer whose tensor, in the float model on
training samples, would get fewer than MIN_LEVELS of the 256 int8 levels from [-6, 6] starts at that measured
range instead, as post-training calibration does (and PyTorch's QAT observers), and the moving average goes
on from there. Everywhere else TF-MOT's start is kept: on the digits Conv+BN CNN (5 seeds, 1,500 test
images), measured ranges for every tensor cost 2 images against it, and for the one it clips (a ReLU up to
9.9) 1 image; kept, the two agree on every image.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from edgecompress.models import import_tf_keras
from edgecompress.optimize.layers import import_tfmot

SAMPLES = 256  # calibration samples: post-training int8 uses a few hundred too
BATCH = 32
START = (-6.0, 6.0)  # TF-MOT's starting range for every activation quantizer
MIN_LEVELS = 16  # 4 bits: fewer is no longer a quantized signal but a few steps
# Range variables of the quantizers on a layer's output (a wrapper's output, or after its activation);
# 'pre_activation' ranges (the logits before a softmax) have no float tensor to measure and stay as they are.
# Group 1 tells a layer's quantizers apart (a QuantizeLayer has one, hence the empty group), group 2 the end.
_OUTPUT_RANGE = re.compile(r"(?:^|/)(output|post_activation)_(min|max)(?:_\d+)?:0$")
_INPUT_RANGE = re.compile(r"()_(min|max)(?:_\d+)?:0$")


def calibrate_ranges(quantized: Any, source: Any, x: np.ndarray | list[np.ndarray]) -> int:
    """Set QUANTIZED's activation ranges that TF-MOT's start would leave too few levels to those SOURCE (the
    float model it was made from) shows on X; how many quantizers were set."""
    pairs = _range_pairs(quantized, source)
    if not pairs:
        return 0
    keras = import_tf_keras()
    tensors = list(dict.fromkeys(tensor for _, _, tensor in pairs))
    probe = keras.Model(source.inputs, [source.get_layer(name).output for name in tensors])
    low = {name: np.inf for name in tensors}
    high = {name: -np.inf for name in tensors}
    feeds = x if isinstance(x, list) else [x]
    count = min(SAMPLES, len(feeds[0]))
    # In training mode, as the moving average sees them during fine-tuning: BatchNormalization then normalises
    # with the batch's statistics, which in a model fresh from initialisation are far from its moving ones.
    # Those moving statistics change in training mode, so SOURCE's weights are put back afterwards.
    saved = source.get_weights()
    for start in range(0, count, BATCH):
        batch = [f[start:min(start + BATCH, count)] for f in feeds]
        outputs = probe(batch if len(batch) > 1 else batch[0], training=True)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for name, value in zip(tensors, outputs):
            value = np.asarray(value)
            low[name] = min(low[name], float(value.min()))
            high[name] = max(high[name], float(value.max()))
    source.set_weights(saved)
    set_count = 0
    step = (START[1] - START[0]) / 255
    for low_var, high_var, name in pairs:
        # As TF-MOT's moving average does: the range holds zero. A silent tensor keeps the starting range.
        lo, hi = min(low[name], 0.0), max(high[name], 0.0)
        if not np.isfinite([lo, hi]).all() or hi - lo <= 0:
            continue
        if (hi - lo) / step >= MIN_LEVELS:
            continue
        low_var.assign(lo)
        high_var.assign(hi)
        set_count += 1
    return set_count


def _range_pairs(quantized: Any, source: Any) -> list[tuple[Any, Any, str]]:
    """(min variable, max variable, name of the SOURCE layer whose output they quantize) per scalar range."""
    import_tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import QuantizeLayer
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import QuantizeWrapper

    known = {layer.name for layer in source.layers if not isinstance(layer.output, (list, tuple))}
    pairs: list[tuple[Any, Any, str]] = []
    for layer in quantized.layers:
        if isinstance(layer, QuantizeWrapper):
            target, pattern = layer.layer.name, _OUTPUT_RANGE
        elif isinstance(layer, QuantizeLayer):
            # It quantizes its input: a model input, or the output of a layer left in float.
            nodes = layer._inbound_nodes
            inbound = nodes[0].inbound_layers if len(nodes) == 1 else None
            if inbound is None or isinstance(inbound, (list, tuple)):
                continue
            target, pattern = inbound.name, _INPUT_RANGE
        else:
            continue
        if target not in known:
            continue
        ends: dict[str, dict[str, Any]] = {}
        for weight in layer.non_trainable_weights + layer.trainable_weights:
            match = pattern.search(weight.name)
            if match and weight.shape.rank == 0:
                ends.setdefault(weight.name[: match.start()] + match.group(1), {})[match.group(2)] = weight
        pairs.extend((e["min"], e["max"], target) for e in ends.values() if len(e) == 2)
    return pairs
