"""Which combinations of quantization settings make sense (the modes themselves: converters.modes), and the
TFLiteConverter settings per mode. The recipe grid and the CLI read the rules from here; importing this module
needs no TensorFlow.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from edgecompress.errors import UserError
from edgecompress.converters.litert_quantize import check_block_size, require_quantizer
from edgecompress.converters.modes import CALIBRATED_MODES, MODES, QUANTIZE_MODES, WEIGHT_MODES

IO_TYPES = ("float32", "int8", "uint8")


def options_conflict(quantize: str, io_type: str) -> tuple[str, str] | None:
    """(setting, why) when IO_TYPE contradicts QUANTIZE, else None: integer I/O needs a full-integer model."""
    if io_type != "float32" and not MODES[quantize].integer_io:
        keep = " (int16x8 keeps float I/O)" if quantize == "int16x8" else ""
        return "io_type", f"io_type {io_type} needs quantize int8 (a full-integer model), not {quantize}{keep}"
    return None


def check_options(quantize: str, io_type: str, has_calibration: bool, block_size: int | None = None) -> None:
    """Contradictory or incomplete options are bad input, caught before any work is done."""
    if quantize not in QUANTIZE_MODES:
        raise UserError(f"unknown quantize mode {quantize!r}: use one of {', '.join(QUANTIZE_MODES)}",
                        settings=("quantize",))
    check_block_size(quantize, block_size)
    if quantize in WEIGHT_MODES:
        require_quantizer()  # before the conversion, not after it
    if io_type not in IO_TYPES:
        raise UserError(f"unknown io_type {io_type!r}: use one of {', '.join(IO_TYPES)}", settings=("io_type",))
    if quantize in CALIBRATED_MODES and not has_calibration:
        raise UserError(f"quantize {quantize} needs representative samples: set calibration to a .npz, .npy or "
                        "image folder", settings=("quantize", "calibration"))
    problem = options_conflict(quantize, io_type)
    if problem is not None:
        raise UserError(problem[1], settings=("io_type", "quantize"))


def configure(
    converter: Any,
    tf: Any,
    quantize: str,
    io_type: str,
    representative: Callable[[], Iterable[dict[str, Any]]] | None,
    allow_flex: bool,
) -> None:
    """Set CONVERTER up for QUANTIZE with IO_TYPE inputs/outputs (see TFLite's post-training guide).

    WEIGHT_MODES convert to float32 here; their weights are quantized afterwards."""
    builtins = tf.lite.OpsSet.TFLITE_BUILTINS
    ops = [builtins]
    if quantize not in ("none", *WEIGHT_MODES):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize in CALIBRATED_MODES:
        converter.representative_dataset = representative
    if quantize == "int8":
        # Full integer: refusing float fallback makes an op without an int8 kernel fail loudly here
        # instead of silently staying float on the device.
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_type != "float32":
            converter.inference_input_type = getattr(tf, io_type)
            converter.inference_output_type = getattr(tf, io_type)
    if quantize == "int16x8":
        ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if allow_flex:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
