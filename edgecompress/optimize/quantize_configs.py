"""Which layers QAT quantizes, and how: TF-MOT's 8-bit registry first, then sound configs for the common
layers it has none for, and BatchNormalization where TF-MOT's transforms fold it.

The model is quantized as a whole (quantize_apply), so TF-MOT's layout transforms fold Conv/Depthwise/Dense +
BatchNormalization (+ReLU) into one quantized op and place quantizers where the TFLite converter expects
them. Those transforms only act on annotated layers, so a BatchNormalization is annotated exactly when it
follows such a layer; elsewhere it has nothing to fold into and is quantized at its output (an int8 MUL
and ADD), as TFLite runs it.

Configs added here come from TF-MOT itself (they load back under its quantize_scope):
- quantize the output only: elementwise ops whose TFLite kernels take int8 in and out and rescale to the
  output's range (Multiply in squeeze-excite blocks, Rescaling, Normalization, activations TF-MOT's
  Activation config does not know: hard_swish, hard_sigmoid, relu6, silu, gelu ...);
- no quantizer: ops that only move or pad values (ZeroPadding2D, Reshape, Cropping) keep their input's
  range, as TFLite's int8 kernels require.
"""
from __future__ import annotations

from typing import Any

from edgecompress.models import import_tf_keras
from edgecompress.optimize.layers import SkippedLayer, import_tfmot

# Activation functions TF-MOT's own Activation config handles (others raise inside quantize_apply).
_TFMOT_ACTIVATIONS = frozenset({"relu", "swish", "gelu", "relu6", "linear", "softmax", "sigmoid", "tanh"})
# Layers whose weights TF-MOT folds a following BatchNormalization into (with a linear activation).
_FOLDS_BN = ("Conv2D", "DepthwiseConv2D", "Dense")

_OUTPUT_ONLY = ("Multiply", "Rescaling", "Normalization", "Maximum", "Minimum", "Subtract", "Average")
_PASS_THROUGH = ("ZeroPadding2D", "ZeroPadding1D", "Reshape", "Cropping2D", "Permute", "Flatten")


def _class(layer: Any) -> str:
    return type(layer).__name__


def _activation_name(layer: Any) -> str:
    return getattr(layer.activation, "__name__", str(layer.activation))


def _default_registry() -> Any:
    import_tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry,
    )

    return default_8bit_quantize_registry.Default8BitQuantizeRegistry()


def _configs() -> Any:
    import_tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs,
    )

    return default_8bit_quantize_configs


def _extra_config(layer: Any) -> Any | None:
    """The TF-MOT QuantizeConfig this module adds for LAYER, or None when it adds none."""
    configs = _configs()
    name = _class(layer)
    if name == "Activation" and _activation_name(layer) not in _TFMOT_ACTIVATIONS:
        return configs.Default8BitOutputQuantizeConfig()
    if name in _OUTPUT_ONLY:
        return configs.Default8BitOutputQuantizeConfig()
    if name in _PASS_THROUGH:
        return configs.NoOpQuantizeConfig()
    return None


def _inbound(layer: Any) -> list[Any]:
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        return []
    inbound = nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def _folds_into(layer: Any) -> bool:
    """A BatchNormalization right after a Conv2D/DepthwiseConv2D/Dense (linear, used only here) folds."""
    inbound = _inbound(layer)
    if len(inbound) != 1:
        return False
    source = inbound[0]
    return (
        _class(source) in _FOLDS_BN
        and _activation_name(source) == "linear"
        and len(source._outbound_nodes) == 1
    )


def qat_configs(model: Any, technique: str) -> tuple[dict[str, Any], list[SkippedLayer]]:
    """Layer name -> QuantizeConfig to annotate with (None: TF-MOT's registry decides), and the skipped layers."""
    keras = import_tf_keras()
    registry = _default_registry()
    chosen: dict[str, Any] = {}
    skipped: list[SkippedLayer] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            skipped.append(SkippedLayer(layer.name, technique, "nested models are left as they are"))
            continue
        extra = _extra_config(layer)
        if extra is not None and (_class(layer) == "Activation" or not registry.supports(layer)):
            chosen[layer.name] = extra
        elif registry.supports(layer):
            chosen[layer.name] = None
        elif _class(layer) == "BatchNormalization":
            # After a Conv/Dense, TF-MOT's transforms fold it; elsewhere (pre-activation ResNets) it has nothing
            # to fold into and runs as an int8 MUL + ADD, quantized at its output.
            chosen[layer.name] = None if _folds_into(layer) else _configs().Default8BitOutputQuantizeConfig()
        else:
            skipped.append(SkippedLayer(
                layer.name, technique, f"{_class(layer)} is not supported by TF-MOT quantization-aware training; "
                "it stays float",
            ))
    return chosen, skipped
