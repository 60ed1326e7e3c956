"""The quantization modes, one declaration each: what the mode is, how it is made, what it needs and what to try
when it breaks. Every list the converters, the recipe grid and the CLI use is derived from MODES (a new mode is
one entry here). No heavy imports: the CLI reads the help from here at start-up.
"""
from __future__ import annotations

from dataclasses import dataclass

# The ops whose weights the hybrid and weight-only kernels take as integers (converters.coverage): int4 has no
# DEPTHWISE_CONV_2D kernel, so depthwise layers stay float by design, and say so.
_INT8_KERNELS = frozenset({"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "EMBEDDING_LOOKUP"})
_INT4_KERNELS = frozenset({"FULLY_CONNECTED", "CONV_2D", "EMBEDDING_LOOKUP"})
_FIND_LAYERS = ("find the layers at fault with `edgecompress diagnose MODEL --calibration DATA`, or keep them in "
                "float with max_drop (int8: `convert --max-drop POINTS --eval-data LABELLED.npz`, or max_drop in a "
                "recipe variant)")


@dataclass(frozen=True)
class Mode:
    name: str
    help: str  # what the mode stores and computes, for --help
    next_step: str  # what to try when its export no longer computes what the original did
    converter: bool = True  # TFLiteConverter makes it from a Keras model (else a float32 conversion, then weights)
    weight_bits: int | None = None  # litert-quantizer rounds the weights of a .tflite to this width
    weight_only: bool = False  # ... and dequantizes them to float for float kernels (else hybrid kernels)
    kernels: frozenset[str] = frozenset()  # the ops whose weights it must leave integer (converters.coverage)
    auto_without_samples: str = "minmax"  # the rounding auto keeps with nothing to measure on
    activation_bits: int | None = None  # integer activations, from calibrated ranges: needs samples
    integer_io: bool = False  # takes io_type int8/uint8
    blocks: bool = False  # takes block_size (blockwise scales of dense weights)
    max_drop: bool = False  # has an accuracy-driven search (max_drop)


MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("none", "float32", "the float32 export itself differs: report it with the model attached"),
    Mode("dynamic", "int8 weights, float activations quantized on the fly",
         "try int8-weights (float activations) or float16", weight_bits=8, kernels=_INT8_KERNELS),
    Mode("float16", "half-size weights", "keep float32 (quantize none)"),
    Mode("int8", "full integer, weights and activations (needs calibration)", _FIND_LAYERS, activation_bits=8,
         integer_io=True, max_drop=True),
    Mode("int16x8", "int8 weights, 16-bit activations (needs calibration; the runtime's reference kernels, slower "
         "than int8)", _FIND_LAYERS, activation_bits=16),
    # int4's 16 levels need the clipping search without samples: on the digits CNN min/max lost 1.3 points of
    # held-out accuracy, mse none; 8-bit weights lose little either way, and min/max is what the converter does.
    Mode("int4", "4-bit weights, float activations quantized on the fly",
         "try int8-weights or dynamic, which keep more of the weights' precision", converter=False, weight_bits=4,
         kernels=_INT4_KERNELS, auto_without_samples="mse", blocks=True, max_drop=True),
    Mode("int8-weights", "int8 weights dequantized to float, float compute", "try float16", converter=False,
         weight_bits=8, weight_only=True, kernels=_INT8_KERNELS),
    # int4's size with float activations: the hybrid kernels quantize a layer's input on the fly, which a
    # spectrogram's range does not survive whatever the weights (BirdNET's mel filterbanks).
    Mode("int4-weights", "4-bit weights dequantized to float, float compute",
         "try int8-weights, which keeps more of the weights' precision", converter=False, weight_bits=4,
         weight_only=True, kernels=_INT4_KERNELS, auto_without_samples="mse"),
)}

QUANTIZE_MODES = tuple(MODES)  # what convert and recipes take
WEIGHT_MODES = tuple(m.name for m in MODES.values() if not m.converter)  # a float32 conversion, then litert-quantizer
TFLITE_MODES = tuple(m.name for m in MODES.values() if m.weight_bits)  # weights of an existing .tflite
CALIBRATED_MODES = tuple(m.name for m in MODES.values() if m.activation_bits)  # activations: samples needed
FILE_MODES = (*TFLITE_MODES, *CALIBRATED_MODES)  # what `quantize` takes (a .tflite, no TensorFlow)
BLOCK_MODES = tuple(m.name for m in MODES.values() if m.blocks)
MAX_DROP_MODES = tuple(m.name for m in MODES.values() if m.max_drop)


def modes_help(names: tuple[str, ...]) -> str:
    """The --help text of a --quantize option taking NAMES."""
    return "; ".join(f"{name}: {MODES[name].help}" for name in names) + "."
